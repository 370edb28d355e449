/* kthread_idle_percpu_mutant_no_repin.pml - MUTANT: must FAIL.
 *
 * The release of a park in place sets no REPIN (_kcore.pyx @request.repin), so the
 * thread does not pin itself back before it leaves idle() (@idle_nogil.repin).
 * After a hot-unplug moved the thread parked in place, unpark() (with a
 * WAKE token, or back to sleep and a later wake()) lets idle() return on the
 * wrong CPU: assertion.
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_idle_percpu_mutant_no_repin.pml
 */
#define MUTANT_NO_REPIN
#ifndef WORD_INVARIANTS
#define WORD_INVARIANTS 0       /* fail on what a user would see, not on the word invariants */
#endif
#include "kthread_idle_percpu.pml"
