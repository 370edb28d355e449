# cython: language_level=3, freethreading_compatible=True
"""The KThread state machine on one 32-bit futex word (kpark._kcore).

Compiled as part of kpark._native (see _native.pyx), which sets up the
wait backend and the spin budgets once for this file and its siblings.

All shared state of a KThread lives in `KCore.word`; every change is one
compare-and-swap, and every sleeper - the thread itself, and controllers
waiting for it - sleeps on that same word.  docs/semantics.md draws the
state machine; the bits are:

  requests (set by controllers, read by the thread)
    SHOULD_STOP   stop() was called; never cleared.
    SHOULD_PARK   park() is pending or granted; unpark()/stop() clear it.
    WAKE          one remembered wake-up (a token, not a count) for a thread
                  that was not asleep when wake/park/unpark/stop came.
                  (Once SHOULD_STOP is set, schedule() never sleeps at all.)
    WOKEN         the first wake happened: the thread may leave its first
                  sleep (wake() and park() set it; unpark() does not).
  thread status
    SLEEPING      asleep in schedule() or in the first sleep.  Set by the
                  thread; cleared by the waker that wakes it, which is how
                  schedule() knows it was woken and not timed out.
    PARKED        asleep in the park loop.  Set by the thread only while
                  SHOULD_PARK && !SHOULD_STOP (its announcement); cleared by
                  unpark()/stop(), which release it.
    STARTED       threadfn was entered (set only while !SHOULD_STOP).
    EXITED        the thread is done; result/exception are published.
    PARKABLE      in idle(): an idle sleep that park() may turn into parked
                  where it is, without waking the thread (PARKABLE|PARKED is
                  "parked in place").  Set by the thread; cleared by whoever
                  wakes it out of idle(), or by the thread when it leaves.
    REPIN         a park in place was released: the thread re-pins itself to
                  its CPU before it leaves idle().  Set by unpark()/stop(),
                  cleared by the thread.
  bookkeeping
    WAITERS       a controller may be asleep on the word.  Whoever changes
                  the word clears it and, if it was set, wakes every sleeper.
    PER_CPU       created by create_on_cpu(): rebind to `cpu` on unpark.
    bits 16..31   the bound CPU + 1 (0: not bound).

Why no wake-up is lost: a sleeper announces itself (SLEEPING, PARKED,
PARKABLE or WAITERS) with a CAS on the word and then calls FUTEX_WAIT with
exactly the value it wrote.  A waker changes the word with a CAS and calls
FUTEX_WAKE when the value it replaced carried an announcement.  Both are
RMWs on one location, so they are totally ordered: if the waker's CAS comes
first the sleeper's CAS fails or FUTEX_WAIT finds a different value and
returns at once; if it comes second the waker sees the announcement and
wakes.  A park or unpark in place rewrites an idle thread's announcement
for it (PARKED; back to SLEEPING) without a wake-up: the thread may sleep on
an older value, which is fine, since it is to stay asleep; every later
waker sees SLEEPING or PARKED|PARKABLE and does call FUTEX_WAKE.

Memory ordering (each operation below says which it uses and why):
  - A controller's change of the word is a RELEASE CAS (wake, bind; the
    thread's own park() is a RELEASE fetch-or), so what the caller wrote
    before wake()/park()/unpark()/stop() is visible to the thread once it
    sees the change.  _request's CAS is ACQ_REL: a park in place also
    completes the park for the thread, so it must see what the thread wrote
    before it announced PARKABLE.
  - The thread's own announcements and token takes (SLEEPING, PARKED,
    PARKABLE, STARTED, the withdrawal of a timed-out sleep) are ACQ_REL CASes
    on success: RELEASE publishes its state to controllers that wait for it;
    ACQUIRE makes visible what the controller whose change it builds on
    wrote (the token's waker, the bind() before the first sleep).
    _publish(EXITED) is RELEASE: it publishes threadfn's result; the thread
    reads nothing after it.
  - Every load that decides what the caller does next, and every failed CAS
    whose reloaded value is re-checked, is ACQUIRE, the other half of those
    RELEASEs.  Loads that only seed a CAS loop are RELAXED (the CAS decides),
    and so are the failed CASes of loops that only retry.
  - The controllers' WAITERS announcement is ACQUIRE only: it publishes
    nothing, it re-checks the value.  The spin hints (thread_cpu,
    waker_cpu), a stop recorded on an exited thread and the thread's own
    REPIN clear are RELAXED: they order nothing that anyone waits for.

Model: verify/kthread*.pml (SPIN, docs/verification.md) mirror this file step
by step.  A step is named here by a "# model: NAME" comment (it covers the
code below it, or the line it ends) and in the models as "@NAME", with the
operation and ordering the model assumes; verify/check_refs.py checks that
both sides name the same steps and that the operations still match.  After
changing what a step does: re-examine its model step, then verify/run_spin.sh.
"""
from libc.stdint cimport uint32_t

from kpark.c_atomic cimport (kp_load32, kp_cas32, kp_fetch_or32, kp_fetch_and32, kp_store32,
                             KP_RELAXED, KP_ACQUIRE, KP_RELEASE, KP_ACQ_REL)
from kpark.c_wait cimport (timespec, kp_wait, kp_wake_all, kp_deadline_passed,
                           KP_WAIT_TIMEDOUT, KP_BACKEND_NAME)
from kpark.c_sched cimport kp_pin_self, kp_name_self, kp_current_get, kp_current_set
from kpark.c_spin cimport (kp_spin_budget, kp_spin_while_equal, kp_gil_released,
                           kp_before_gil, kp_this_cpu)
from kpark.waiting cimport check_timeout, deadline_from_timeout, wait_step

import os as _os

BACKEND = KP_BACKEND_NAME.decode()

# model: word.bits
cdef enum:
    SHOULD_STOP = 1 << 0
    SHOULD_PARK = 1 << 1
    WAKE        = 1 << 2
    SLEEPING    = 1 << 3
    PARKED      = 1 << 4
    WOKEN       = 1 << 5
    STARTED     = 1 << 6
    EXITED      = 1 << 7
    WAITERS     = 1 << 8
    PER_CPU     = 1 << 9
    PARKABLE    = 1 << 10
    REPIN       = 1 << 11
    CPU_SHIFT   = 16
    FLAG_MASK   = 0xFFFF
    MAX_CPU     = 0xFFFE

#: The bits of KCore.word by name (the enum above), for tests and debugging.
BITS = {
    "SHOULD_STOP": SHOULD_STOP, "SHOULD_PARK": SHOULD_PARK, "WAKE": WAKE,
    "SLEEPING": SLEEPING, "PARKED": PARKED, "WOKEN": WOKEN, "STARTED": STARTED,
    "EXITED": EXITED, "WAITERS": WAITERS, "PER_CPU": PER_CPU, "PARKABLE": PARKABLE,
    "REPIN": REPIN,
}


class ThreadExitedError(RuntimeError):
    """The KThread has exited, so it cannot be parked (kthread_park: -ENOSYS)."""


ThreadExitedError.__module__ = "kpark"   # its public name, not kpark._native


# model: cpu_of
cdef inline int _cpu_of(uint32_t v) noexcept nogil:
    return <int>(v >> CPU_SHIFT) - 1


# model: wake_if
cdef inline void _wake_if(uint32_t *word, bint needed) noexcept nogil:
    # The only system call on the wake side, made only when the replaced
    # value said somebody sleeps on the word.
    if needed:
        kp_wake_all(word)


cdef inline KCore _self_core(str fn):
    """The KCore of the calling KThread; RuntimeError naming `fn` elsewhere."""
    cdef void *p = kp_current_get()
    if p == NULL:
        raise RuntimeError(f"{fn}() must be called from inside a KThread")
    return <KCore>p


cdef class KCore:
    """The futex word of one KThread and the operations on it.

    The thread itself runs `run()`; controllers (any other thread) call
    wake/park/unpark/stop/join.  kpark.KThread is the public face.
    """
    cdef uint32_t word  # model: kcore.word
    # Spin hints (CPU + 1, 0 = unknown; RELAXED, they order nothing): where
    # the thread last announced a state, and where its last waker ran.
    cdef uint32_t thread_cpu
    cdef uint32_t waker_cpu
    cdef readonly object owner        # the KThread, while its thread runs
    cdef readonly object result       # threadfn's return value
    cdef readonly object exc          # the exception threadfn raised, or None
    cdef readonly object exc_tb

    # ---- waiting (controllers) ---------------------------------------------

    # model: wait_until (verify/controller.pmh wait_until)
    cdef int _wait_until(self, uint32_t any_set, uint32_t any_clear,
                         const timespec *deadline, uint32_t *seen) except -1 nogil:
        """Sleep until a bit of `any_set` is set or one of `any_clear` is clear.

        Returns 1 with the satisfying value in *seen, or 0 on timeout.
        Raises (KeyboardInterrupt) if a signal handler does.
        """
        cdef bint spun = False
        cdef int rc = 0
        # ACQUIRE here and in every re-read below: the value that satisfies the
        # wait must bring what its writer published (EXITED: threadfn's result).
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)  # model: wait_until.load
        while True:
            # model: wait_until.satisfied
            if (v & any_set) or (~v & any_clear):
                seen[0] = v
                return 1
            # model: wait_until.spin
            if not spun:
                # One bounded spin for the next change before sleeping.
                spun = True
                kp_spin_while_equal(&self.word, v, kp_spin_budget(self._thread_cpu_hint(v)))
                # ACQUIRE: as the first load.
                v = kp_load32(&self.word, KP_ACQUIRE)  # model: wait_until.after_spin
                continue
            # model: wait_until.deadline
            # A change of the word wins over the deadline: checked above first.
            if rc == KP_WAIT_TIMEDOUT or kp_deadline_passed(deadline):
                seen[0] = v
                return 0
            # model: wait_until.announce
            if not (v & WAITERS):
                # Announce ourselves.  ACQUIRE both ways: the value it succeeds
                # on or reloads is re-checked like a load; WAITERS publishes
                # nothing, so no RELEASE.
                if not kp_cas32(&self.word, &v, v | WAITERS, KP_ACQUIRE, KP_ACQUIRE):
                    continue
                v |= WAITERS
            # model: wait_until.sleep
            rc = wait_step(&self.word, v, deadline)
            # ACQUIRE: as the first load.
            v = kp_load32(&self.word, KP_ACQUIRE)  # model: wait_until.reload

    cdef int _wait_or_raise(self, uint32_t any_set, uint32_t any_clear, object timeout,
                            uint32_t *seen) except -1:
        cdef timespec deadline
        cdef bint timed = deadline_from_timeout(timeout, &deadline)
        cdef int ok
        cdef uint32_t epoch
        with nogil:
            epoch = kp_gil_released()
            ok = self._wait_until(any_set, any_clear, &deadline if timed else NULL, seen)
            kp_before_gil(epoch, self._thread_cpu_hint(seen[0]))
        return ok

    cdef inline uint32_t _thread_cpu_hint(self, uint32_t v) noexcept nogil:
        # A bound thread runs on its CPU; else where it was last seen
        # (RELAXED: a spin hint, it orders nothing).
        return (v >> CPU_SHIFT) if (v >> CPU_SHIFT) else kp_load32(&self.thread_cpu, KP_RELAXED)

    # model: wait_booted (verify/harness.pmh init)
    def wait_booted(self):
        """Constructor only: return once the new thread sits in its first sleep."""
        cdef uint32_t seen
        self._wait_or_raise(SLEEPING | EXITED | WOKEN, 0, None, &seen)

    # ---- controllers' verbs -------------------------------------------------

    # model: wake (verify/controller.pmh ctl_wake; mutant: kthread_ltl_mutant_lost_wake.pml)
    def wake(self):
        """wake_up_process: wake the thread from schedule() or its first sleep.

        Any thread.  Returns True if the thread was asleep and this call woke
        it; otherwise leaves a wake token (unless parked or exited: parked
        threads are deaf, but one parked in place by idle() keeps the token
        for its unpark()) and returns False.
        """
        # RELAXED: seeds the CAS loop; returning False for an exited or parked
        # thread promises nothing, and every change goes through the CAS.
        cdef uint32_t v = kp_load32(&self.word, KP_RELAXED)  # model: wake.load
        cdef uint32_t n
        cdef bint woke
        # RELAXED: a spin hint for the woken thread, it orders nothing.
        kp_store32(&self.waker_cpu, kp_this_cpu(), KP_RELAXED)
        while True:
            # model: wake.exited
            if v & EXITED:
                return False
            # model: wake.parked
            if v & PARKED:
                # Parked threads are deaf, except one parked in place by
                # idle(): unpark() would leave it asleep, so it keeps the
                # wake as a token and unpark() wakes it out instead.
                # model: wake.deaf
                if (v & (PARKABLE | WAKE)) != PARKABLE:
                    return False
                # model: wake.in_place_token
                n = (v | WAKE) & ~WAITERS
                woke = False
            # model: wake.sleeping
            elif v & SLEEPING:
                n = (v & ~(SLEEPING | PARKABLE | WAITERS)) | WOKEN
                woke = True
            # model: wake.token
            else:
                # Even when the token is there already (n == v) the CAS is
                # made: its RELEASE is what publishes this caller's writes
                # to the thread that takes the token.
                n = (v | WAKE | WOKEN) & ~WAITERS
                woke = False
            # model: wake.cas
            # RELEASE: the woken thread sees what we wrote before waking it.
            # RELAXED on failure: the loop re-decides from the reloaded value
            # and publishes nothing until a CAS succeeds.
            if kp_cas32(&self.word, &v, n, KP_RELEASE, KP_RELAXED):
                break
        _wake_if(&self.word, woke or (v & WAITERS))  # model: wake.wake_if
        return woke

    # model: request (verify/controller.pmh request; mutant: kthread_mutant_clear_after_wake.pml)
    cdef bint _request(self, uint32_t set_bits, uint32_t clear_bits,
                       uint32_t require=0) noexcept nogil:
        """Set/clear request bits and wake the thread out of schedule() or its
        park loop (when PARKED is among clear_bits), else leave a token.

        Returns False, changing nothing, if the thread has exited or (when
        `require` is given) none of the `require` bits is set.
        """
        # RELAXED: seeds the CAS loop; every change goes through the CAS.
        cdef uint32_t v = kp_load32(&self.word, KP_RELAXED)  # model: request.load
        cdef uint32_t n
        cdef bint wake
        # RELAXED: a spin hint for the woken thread, it orders nothing.
        kp_store32(&self.waker_cpu, kp_this_cpu(), KP_RELAXED)
        while True:
            # model: request.exited
            if v & EXITED:
                # Nothing to wake; a stop is still recorded (should_stop).
                # RELAXED: the thread is gone, nobody acquires this.
                n = v | (set_bits & SHOULD_STOP)
                if n == v or kp_cas32(&self.word, &v, n, KP_RELAXED, KP_RELAXED):
                    return False
                continue
            # model: request.require
            if require and not (v & require):
                return False
            # model: request.new
            n = (v | set_bits) & ~(clear_bits | WAITERS)
            wake = False
            # model: request.idle
            if v & PARKABLE:
                # The thread is in idle(), where parking costs no wake-up.
                # model: request.release_in_place
                if v & PARKED:
                    if clear_bits & PARKED:
                        # Release a park in place: back to the idle sleep,
                        # unless this is a stop or a wake came meanwhile
                        # (its token is this wake-up).  Either way the
                        # thread re-pins before it runs again.
                        n |= REPIN  # model: request.repin
                        # model: request.wake_out
                        if (n & SHOULD_STOP) or (v & WAKE):
                            n &= ~(SLEEPING | PARKABLE | WAKE)
                            wake = True
                        # model: request.back_to_sleep
                        else:
                            n |= SLEEPING
                # model: request.park_in_place
                elif (set_bits & SHOULD_PARK) and not (n & SHOULD_STOP) and not (v & WAKE):
                    n |= PARKED           # parked in place, still asleep
                # model: request.idle_sleeping
                elif v & SLEEPING:
                    n &= ~(SLEEPING | PARKABLE)
                    wake = True
                # model: request.idle_spinning
                else:
                    n |= WAKE             # still spinning: it sees the token
            # model: request.sleeping
            elif v & SLEEPING:
                n &= ~SLEEPING
                wake = True
            # model: request.parked
            elif v & PARKED & clear_bits:
                wake = True
            # model: request.token
            else:
                n |= WAKE
            # model: request.cas
            # ACQ_REL: the thread sees what we wrote before the request
            # (RELEASE), and a park in place sees what the thread wrote
            # before it went idle (ACQUIRE of its PARKABLE announcement).
            # RELAXED on failure: the loop only re-decides.
            if kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_RELAXED):
                break
        _wake_if(&self.word, wake or (v & WAITERS))  # model: request.wake_if
        return True

    # model: park (verify/controller.pmh ctl_park; from the thread itself: thread.pmh threadfn)
    def park(self, timeout=None):
        """kthread_park: ask the thread to park and wait until it is parked.

        From another thread: returns once the thread is asleep in its park
        loop (at once if it already is), or parked in place in idle(), where
        it runs nothing until released even if it still spins.  A thread
        that was never woken is woken straight into the park loop, without
        running threadfn.  Raises
        ThreadExitedError if the thread exits instead, TimeoutError if it does
        not reach its park loop in `timeout` seconds (the request stays
        pending until unpark()).  Returns early, unparked, if another thread's
        unpark() withdraws the request first.  From the thread itself: sets
        the request and returns; the thread parks at its next parkme().
        """
        cdef uint32_t v, seen
        if timeout is not None:
            check_timeout(timeout)
        if kp_current_get() == <void *>self:
            # RELEASE, as a controller's request (the thread reads it itself
            # at parkme(), program order; unpark() from elsewhere acquires it).
            kp_fetch_or32(&self.word, SHOULD_PARK, KP_RELEASE)  # model: park.self
            return
        # ACQUIRE: PARKED or EXITED seen here ends the call, so it must bring
        # what the thread published with it.
        v = kp_load32(&self.word, KP_ACQUIRE)  # model: park.load
        # model: park.exited
        if v & EXITED:
            raise ThreadExitedError("cannot park a thread that has exited")
        # model: park.already
        if v & PARKED:
            return
        # model: park.request
        if not self._request(SHOULD_PARK | WOKEN, 0):
            raise ThreadExitedError("cannot park a thread that has exited")
        # model: park.in_place
        # Parked in place (idle()): done, without giving up the GIL.
        # ACQUIRE: PARKED ends the call, as above.
        if kp_load32(&self.word, KP_ACQUIRE) & PARKED:
            return
        # model: park.wait
        if not self._wait_or_raise(PARKED | EXITED, SHOULD_PARK, timeout, &seen):
            raise TimeoutError(f"thread did not park within {timeout} seconds")
        if (seen & (PARKED | EXITED)) == EXITED:
            raise ThreadExitedError("the thread exited instead of parking")

    # model: unpark (verify/controller.pmh ctl_unpark)
    def unpark(self):
        """kthread_unpark: release a parked thread or withdraw a park request.

        Any thread; never blocks.  No-op if the thread is neither parked nor
        asked to park.  A per-CPU thread pins itself to its CPU again before
        it leaves the park loop.
        """
        self._request(0, SHOULD_PARK | PARKED, SHOULD_PARK | PARKED)

    # model: request_stop (verify/controller.pmh ctl_stop)
    def request_stop(self):
        """Set should_stop, withdraw parking and wake the thread; no waiting."""
        if kp_current_get() == <void *>self:
            raise RuntimeError("stop() cannot be called by the thread on itself")
        self._request(SHOULD_STOP, SHOULD_PARK | PARKED)

    # model: stop (verify/controller.pmh ctl_stop)
    def stop(self, timeout=None):
        """kthread_stop: request_stop(), then wait until the thread exited.

        TimeoutError after `timeout` seconds (the stop request stays).
        """
        cdef uint32_t seen
        if timeout is not None:
            check_timeout(timeout)
        self.request_stop()
        if not self._wait_or_raise(EXITED, 0, timeout, &seen):
            raise TimeoutError(f"thread did not exit within {timeout} seconds")

    def join(self, timeout=None):
        """Wait until the thread exited; return False on timeout."""
        cdef uint32_t seen
        return self._wait_or_raise(EXITED, 0, timeout, &seen) == 1

    def start(self):
        """Wake the thread and wait until threadfn was entered.

        Returns None once threadfn runs; raises RuntimeError if it was already
        started or woken, or parked before starting, ThreadExitedError if stopped first.
        """
        cdef uint32_t seen
        # ACQUIRE: a started thread's word is the one to refuse on; its wait
        # below acquires STARTED again.
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)
        if v & STARTED:
            raise RuntimeError("threads can only be started once")
        # A wake() before start() is the start (wake_up_process of a new
        # kthread): refuse, or this wake would leave a stray token.  A park
        # or stop request also sets WOKEN; those take the wait below, which
        # reports them.  (Callers serialise start(); a wake() racing this
        # check acts as if it came after the start.)
        if (v & WOKEN) and not (v & (SHOULD_PARK | PARKED | SHOULD_STOP | EXITED)):
            raise RuntimeError("threads can only be started once "
                               "(wake() already started this one)")
        self.wake()
        self._wait_or_raise(STARTED | EXITED | PARKED, 0, None, &seen)
        if seen & STARTED:
            return
        if seen & EXITED:
            raise ThreadExitedError("the thread was stopped before threadfn was entered")
        raise RuntimeError("the thread was parked before threadfn was entered; "
                           "unpark() it to start threadfn")

    # model: bind (verify/harness.pmh init (create_on_cpu); kthread_percpu.pml)
    def bind(self, int cpu, bint per_cpu=False):
        """kthread_bind: record the thread's CPU (callers validate `cpu`).

        Only before the first wake; returns False if the thread was woken.
        """
        # RELAXED: seeds the CAS loop, which decides.
        cdef uint32_t v = kp_load32(&self.word, KP_RELAXED)  # model: bind.load
        cdef uint32_t n
        if cpu < 0 or cpu > MAX_CPU:
            raise ValueError(f"CPU {cpu} is out of range")
        while True:
            # model: bind.woken
            if v & WOKEN:
                return False
            # model: bind.new
            n = ((v & FLAG_MASK & ~WAITERS) | ((<uint32_t>cpu + 1) << CPU_SHIFT)
                 | (PER_CPU if per_cpu else 0))
            # model: bind.cas
            # RELEASE pairs with the thread's ACQUIRE when it leaves its first
            # sleep: it pins itself to the CPU recorded here.  RELAXED on
            # failure: the loop re-decides.
            if kp_cas32(&self.word, &v, n, KP_RELEASE, KP_RELAXED):
                break
        _wake_if(&self.word, v & WAITERS)  # model: bind.wake_if
        return True

    def mark_exited_after_fork(self):
        """In a fork child: the OS thread is gone; report the KThread exited."""
        # Only the forking thread runs in the child: RELAXED load; RELEASE
        # store, as _publish(EXITED), for readers that acquire EXITED.
        kp_store32(&self.word, (kp_load32(&self.word, KP_RELAXED) & ~FLAG_MASK) | EXITED,
                   KP_RELEASE)
        self.result = None
        self.exc = None
        self.exc_tb = None

    # ---- what anyone may read ----------------------------------------------
    # ACQUIRE loads: a caller that sees a bit sees what its writer published
    # before setting it (a RELEASE or ACQ_REL change of the word).

    @property
    def is_parked(self):
        return (kp_load32(&self.word, KP_ACQUIRE) & PARKED) != 0

    @property
    def should_park(self):
        return (kp_load32(&self.word, KP_ACQUIRE) & SHOULD_PARK) != 0

    @property
    def should_stop(self):
        return (kp_load32(&self.word, KP_ACQUIRE) & SHOULD_STOP) != 0

    @property
    def started(self):
        return (kp_load32(&self.word, KP_ACQUIRE) & STARTED) != 0

    @property
    def exited(self):
        return (kp_load32(&self.word, KP_ACQUIRE) & EXITED) != 0

    @property
    def cpu(self):
        cdef int c = _cpu_of(kp_load32(&self.word, KP_ACQUIRE))
        return None if c < 0 else c

    @property
    def is_per_cpu(self):
        return (kp_load32(&self.word, KP_ACQUIRE) & PER_CPU) != 0

    @property
    def state_word(self):
        """The raw word, for tests and debugging."""
        return kp_load32(&self.word, KP_ACQUIRE)

    # ---- the thread's own side ----------------------------------------------

    # model: publish (verify/thread.pmh publish)
    cdef void _publish(self, uint32_t set_bits) noexcept nogil:
        """Set status bits (RELEASE: publishes what the thread wrote before)."""
        # RELAXED: seeds the CAS loop.
        cdef uint32_t v = kp_load32(&self.word, KP_RELAXED)  # model: publish.load
        # RELAXED: a spin hint for waiting controllers, it orders nothing.
        kp_store32(&self.thread_cpu, kp_this_cpu(), KP_RELAXED)
        # model: publish.cas
        # RELEASE: EXITED publishes threadfn's result and exception; the thread
        # reads nothing after it.  RELAXED on failure: the loop only retries.
        while not kp_cas32(&self.word, &v, (v | set_bits) & ~WAITERS,
                           KP_RELEASE, KP_RELAXED):
            pass
        _wake_if(&self.word, v & WAITERS)  # model: publish.wake_if

    # model: first_sleep (verify/thread.pmh first_sleep)
    cdef void _first_sleep(self) noexcept nogil:
        """Sleep until the first wake (WOKEN) or a stop (SHOULD_STOP)."""
        # ACQUIRE (and the re-read below): WOKEN or SHOULD_STOP ends the sleep, and
        # the thread then acts on what its waker wrote (bind()'s CPU, start()).
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)  # model: first_sleep.load
        cdef uint32_t n
        # model: first_sleep.loop
        while not (v & (WOKEN | SHOULD_STOP)):
            # model: first_sleep.announce
            if not (v & SLEEPING):
                n = (v | SLEEPING) & ~WAITERS
                # ACQ_REL: announce the sleep (RELEASE, for wait_booted()), and
                # see the bind() before it; ACQUIRE on failure: re-checked.
                if not kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_ACQUIRE):
                    continue
                _wake_if(&self.word, v & WAITERS)
                v = n
            # model: first_sleep.wait
            kp_wait(&self.word, v, NULL, 0)
            # ACQUIRE: as the first load.
            v = kp_load32(&self.word, KP_ACQUIRE)  # model: first_sleep.reload

    # model: park_loop (verify/thread.pmh park_loop; mutants: kthread_mutant_no_two_phase.pml, kthread_percpu_mutant_no_rebind.pml)
    cdef int _park_loop(self) noexcept nogil:
        """The park loop: sleep while SHOULD_PARK && !SHOULD_STOP.

        Returns 0, or the errno of re-pinning a per-CPU thread to its CPU,
        done after release and before the caller runs any user code.
        """
        # ACQUIRE (and every re-read below): leaving the loop hands the thread to
        # user code, which must see what the unpark()/stop() caller wrote.
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)  # model: park_loop.load
        cdef uint32_t n
        cdef int err
        cdef bint parked = False
        # RELAXED: a spin hint, it orders nothing.
        kp_store32(&self.thread_cpu, kp_this_cpu(), KP_RELAXED)
        # model: park_loop.loop
        while (v & SHOULD_PARK) and not (v & SHOULD_STOP):
            # model: park_loop.announce
            # Phase 1, the announcement: only while the request still stands.
            # ACQ_REL: RELEASE, so that park() returning sees what the thread
            # wrote before parking; ACQUIRE, what park()'s caller wrote.
            # ACQUIRE on failure: the reloaded request is re-checked.
            n = (v | PARKED) & ~WAITERS
            if not kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_ACQUIRE):
                continue
            _wake_if(&self.word, v & WAITERS)
            parked = True
            # model: park_loop.asleep
            # Phase 2, asleep on the announced value until unpark()/stop()
            # clears PARKED; any other change just makes us re-check.
            v = n
            # RELAXED: the waker's CPU is a spin hint.
            kp_spin_while_equal(&self.word, v,
                                kp_spin_budget(kp_load32(&self.waker_cpu, KP_RELAXED)))
            v = kp_load32(&self.word, KP_ACQUIRE)  # model: park_loop.after_spin
            while v & PARKED:
                kp_wait(&self.word, v, NULL, 0)  # model: park_loop.wait
                v = kp_load32(&self.word, KP_ACQUIRE)  # model: park_loop.reload
        # model: park_loop.repin
        if parked and (v & PER_CPU) and _cpu_of(v) >= 0:
            err = kp_pin_self(_cpu_of(v))  # model: park_loop.pin
            # Leaving for stop(): pin if we can (cleanup code runs on its
            # CPU), but a CPU that went away must not make stop() fail.
            return 0 if (v & SHOULD_STOP) else err
        return 0

    # model: enter (verify/thread.pmh enter; mutant: kthread_mutant_enter_after_stop.pml)
    cdef bint _enter(self) noexcept nogil:
        """Mark threadfn entered, unless a stop came first (then False)."""
        # RELAXED: seeds the CAS loop.  A stop seen here (or by a failed CAS,
        # RELAXED too) only makes the thread exit, which needs nothing the
        # stopper wrote.
        cdef uint32_t v = kp_load32(&self.word, KP_RELAXED)  # model: enter.load
        while True:
            # model: enter.stopped
            if v & SHOULD_STOP:
                return False
            # model: enter.cas
            # ACQ_REL: RELEASE, so that start() returning sees what the thread did
            # before threadfn; ACQUIRE, so that threadfn sees what every controller
            # wrote before its last change of the word (a token left since waking).
            if kp_cas32(&self.word, &v, (v | STARTED) & ~WAITERS, KP_ACQ_REL, KP_RELAXED):
                break
        _wake_if(&self.word, v & WAITERS)  # model: enter.wake_if
        return True

    # model: parkme (verify/thread.pmh parkme)
    cdef int parkme(self) except -1:
        cdef int err
        cdef uint32_t epoch
        # ACQUIRE: the park loop then acts on the request.
        if not (kp_load32(&self.word, KP_ACQUIRE) & SHOULD_PARK):  # model: parkme.check
            return 0
        with nogil:
            epoch = kp_gil_released()
            err = self._park_loop()  # model: parkme.park_loop
            # RELAXED: the waker's CPU is a spin hint.
            kp_before_gil(epoch, kp_load32(&self.waker_cpu, KP_RELAXED))
        if err:
            raise OSError(err, f"cannot pin the thread back to CPU {self.cpu}: "
                               f"{_os.strerror(err)}")
        return 0

    # model: schedule (verify/thread.pmh schedule; mutant: kthread_mutant_schedule_after_stop.pml)
    cdef int schedule(self, const timespec *deadline) except -1:
        # ACQUIRE: a stop or token seen here ends the call, and the caller
        # acts on what its writer published.
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)  # model: schedule.load
        cdef int woken
        cdef uint32_t epoch
        # Fast path with the GIL: a stopping thread never sleeps again (the
        # stop may have released it from the park loop, where no token is
        # left); otherwise consume a pending token.
        # model: schedule.stopping
        if v & SHOULD_STOP:
            return True
        # model: schedule.token
        while v & WAKE:
            # ACQ_REL: ACQUIRE, what the token's waker wrote; RELEASE, our
            # progress to controllers waiting on the word.  ACQUIRE on failure:
            # the reloaded value is re-checked.
            if kp_cas32(&self.word, &v, v & ~(WAKE | WAITERS), KP_ACQ_REL, KP_ACQUIRE):
                _wake_if(&self.word, v & WAITERS)
                return True
        with nogil:
            epoch = kp_gil_released()
            woken = self._sleep(deadline)
            if woken:
                # RELAXED: the waker's CPU is a spin hint.
                kp_before_gil(epoch, kp_load32(&self.waker_cpu, KP_RELAXED))
        return woken

    # model: sleep (verify/thread.pmh schedule)
    cdef int _sleep(self, const timespec *deadline) noexcept nogil:
        """schedule() without the GIL: 1 if woken, 0 on timeout."""
        # ACQUIRE (and every re-read below): a stop, token or wake seen here
        # ends the sleep, and the caller acts on what its writer published.
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)  # model: sleep.load
        cdef uint32_t n
        cdef int rc
        # Spin for a token before announcing the sleep: while we are not
        # SLEEPING a waker leaves a token and makes no system call.  The CPU
        # hints are RELAXED: they order nothing.
        kp_store32(&self.thread_cpu, kp_this_cpu(), KP_RELAXED)
        if not (v & WAKE) and kp_spin_while_equal(
                &self.word, v, kp_spin_budget(kp_load32(&self.waker_cpu, KP_RELAXED))):
            v = kp_load32(&self.word, KP_ACQUIRE)  # model: sleep.after_spin
        while True:
            # model: sleep.stopping
            if v & SHOULD_STOP:
                return 1
            # model: sleep.token
            if v & WAKE:
                n = v & ~(WAKE | WAITERS)
            # model: sleep.announce
            else:
                n = (v | SLEEPING) & ~WAITERS
            # model: sleep.cas
            # ACQ_REL: taking a token acquires what its waker wrote; announcing
            # SLEEPING releases our state to waiting controllers.  ACQUIRE on
            # failure: the reloaded value is re-checked.
            if kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_ACQUIRE):
                break
        _wake_if(&self.word, v & WAITERS)  # model: sleep.wake_if
        # model: sleep.took_token
        if v & WAKE:
            return 1
        # model: sleep.asleep
        v = n
        while True:
            rc = kp_wait(&self.word, v, deadline, 0)  # model: sleep.wait
            v = kp_load32(&self.word, KP_ACQUIRE)  # model: sleep.reload
            # model: sleep.woken
            if not (v & SLEEPING):
                return 1        # a waker cleared it: woken, not timed out
            # model: sleep.timeout
            if rc == KP_WAIT_TIMEDOUT or kp_deadline_passed(deadline):
                # model: sleep.withdraw
                # Withdraw, unless a waker clears SLEEPING first.  ACQ_REL, as
                # the announcement; ACQUIRE on failure: the waker's clear is
                # a wake whose writes the caller then relies on.
                while v & SLEEPING:
                    if kp_cas32(&self.word, &v, v & ~(SLEEPING | WAITERS),
                                KP_ACQ_REL, KP_ACQUIRE):
                        _wake_if(&self.word, v & WAITERS)
                        return 0
                return 1

    # model: idle (verify/thread.pmh idle; kthread_idle*.pml)
    cdef int idle(self) except -1:
        # ACQUIRE: as in schedule().
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)  # model: idle.load
        cdef int err
        cdef uint32_t epoch
        # Fast path with the GIL, as in schedule().
        # model: idle.stopping
        if v & SHOULD_STOP:
            return 0
        # model: idle.token
        while v & WAKE:
            # ACQ_REL: ACQUIRE, what the token's waker wrote; RELEASE, our
            # progress to controllers waiting on the word.  ACQUIRE on failure:
            # the reloaded value is re-checked.
            if kp_cas32(&self.word, &v, v & ~(WAKE | WAITERS), KP_ACQ_REL, KP_ACQUIRE):
                _wake_if(&self.word, v & WAITERS)
                return 0
        with nogil:
            epoch = kp_gil_released()
            err = self._idle()
            # RELAXED: the waker's CPU is a spin hint.
            kp_before_gil(epoch, kp_load32(&self.waker_cpu, KP_RELAXED))
        # model: idle.pin_error
        if err:
            raise OSError(err, f"cannot pin the thread back to CPU {self.cpu}: "
                               f"{_os.strerror(err)}")
        return 0

    # model: idle_nogil (verify/thread.pmh idle; kthread_idle*.pml; mutant: kthread_idle_percpu_mutant_no_repin.pml)
    cdef int _idle(self) noexcept nogil:
        """idle() without the GIL: 0, or the errno of re-pinning after a
        park in place was released (0 when leaving for stop())."""
        # ACQUIRE (and every re-read below): as in _sleep().
        cdef uint32_t v = kp_load32(&self.word, KP_ACQUIRE)  # model: idle_nogil.load
        cdef uint32_t n
        cdef int err
        cdef bint spin
        # RELAXED: a spin hint, it orders nothing.
        kp_store32(&self.thread_cpu, kp_this_cpu(), KP_RELAXED)
        # Phase 1, the announcement: PARKABLE, unless something is pending
        # (a stop, a park request to take to parkme(), a token to consume).
        while True:
            # model: idle_nogil.pending
            if v & (SHOULD_STOP | SHOULD_PARK):
                return 0
            # model: idle_nogil.token
            if v & WAKE:
                n = v & ~(WAKE | WAITERS)
            # model: idle_nogil.announce
            else:
                n = (v | PARKABLE) & ~WAITERS
            # model: idle_nogil.cas
            # ACQ_REL: a park in place that reads PARKABLE sees what we wrote
            # before going idle; we see what a token's waker wrote.  ACQUIRE on
            # failure: the reloaded value is re-checked.
            if kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_ACQUIRE):
                break
        _wake_if(&self.word, v & WAITERS)  # model: idle_nogil.wake_if
        # model: idle_nogil.took_token
        if v & WAKE:
            return 0
        # Phase 2: spin on the announced value (wakers leave a token and make
        # no system call while SLEEPING is not set), then announce SLEEPING
        # and sleep.  Parked in place (PARKED) we sleep on, SLEEPING or not,
        # until unpark() puts us back to sleep or wakes us out.
        # model: idle_nogil.spin_on
        v = n
        spin = True  # model: idle_nogil.spin
        # model: idle_nogil.loop
        while v & PARKABLE:
            # model: idle_nogil.take
            if (v & (WAKE | SHOULD_STOP)) and not (v & PARKED):
                # A token (or stop) that came while we spun: take it.  ACQ_REL
                # and ACQUIRE on failure, as the announcement above.
                n = v & ~(WAKE | PARKABLE | SLEEPING | WAITERS)
                if kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_ACQUIRE):
                    _wake_if(&self.word, v & WAITERS)
                    v = n
                    break
                continue
            # model: idle_nogil.spinning
            if spin:
                # Spin on our announcement and on every value a controller
                # wrote since (a park or unpark in place), not on our own
                # SLEEPING: a hotplug cycle finds us warm.  RELAXED: the
                # waker's CPU is a spin hint.
                spin = kp_spin_while_equal(&self.word, v, kp_spin_budget(
                    kp_load32(&self.waker_cpu, KP_RELAXED)))
                v = kp_load32(&self.word, KP_ACQUIRE)  # model: idle_nogil.after_spin
                continue
            # model: idle_nogil.announce_sleep
            if not (v & (PARKED | SLEEPING)):
                n = (v | SLEEPING) & ~WAITERS
                # ACQ_REL and ACQUIRE on failure, as the announcement above.
                if not kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_ACQUIRE):
                    continue
                _wake_if(&self.word, v & WAITERS)
                v = n
            kp_wait(&self.word, v, NULL, 0)  # model: idle_nogil.wait
            v = kp_load32(&self.word, KP_ACQUIRE)  # model: idle_nogil.reload
        # model: idle_nogil.repin
        # Woken out (PARKABLE cleared by the waker or by us above).
        if not (v & REPIN):
            return 0
        # RELAXED: only we clear REPIN and nobody waits for it; the release
        # that set it was acquired by the load that saw PARKABLE cleared.
        v = kp_fetch_and32(&self.word, ~(<uint32_t>REPIN), KP_RELAXED)  # model: idle_nogil.clear_repin
        if (v & PER_CPU) and _cpu_of(v) >= 0:
            err = kp_pin_self(_cpu_of(v))  # model: idle_nogil.pin
            # As in the park loop: leaving for stop() pins best effort.
            return 0 if (v & SHOULD_STOP) else err
        return 0

    # model: run (verify/thread.pmh proctype Worker)
    def run(self, owner, threadfn, data, bytes comm):
        """The body of the KThread's OS thread (called by KThread.run)."""
        cdef uint32_t v
        cdef int cpu
        self.owner = owner
        kp_current_set(<void *>self)
        kp_name_self(comm)
        # The signal mask stays the creator's, as in a threading.Thread:
        # children of user code inherit it (kp_sched.h).  A signal that lands
        # here only interrupts a futex wait below, which re-reads the word.
        try:
            # model: run.first_sleep
            with nogil:
                self._first_sleep()
            # model: run.load
            # ACQUIRE: the CPU and the stop decide what runs next.
            v = kp_load32(&self.word, KP_ACQUIRE)
            # model: run.start
            if not (v & SHOULD_STOP):
                # model: run.pin
                cpu = _cpu_of(v)
                if cpu >= 0:
                    # bind() pinned us from outside already; this makes sure.
                    kp_pin_self(cpu)
                # model: run.parkme
                self.parkme()
                # model: run.threadfn
                if self._enter():
                    self.result = threadfn(data)
        except BaseException as e:
            self.exc = e
            self.exc_tb = e.__traceback__
        # model: run.exit
        finally:
            kp_current_set(NULL)
            self.owner = None
            self._publish(EXITED)


# ---- called from inside a KThread ------------------------------------------

# model: api.should_stop
def should_stop():
    """kthread_should_stop: True once stop() was called on this thread."""
    # ACQUIRE: the caller acts on the stop (cleans up what the stopper set).
    return (kp_load32(&_self_core("should_stop").word, KP_ACQUIRE) & SHOULD_STOP) != 0


# model: api.should_park
def should_park():
    """kthread_should_park: True while a park request is pending."""
    # ACQUIRE: the caller acts on the request.
    return (kp_load32(&_self_core("should_park").word, KP_ACQUIRE) & SHOULD_PARK) != 0


# model: api.parkme
def parkme():
    """kthread_parkme: park here if asked to, until unpark() or stop().

    Returns at once if no park is pending.  A per-CPU thread is on its CPU
    again when this returns (OSError if that CPU is no longer allowed).
    """
    _self_core("parkme").parkme()


# model: api.schedule
def schedule(timeout=None):
    """Sleep without the GIL until wake(), park(), unpark() or stop().

    A wake that came since the last schedule() returned makes this return at
    once, and so does a stop() (a stopping thread never sleeps here again).
    Returns True when woken, False once `timeout` seconds passed.
    """
    cdef KCore core = _self_core("schedule")
    cdef timespec deadline
    cdef bint timed = deadline_from_timeout(timeout, &deadline)
    return core.schedule(&deadline if timed else NULL) == 1


# model: api.idle
def idle():
    """Sleep like schedule() (no timeout), parkable where it sleeps.

    For a thread whose loop does nothing between waking and parkme() but
    re-check its work (PerCPUExecutor's workers): a park() that comes while
    the thread sleeps here parks it right here, without waking it, and
    returns at once; unpark() puts it back to this sleep unless a wake()
    came while it was parked (then it returns, as for that wake).  A per-CPU
    thread re-pins itself before returning after such a park (OSError if its
    CPU is no longer allowed).  Returns at once for a pending wake token,
    stop() or park request, like schedule().  Only from the thread itself.
    """
    _self_core("idle").idle()


def current():
    """The KThread running the caller, or None outside KThreads."""
    cdef void *p = kp_current_get()
    return None if p == NULL else (<KCore>p).owner


def this_cpu():
    """The CPU the caller runs on now (sched_getcpu; a hint: it may move)."""
    return <int>kp_this_cpu() - 1
