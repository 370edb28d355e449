/* kthread_idle_percpu.pml - a per-CPU KThread parked in place, and CPU
 * hot-unplug while it is.
 *
 * The thread of kthread_percpu.pml (create_on_cpu: bound, per-CPU, parked;
 * the CPU may go away once while it is parked, moving it to CPU 0), with
 * the threadfn of smpboot with _park_idle_in_place (percpu.py: the
 * executor's workers): idle() instead of schedule().  A park() that finds
 * the thread in idle() parks it there; the hot-unplug may then move it; its
 * release (unpark() back to sleep and a later wake(), unpark() with a WAKE
 * token, or stop()) sets REPIN, and the thread pins itself back before it
 * leaves idle().  Checks, besides kthread_idle.pml's: idle() returns on the
 * thread's CPU (except when leaving for stop(), where the code pins best
 * effort) and user code never runs on the wrong CPU.
 * Bounds: no schedule() in threadfn (smpboot calls idle() instead) and no
 * spurious futex wake-ups (kthread_idle.pml has both); 2 controllers x 2
 * verbs.
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_idle_percpu.pml
 */
#ifndef IDLE
#define IDLE 1
#endif
#ifndef SCHEDULE
#define SCHEDULE 0
#endif
#ifndef SPURIOUS
#define SPURIOUS 0
#endif
#ifndef PER_CPU_THREAD
#define PER_CPU_THREAD 1
#endif
#ifndef NCTL
#define NCTL 2
#endif
#ifndef NOPS
#define NOPS 2
#endif
#include "harness.pmh"
