"""kpark.joblib: a joblib parallel backend named "kpark", on a PerCPUExecutor.

    import kpark.joblib  # registers the backend
    with joblib.parallel_config(backend="kpark", n_jobs=4):
        results = joblib.Parallel()(joblib.delayed(work)(x) for x in items)

n_jobs is the executor's max_workers (None or -1: one per allowed CPU; -2:
one fewer, ...); backend keyword `cpus` picks the CPUs.  With n_jobs=1
joblib runs the calls itself, in the calling thread, whatever the backend.  Threads share
memory, so `require="sharedmem"` is honoured.  Needs the `joblib` extra
(`pip install "kpark[joblib]"`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import joblib  # type: ignore[import-untyped]
from joblib._parallel_backends import ParallelBackendBase  # type: ignore[import-untyped]

from kpark.executor import PerCPUExecutor
from kpark.percpu import CPUs, _normalize_cpus

__all__ = ["PerCPUBackend"]


class PerCPUBackend(ParallelBackendBase):  # type: ignore[misc]
    """joblib's backend API over a PerCPUExecutor of n_jobs pinned workers.

    One executor per Parallel call (made in configure(), shut down in
    terminate()); batches are submitted as tasks, and a failed batch's
    exception propagates as with joblib's threading backend.
    """

    supports_retrieve_callback = True
    uses_threads = True
    supports_sharedmem = True
    default_n_jobs = -1

    def __init__(self, *, cpus: Optional[CPUs] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cpus = cpus
        self._executor: Optional[PerCPUExecutor] = None

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        """The number of workers for `n_jobs` (negative: counted back from the CPUs)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None or n_jobs < 0:
            ncpu = len(_normalize_cpus(self._cpus))   # default: the process's CPUs
            return max(ncpu + 1 + (n_jobs if n_jobs is not None else -1), 1)
        return int(n_jobs)

    def configure(self, n_jobs: Optional[int] = 1, parallel: Any = None,
                  **backend_kwargs: Any) -> int:
        """Start the executor for one Parallel call; return its worker count."""
        n = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        if n > 1 and (self._executor is None or self._executor._max_workers != n):
            self._shutdown_executor(cancel=False)
            self._executor = PerCPUExecutor(max_workers=n, thread_name_prefix="kpark-joblib",
                                            cpus=self._cpus)
        return n

    def submit(self, func: Callable[[], Any], callback: Optional[Callable[[Any], Any]] = None
               ) -> Any:
        """Run `func` (a joblib batch) on a worker; `callback(future)` once done."""
        assert self._executor is not None, "configure() comes first"
        future = self._executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    apply_async = submit  # the name joblib before 1.5 calls

    def retrieve_result_callback(self, future: Any) -> Any:
        """The batch's results, or its exception raised."""
        return future.result()

    def terminate(self) -> None:
        """End of the Parallel call: let the executor finish and stop."""
        self._shutdown_executor(cancel=False)

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """After a failed batch: cancel the queued ones; restart if asked."""
        self._shutdown_executor(cancel=True)
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def _shutdown_executor(self, cancel: bool) -> None:
        ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=cancel)


joblib.register_parallel_backend("kpark", PerCPUBackend)
