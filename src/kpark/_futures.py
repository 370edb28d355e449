"""kpark._futures: PerCPUExecutor's Future and the helpers of its map().

_Future is a concurrent.futures.Future that is cheap to make and quick to
wait on (its state machine is compiled: kpark._futurecore; no lock until
someone observes it; result() blocks on a kpark.Completion).  The map
helpers turn submitted futures into map()'s result iterator, for one task
per item (the stdlib's way) or per chunk.
"""
from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures import _base
from time import monotonic as _monotonic
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from kpark._completion import Completion
from kpark._flags import Flags
from kpark._futurecore import FutureCore
from kpark._kcore import should_park
from kpark.percpu import _refuse_own_park

__all__: List[str] = []

_DONE_STATES = (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED, _base.FINISHED)
_LOGGER = _base.LOGGER


class _Future(FutureCore, Future):  # type: ignore[misc]
    """A concurrent.futures.Future that is cheap to make and quick to wait on.

    Its state machine is kpark._futurecore.FutureCore (compiled): the stdlib
    Future builds a threading.Condition in its constructor, takes its lock
    for every transition and blocks result() on it; this one takes no lock
    until somebody observes it (a Condition, a waiter, a done callback:
    concurrent.futures.wait()/as_completed(), asyncio.wrap_future()), and
    then makes each transition under the lock as the stdlib does.
    result()/exception() block on a kpark.Completion.  The stdlib's methods
    that are not overridden (__repr__, __class_getitem__) work on it as on
    any Future.
    """

    def _parked_after_task(self) -> None:
        _refuse_own_park()  # a park request the pool did not make fails the task


class _MapTask:
    """One item of a per-item map(): a future that only map()'s iterator sees.

    No lock: bit 0 of `_claim` is taken exactly once (an atomic
    test_and_set_bit), by the worker that runs the item or by cancel();
    the loser does nothing.  The winner writes `_value`/`_exc`/`_cancelled`
    and then calls `_done.complete_all()`, whose release pairs with the
    acquire of the iterator's `_done.wait()`, so the iterator sees them.
    The executor treats it as a future: _run(), set_running_or_notify_cancel(),
    set_exception() and cancel().
    """

    __slots__ = ("_claim", "_done", "_value", "_exc", "_cancelled")

    def __init__(self) -> None:
        self._claim = Flags()
        self._done = Completion()
        self._exc: Optional[BaseException] = None
        self._cancelled = False

    def _run(self, ctx: Any, fn: Callable[..., Any], args: Tuple[Any, ...],
             kwargs: Dict[str, Any]) -> None:
        """Run the item in `ctx` unless it was cancelled (a worker calls this)."""
        if self._claim.test_and_set_bit(0):
            return  # cancelled before it started
        try:
            self._value = ctx.run(fn, *args, **kwargs)
            if should_park():  # the pool's offline(), or the item parked us
                _refuse_own_park()
        except BaseException as exc:
            self._exc = exc
            del exc
        self._done.complete_all()

    def set_running_or_notify_cancel(self) -> bool:
        """Claim the item: True if it may run, False if it was cancelled."""
        return not self._claim.test_and_set_bit(0)

    def set_exception(self, exc: BaseException) -> None:
        """Finish a claimed item with `exc` (the executor, when broken)."""
        self._exc = exc
        self._done.complete_all()

    def cancel(self) -> bool:
        """Cancel the item unless it started; True if it is cancelled now."""
        if self._claim.test_and_set_bit(0):
            return self._cancelled
        self._cancelled = True
        self._done.complete_all()
        return True


def _map_task_results(ts: List[_MapTask], end_time: Optional[float]) -> Iterator[Any]:
    """The iterator of a per-item map(): waits for each item in order.

    As the stdlib's: TimeoutError once `end_time` passed; leaving early (an
    exception, a timeout, close()) cancels every item not started.
    """
    try:
        ts.reverse()
        while ts:
            t = ts.pop()  # no reference to an item we are done with
            timeout = None
            if end_time is not None:
                timeout = end_time - _monotonic()
                if not timeout > 0:  # negative or NaN: no wait, as the stdlib
                    timeout = 0.0
            if not t._done.wait(timeout):
                t.cancel()
                raise _base.TimeoutError()
            if t._cancelled:
                raise _base.CancelledError()
            exc = t._exc
            if exc is not None:
                try:
                    raise exc
                finally:
                    exc = t = None  # type: ignore[assignment]  # no cycle
            yield t._value
            del t
    finally:
        for t in ts:
            t.cancel()


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
        # After a timeout the stdlib's map cancels it too.  A done state is
        # final, so a done future needs no cancel (nor its lock).
        if f._state not in _DONE_STATES:
            f.cancel()
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
