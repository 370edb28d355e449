/* kthread_idle_ltl.pml - a wake() that reaches a thread in idle() is not
 * lost, parked in place or not.
 *
 * kthread_ltl.pml with idle() among threadfn's choices (no
 * schedule(timeout): kthread_ltl.pml covers it), and no final stop().  The
 * ghost idle_wake is set by a wake() that reaches the worker while it is in
 * idle() - its CAS (a wake-up, or a WAKE token, also the one kept for a
 * thread parked in place) or its finding the token already there - and by
 * a stop()'s CAS; it is cleared when idle() returns.  The property: once
 * set, idle() returns, unless the thread is parked (in place) from some
 * point on for good - nobody unparks it, and it returns after unpark() only
 * if that comes.  Together with kthread_ltl.pml's wake_not_lost for
 * schedule(), whose tokens idle() may consume.  No fairness assumption is
 * needed (runs are finite apart from the worker's own loop); a worker
 * asleep for ever in idle(), unparked, is a stuttering run that violates it.
 *
 * run: spin -run -a -DCOLLAPSE -m1000000 -E kthread_idle_ltl.pml
 *   (-E: a worker asleep at the end is not an error here; kthread_idle.pml
 *    checks end states with the final stop())
 */
#ifndef LTL
#define LTL
#endif
#ifndef CLOSER
#define CLOSER 0
#endif
#ifndef IDLE
#define IDLE 1
#endif
#ifndef TIMED_SCHEDULE
#define TIMED_SCHEDULE 0
#endif
#ifndef NCTL
#define NCTL 2
#endif
#ifndef NOPS
#define NOPS 2
#endif
#include "harness.pmh"

#define parked ((word & PARKED) != 0)
ltl wake_not_lost_idle { [] ((sched_wake -> <> !sched_wake) &&
                             (idle_wake -> <> (!idle_wake || [] parked))) }
