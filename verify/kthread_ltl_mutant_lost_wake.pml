/* kthread_ltl_mutant_lost_wake.pml - MUTANT: must FAIL.
 *
 * wake() clears SLEEPING but makes the futex wake only when WAITERS was set
 * (it forgets the sleeper it woke, _kcore.pyx @wake.wake_if).  The worker sleeps on
 * in schedule(): the LTL property wake_not_lost fails (acceptance cycle).
 *
 * run: spin -run -a -DCOLLAPSE -m1000000 -E kthread_ltl_mutant_lost_wake.pml
 */
#define MUTANT_LOST_WAKE
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread_ltl.pml"
