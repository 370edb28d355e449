/* kthread_idle.pml - idle() and the park in place, safety.
 *
 * kthread.pml with one more choice in threadfn: idle() (KCore.idle/_idle),
 * the sleep that a park() turns into "parked in place" (PARKABLE|PARKED)
 * without waking the thread; unpark() then puts it back to that sleep, or
 * wakes it out if a wake() came while it was parked (the WAKE token) or for
 * stop().  Two controllers, any sequence of up to 2 of wake/park/unpark/stop
 * each, then a final stop().  park() has its fast path (@park.in_place) as a step
 * of its own here.  Checks, besides kthread.pml's: a thread parked in place
 * runs no user code and does not leave idle() until released; park()
 * returns only once the thread is parked (in its park loop or in place) or
 * the request was withdrawn; the word invariants for PARKABLE and REPIN;
 * and no invalid end state (every park() and stop() returns, also for a
 * thread parked in place).
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_idle.pml
 */
#ifndef IDLE
#define IDLE 1
#endif
#ifndef NCTL
#define NCTL 2
#endif
#ifndef NOPS
#define NOPS 2
#endif
#include "harness.pmh"
