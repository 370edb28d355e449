/* kp_sched.h - the calling thread's CPU, name and identity.
 *
 * Nothing here touches the signal mask: a KThread runs with the mask of the
 * thread that created it, as a threading.Thread does, because everything
 * its user code starts (subprocesses, os.system, threads) inherits that
 * mask.  Ctrl-C still reaches the main thread: Linux offers a
 * process-directed signal to the thread group leader first whenever it can
 * take it (docs/semantics.md, "Signals").
 */
#ifndef KP_SCHED_H
#define KP_SCHED_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Pin the calling thread to one CPU.  Returns 0 or an errno value.  The
 * kernel migrates the caller before the system call returns, so code after a
 * successful call already runs on `cpu`. */
static inline int kp_pin_self(int cpu)
{
    cpu_set_t set;
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return EINVAL;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : errno;
}

/* Name the calling thread (/proc/self/task/<tid>/comm, 15 bytes at most; the
 * caller cuts the name on a character boundary). */
static inline int kp_name_self(const char *name)
{
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) == 0 ? 0 : errno;
}

/* The KThread the calling OS thread runs (a borrowed reference: the thread
 * holds its KThread for as long as it runs), or NULL. */
/* initial-exec: a fixed offset from the thread pointer, no __tls_get_addr()
 * call, and no dynamic TLS block for glibc to free at thread exit (which
 * ThreadSanitizer reported as a race it cannot see through). */
static __thread void *kp_current_thread __attribute__((tls_model("initial-exec"))) = NULL;

static inline void *kp_current_get(void) { return kp_current_thread; }
static inline void kp_current_set(void *k) { kp_current_thread = k; }

#endif /* KP_SCHED_H */
