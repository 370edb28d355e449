/* kthread_mutant_enter_after_stop.pml - MUTANT: must FAIL.
 *
 * _enter checks SHOULD_STOP and then sets STARTED with a blind fetch-or,
 * instead of the CAS of _kcore.pyx (@enter.cas CAS).  A stop() between the two lets
 * threadfn start after the stop: assertion.
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_mutant_enter_after_stop.pml
 */
#define MUTANT_ENTER_AFTER_STOP
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread.pml"
