"""kpark._futures: PerCPUExecutor's Future and the helpers of its map().

_Future is a concurrent.futures.Future that is cheap to make and quick to
wait on (no Condition until someone asks for one; result() blocks on a
kpark.Completion).  The map helpers turn submitted futures into map()'s
result iterator, for one task per item (the stdlib's way) or per chunk.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import _base
from time import monotonic as _monotonic
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from kpark._completion import Completion

__all__: List[str] = []

_PENDING = _base.PENDING
_RUNNING = _base.RUNNING
_CANCELLED = _base.CANCELLED
_CANCELLED_AND_NOTIFIED = _base.CANCELLED_AND_NOTIFIED
_FINISHED = _base.FINISHED
_CANCELLED_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED)
_DONE_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED, _FINISHED)
_LOGGER = _base.LOGGER
_RLock = threading.RLock


class _Future(Future):  # type: ignore[type-arg]
    """A concurrent.futures.Future that is cheap to make and quick to wait on.

    The stdlib Future builds a threading.Condition (Python code around an
    RLock) in its constructor and blocks result() on it; that constructor
    alone costs more than the rest of a submit.  This one keeps the RLock,
    creates the Condition only when somebody asks for `_condition`
    (concurrent.futures.wait()/as_completed() and the base class's own
    methods do), and blocks result()/exception() on a kpark.Completion,
    released with complete_all() by whatever makes the future done.

    Every state change happens under the RLock, which is also the lock of
    `_condition`: wait()/as_completed() hold it while they inspect `_state`
    and install their waiters, exactly as with the stdlib Future, so the
    waiter protocol (`_waiters`, add_result/add_exception/add_cancelled) is
    kept unchanged.
    """

    __slots__ = ("_lock", "_cond", "_done_event")

    def __init__(self) -> None:  # no super().__init__(): it builds the Condition
        self._lock = _RLock()
        self._cond: Optional[threading.Condition] = None
        self._done_event = Completion()
        self._state = _PENDING
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._waiters: List[Any] = []
        self._done_callbacks: List[Callable[[Future[Any]], object]] = []

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with self._lock:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition(self._lock)
        return cond

    def _finish(self) -> None:
        # Under the lock: notify threads blocked in the base class's waits.
        if self._cond is not None:
            self._cond.notify_all()

    def cancel(self) -> bool:
        with self._lock:
            if self._state in (_RUNNING, _FINISHED):
                return False
            if self._state in _CANCELLED_STATES:
                return True
            self._state = _CANCELLED
            self._finish()
        self._done_event.complete_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's
        return True

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES

    def running(self) -> bool:
        return self._state == _RUNNING

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with self._lock:
            if self._state not in _DONE_STATES:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def _wait(self, timeout: Optional[float]) -> str:
        """Block until done or `timeout` seconds passed; return the state."""
        state = self._state
        if state not in _DONE_STATES:
            if timeout is not None and not timeout > 0:
                # As threading.Condition.wait: negative or NaN means no wait.
                timeout = 0.0
            self._done_event.wait(timeout)
            with self._lock:  # pairs with the setter's: see what it wrote
                state = self._state
        return state

    def result(self, timeout: Optional[float] = None) -> Any:
        try:
            state = self._wait(timeout)
            if state == _FINISHED:
                with self._lock:
                    exc = self._exception
                if not exc:  # as the stdlib: a falsy exception counts as none
                    return self._result
                try:
                    raise exc
                finally:
                    exc = None  # no reference cycle through the traceback
            if state in _CANCELLED_STATES:
                raise _base.CancelledError()
            raise _base.TimeoutError()
        finally:
            self = None  # type: ignore[assignment]  # as the stdlib: break cycles

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        state = self._wait(timeout)
        if state == _FINISHED:
            with self._lock:
                return self._exception
        if state in _CANCELLED_STATES:
            raise _base.CancelledError()
        raise _base.TimeoutError()

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            state = self._state
            if state == _PENDING:
                self._state = _RUNNING
                return True
            if state == _CANCELLED:
                self._state = _CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                return False
            _LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
            raise RuntimeError("Future in unexpected state")

    def set_result(self, result: Any) -> None:
        with self._lock:
            if self._state in _DONE_STATES:
                raise _base.InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            self._finish()
        self._done_event.complete_all()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's

    def set_exception(self, exception: Optional[BaseException]) -> None:
        with self._lock:
            if self._state in _DONE_STATES:
                raise _base.InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_exception(self)
            self._finish()
        self._done_event.complete_all()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's


def _run_chunk(fn: Callable[..., Any], chunk: List[Tuple[Any, ...]]
               ) -> Tuple[List[Any], Optional[Dict[int, BaseException]]]:
    """One map() task: fn over every item; exceptions kept by item index."""
    results: List[Any] = []
    append = results.append
    failed: Optional[Dict[int, BaseException]] = None
    for args in chunk:
        try:
            append(fn(*args))
        except BaseException as exc:  # the stdlib future keeps BaseExceptions too
            if failed is None:
                failed = {}
            failed[len(results)] = exc
            append(None)
            del exc
    return results, failed


def _result_or_cancel(f: "Future[Any]", timeout: Optional[float]) -> Any:
    try:
        return f.result(timeout)
    finally:
        f.cancel()  # after a timeout: the stdlib's map cancels it too
        del f


def _map_results(fs: "List[Future[Any]]", chunked: bool,
                 end_time: Optional[float]) -> Iterator[Any]:
    """The iterator map() returns: waits for each future in order."""
    try:
        fs.reverse()
        while fs:
            # pop(): no reference to a future we are done with
            out = _result_or_cancel(fs.pop(), None if end_time is None
                                    else end_time - _monotonic())
            if not chunked:
                yield out
                continue
            results, failed = out
            del out
            if failed is None:
                yield from results
                continue
            for i, value in enumerate(results):
                exc = failed.get(i)
                if exc is not None:
                    try:
                        raise exc
                    finally:
                        exc = failed = None  # no cycle through the traceback
                yield value
    finally:
        for f in fs:
            f.cancel()
