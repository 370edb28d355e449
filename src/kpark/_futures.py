"""kpark._futures: PerCPUExecutor's Future and the helpers of its map().

_Future is a concurrent.futures.Future that is cheap to make and quick to
wait on (no Condition until someone asks for one; result() blocks on a
kpark.Completion).  The map helpers turn submitted futures into map()'s
result iterator, for one task per item (the stdlib's way) or per chunk.
"""
from __future__ import annotations

import threading
from _thread import RLock as _RLock  # threading.RLock is a Python-level factory
from concurrent.futures import Future
from concurrent.futures import _base
from time import monotonic as _monotonic
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from kpark._completion import Completion
from kpark._flags import Flags

__all__: List[str] = []

_PENDING = _base.PENDING
_RUNNING = _base.RUNNING
_CANCELLED = _base.CANCELLED
_CANCELLED_AND_NOTIFIED = _base.CANCELLED_AND_NOTIFIED
_FINISHED = _base.FINISHED
_CANCELLED_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED)
_DONE_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED, _FINISHED)
_LOGGER = _base.LOGGER


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

    # Slots for the base class's attributes too: no instance dict is made
    # (the base class has none of its own, so one appears only if asked).
    __slots__ = ("_lock", "_cond", "_done_event", "_state", "_result", "_exception",
                 "_waiter_list", "_done_callbacks")

    def __init__(self) -> None:  # no super().__init__(): it builds the Condition
        self._lock = _RLock()
        self._cond: Optional[threading.Condition] = None
        self._done_event = Completion()
        self._state = _PENDING
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        # Both made on first use: most futures never get a waiter or callback.
        self._waiter_list: Optional[List[Any]] = None
        self._done_callbacks: Any = ()  # the base's _invoke_callbacks iterates it

    @property
    def _waiters(self) -> List[Any]:  # type: ignore[override]
        # The base class's wait()/as_completed() append and remove waiters
        # holding `_condition`, i.e. our lock, as do we when we read them.
        w = self._waiter_list
        if w is None:
            w = self._waiter_list = []
        return w

    def _run(self, ctx: Any, fn: Callable[..., Any], args: Tuple[Any, ...],
             kwargs: Dict[str, Any]) -> None:
        """A worker's whole use of the future: ctx.run(fn, ...) unless cancelled.

        set_running_or_notify_cancel(), the call, then set_result() or
        set_exception(), folded into one method for the executor's hot path.
        RuntimeError (logged, as the stdlib) if the future was not pending.
        """
        lock = self._lock
        lock.acquire()
        if self._state != _PENDING:
            lock.release()
            if not self.set_running_or_notify_cancel():  # cancelled: notify
                return
            raise AssertionError("unreachable")  # pragma: no cover  (it raised)
        self._state = _RUNNING
        lock.release()
        try:
            result = ctx.run(fn, *args, **kwargs)
        except BaseException as exc:
            self.set_exception(exc)
            del exc  # no frame cycle through the traceback
            return
        with lock:
            self._result = result
            self._state = _FINISHED
            if self._waiter_list:
                for waiter in self._waiter_list:
                    waiter.add_result(self)
            if self._cond is not None:
                self._cond.notify_all()
        self._done_event.complete_all()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's

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
                if self._done_callbacks:
                    self._done_callbacks.append(fn)
                else:
                    self._done_callbacks = [fn]
                return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def _wait(self, timeout: Optional[float]) -> str:
        """Block until done or `timeout` seconds passed; return the state.

        No lock: whatever makes the future done writes the state (and the
        result) first and then calls complete_all(), a SEQ_CST store; the
        wait()/done() that sees it is an ACQUIRE load, so what was written
        before it is visible here, with or without a GIL.
        """
        if timeout is not None and not timeout > 0:
            timeout = 0.0  # as threading.Condition.wait: negative or NaN, no wait
        done = self._done_event
        # A completion at the deadline still counts, as in the stdlib's
        # re-check after its Condition wait times out.
        if done.wait(timeout) or done.done():
            return self._state
        return _PENDING  # not done: the callers raise TimeoutError

    def result(self, timeout: Optional[float] = None) -> Any:
        try:
            # _wait() inlined: result() is half of every submit round trip.
            if timeout is not None and not timeout > 0:
                timeout = 0.0
            done = self._done_event
            state = self._state if done.wait(timeout) or done.done() else _PENDING
            if state == _FINISHED:
                exc = self._exception  # visible: see _wait()
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
            return self._exception  # visible: see _wait()
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
                for waiter in self._waiter_list or ():
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
            for waiter in self._waiter_list or ():
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
            for waiter in self._waiter_list or ():
                waiter.add_exception(self)
            self._finish()
        self._done_event.complete_all()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's


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
