/* The recorder's stops with nothing done at them, in C: the floor of any
 * ptrace recorder that stops where nixrec stops (bench/stops.py --floor-c,
 * docs/performance.md). Not part of nixrec: a what-if, compiled by the bench.
 *
 * Each seccomp stop: one PTRACE_GET_SYSCALL_INFO, then PTRACE_SYSCALL when
 * nixrec would take the call's exit stop (take_exit[nr]), else PTRACE_CONT.
 * Every other stop: resumed (a signal-delivery stop with its signal). Polls
 * for `spin_ns` before blocking, as the tracer does. Returns the builder's
 * wait status; *stops gets the number of stops handled.
 *
 * path_arg[nr] >= 0 (instead of -1): also read that argument's string with
 * process_vm_readv at the entry stop, and the result at an exit stop, as a
 * recorder must; the bytes are dropped. That is the floor of a recorder whose
 * hot path is in C and leaves only the events to Python. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static pid_t wait_any(int *status, long spin_ns) {
    long deadline = now_ns() + spin_ns;
    for (;;) {
        pid_t pid = waitpid(-1, status, __WALL | WNOHANG);
        if (pid != 0 || now_ns() > deadline)
            return pid;
    }
}

static char path_buf[4096];

static void read_path(pid_t pid, unsigned long addr) {
    /* First 256 bytes, as the tracer reads them (the rest rarely matters). */
    struct iovec local = {path_buf, 256}, remote = {(void *)addr, 256};
    process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

int floor_loop(pid_t builder, pid_t helper, const unsigned char *take_exit,
               const signed char *path_arg, long spin_ns, long *stops) {
    int builder_status = -1, status;
    long live = 1;                       /* tracees not yet exited */
    *stops = 0;
    while (live > 0) {
        pid_t pid = wait_any(&status, spin_ns);
        if (pid == 0)
            pid = waitpid(-1, &status, __WALL);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            if (pid == helper)
                continue;                /* nixrec reaps it itself afterwards */
            if (pid == builder)
                builder_status = status;
            live--;
            continue;
        }
        if (!WIFSTOPPED(status))
            continue;
        ++*stops;
        int sig = WSTOPSIG(status), event = status >> 16;
        if (event == PTRACE_EVENT_SECCOMP) {
            struct __ptrace_syscall_info info;
            ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof info, &info);
            unsigned long nr = info.seccomp.nr;
            int req = (nr < 512 && take_exit[nr]) ? PTRACE_SYSCALL : PTRACE_CONT;
            if (req == PTRACE_SYSCALL)
                ptrace(req, pid, 0, 0);          /* read while the call runs */
            if (nr < 512 && path_arg[nr] >= 0)
                read_path(pid, info.seccomp.args[(int)path_arg[nr]]);
            if (req == PTRACE_CONT)
                ptrace(req, pid, 0, 0);
        } else if (sig == (SIGTRAP | 0x80)) {
            struct __ptrace_syscall_info info;
            if (path_arg[0] != -2)               /* -2: the bare floor */
                ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof info, &info);
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK
                   || event == PTRACE_EVENT_CLONE) {
            live++;
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else if (event) {
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else {
            int inject = (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN
                          || sig == SIGTTOU) ? 0 : sig;
            ptrace(PTRACE_CONT, pid, 0, (void *)(long)inject);
        }
    }
    return builder_status;
}
