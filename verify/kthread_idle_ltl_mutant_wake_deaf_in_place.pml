/* kthread_idle_ltl_mutant_wake_deaf_in_place.pml - MUTANT: must FAIL.
 *
 * wake() drops the wake of a thread parked in place, as it does for a
 * thread in its park loop (_kcore.pyx @wake.parked without the PARKABLE case:
 * no token for unpark()).  unpark() then puts the thread back to its idle
 * sleep, and the wake() is lost: the LTL property wake_not_lost_idle fails
 * (acceptance cycle).
 *
 * run: spin -run -a -DCOLLAPSE -m1000000 -E kthread_idle_ltl_mutant_wake_deaf_in_place.pml
 */
#define MUTANT_WAKE_DEAF_IN_PLACE
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread_idle_ltl.pml"
