/* kthread_ltl.pml - a wake() sent to a thread in schedule() is not lost.
 *
 * Same worker and controllers as kthread.pml, but no final stop(): nothing
 * comes to the rescue of a lost wake-up.  The ghost sched_wake is set by
 * the CAS of any wake()/park()/unpark()/stop() that changes the word while
 * the worker is inside schedule() (asleep or about to sleep: the CAS either
 * clears SLEEPING or leaves a WAKE token), and cleared when schedule()
 * returns.  The property: once set, it is cleared again, i.e. schedule()
 * returns.  Runs are finite apart from the worker's own loop, so no fairness
 * assumption is needed; a worker asleep for ever is a stuttering run that
 * violates the property.
 *
 * run: spin -run -a -DCOLLAPSE -m1000000 -E kthread_ltl.pml
 *   (-E: a worker asleep at the end is not an error here; kthread.pml
 *    checks end states with the final stop())
 */
#ifndef LTL
#define LTL
#endif
#ifndef CLOSER
#define CLOSER 0
#endif
#ifndef NCTL
#define NCTL 2
#endif
#ifndef NOPS
#define NOPS 2
#endif
#include "harness.pmh"

ltl wake_not_lost { [] (sched_wake -> <> !sched_wake) }
