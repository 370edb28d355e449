/* kthread_timeouts.pml - park(timeout) and stop(timeout) may give up.
 *
 * Like kthread.pml, but every wait of park() and stop() may time out (at
 * the deadline checks of _wait_until, _kcore.pyx @wait_until.deadline, or in FUTEX_WAIT
 * itself), leaving a stale WAITERS bit and a pending request behind; a
 * KeyboardInterrupt raised from wait_step leaves the same state.  The final
 * stop() waits without a timeout, so it must still return.
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_timeouts.pml
 */
#ifndef CTL_TIMEOUTS
#define CTL_TIMEOUTS 1
#endif
#include "kthread.pml"
