/* kthread_idle_ltl_mutant_unpark_ignores_wake.pml - MUTANT: must FAIL.
 *
 * unpark() of a thread parked in place always puts it back to its idle
 * sleep, ignoring the WAKE token a wake() left while it was parked
 * (_kcore.pyx @request.wake_out without `or (v & WAKE)`).  That wake() is lost: the
 * thread sleeps on in idle(), unparked, and the LTL property
 * wake_not_lost_idle fails (acceptance cycle).
 *
 * run: spin -run -a -DCOLLAPSE -m1000000 -E kthread_idle_ltl_mutant_unpark_ignores_wake.pml
 */
#define MUTANT_UNPARK_IGNORES_WAKE
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread_idle_ltl.pml"
