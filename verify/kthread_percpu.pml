/* kthread_percpu.pml - a per-CPU KThread (create_on_cpu) and CPU hot-unplug.
 *
 * init makes the thread as thread.py create_on_cpu() does (bind to CPU 1 as
 * per-CPU, then park()); while it is parked the CPU may go away, moving the
 * thread to CPU 0 (proctype Migrator).  Two controllers issue any sequence
 * of up to 2 of wake/park/unpark/stop, then init stops the thread.
 * Checks, besides kthread.pml's: user code never runs on the wrong CPU after
 * unpark (the re-pin of _park_loop, _kcore.pyx @park_loop.repin kp_pin_self).
 *
 * run: spin -run -DSAFETY -DCOLLAPSE -m1000000 kthread_percpu.pml
 */
#ifndef PER_CPU_THREAD
#define PER_CPU_THREAD 1
#endif
#ifndef NCTL
#define NCTL 2
#endif
#ifndef NOPS
#define NOPS 2
#endif
#include "harness.pmh"
