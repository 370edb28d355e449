/* kthread_percpu_mutant_no_rebind.pml - MUTANT: must FAIL.
 *
 * The park loop does not pin a per-CPU thread back to its CPU after it was
 * released (_kcore.pyx @park_loop.repin kp_pin_self).  After a hot-unplug moved the parked thread
 * away, unpark() lets it run user code on the wrong CPU: assertion.
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_percpu_mutant_no_rebind.pml
 */
#define MUTANT_NO_REBIND
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread_percpu.pml"
