/* kthread_fine.pml - kthread.pml with every load a step of its own.
 *
 * FINE_GRAINED keeps the loads that feed each CAS loop as separate steps,
 * exactly as the C code does them (see word.pmh, LOAD/FRESH), so stale
 * values, failed CASes and their retries are all explored.  This checks the
 * folding used by the other models on kthread.pml's full configuration.
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_fine.pml
 */
#ifndef FINE_GRAINED
#define FINE_GRAINED
#endif
#include "kthread.pml"
