/* kthread_mutant_schedule_after_stop.pml - MUTANT: must FAIL.
 *
 * schedule() without its SHOULD_STOP checks (_kcore.pyx @schedule.stopping and
 * @sleep.stopping), i.e. the code before commit f2eed52.  stop() of a parked
 * thread releases it from the park loop without leaving a WAKE token (the
 * thread was not running); threadfn's next schedule() then sleeps for good
 * and stop() never returns (invalid end state).
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_mutant_schedule_after_stop.pml
 */
#define MUTANT_SCHEDULE_AFTER_STOP
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread.pml"
