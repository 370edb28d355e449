/* kthread_mutant_no_two_phase.pml - MUTANT: must FAIL.
 *
 * The park loop checks SHOULD_PARK && !SHOULD_STOP and then announces PARKED
 * with a blind fetch-or, instead of the CAS of _kcore.pyx (@park_loop.announce CAS) that only
 * succeeds while the request still stands.  A stop() (or unpark()) between
 * the check and the fetch-or is lost: the thread parks with nobody left to
 * clear PARKED, and stop() never returns (invalid end state).
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_mutant_no_two_phase.pml
 */
#define MUTANT_NO_TWO_PHASE
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread.pml"
