/* kp_sched.h - the calling thread's CPU, name, signal mask and identity. */
#ifndef KP_SCHED_H
#define KP_SCHED_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
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

/* Block the asynchronous signals in the calling thread, so the kernel hands
 * process-directed signals (Ctrl-C) to a thread that can act on them: Python
 * runs signal handlers in the main thread only, and a KThread that received
 * SIGINT would leave the main thread asleep in a wait it should leave. */
static inline void kp_block_async_signals(void)
{
    sigset_t set;
    sigfillset(&set);
    sigdelset(&set, SIGSEGV);
    sigdelset(&set, SIGBUS);
    sigdelset(&set, SIGFPE);
    sigdelset(&set, SIGILL);
    sigdelset(&set, SIGTRAP);
    sigdelset(&set, SIGSYS);
    sigdelset(&set, SIGABRT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
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
