/* kthread.pml - the KThread protocol of src/kpark/_kcore.pyx, safety.
 *
 * One worker (KCore.run, threadfn = the canonical kthread loop with
 * schedule(), schedule(timeout), park() on itself), two controllers each
 * issuing any sequence of up to 2 of wake/park/unpark/stop, then a final
 * stop().  Spurious futex wake-ups allowed.  Checks: the assertions (a
 * parked thread runs no user code; threadfn never starts after a stop; the
 * word invariants of the module docstring) and no invalid end state (every
 * park() and stop() returns).
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread.pml
 */
#ifndef NCTL
#define NCTL 2
#endif
#ifndef NOPS
#define NOPS 2
#endif
#include "harness.pmh"
