/* kthread_mutant_clear_after_wake.pml - MUTANT: must FAIL.
 *
 * _request wakes the sleepers first and clears PARKED (its CAS, _kcore.pyx
 * @request.cas CAS) after the wake.  The parked thread wakes, still sees PARKED, and goes
 * back to sleep on that value; the CAS that clears PARKED then comes with no
 * wake, so unpark() is lost and the final stop() never returns.
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_mutant_clear_after_wake.pml
 */
#define MUTANT_CLEAR_AFTER_WAKE
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread.pml"
