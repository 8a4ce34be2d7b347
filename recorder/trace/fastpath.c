/* nixrec's tracer hot path, in C (issue 6; recorder/trace/fastpath.py loads it).

tracer.py can handle every kind of stop in Python. When this library is built
(scripts/setup.sh, gcc -> recorder/trace/_fastpath.so, no Python.h), this loop waits
for the stops instead and handles the ones that make nearly all of a build's
stops (GNU hello: 255k of 264k), handing every other stop, untouched, back to
Python:

  - the seccomp entry stop of a call that names one path and nothing else to
    read (open, stat, access, mkdir, unlink...: fastpath.kind_of), the path
    read here; the call then runs to its exit stop (its result), unless the
    lookup's answer is known already (predict.py's answers, which Python
    teaches this loop as it finds them; for a plain read-only open that will
    succeed, the answer is the lowest fd the process has free, read here from
    /proc/PID/fd: lowest_free_fd);
  - wait4's two stops (the status the child left, read at the exit stop);
  - a write to fd 1 or 2 that does not go to the build log: no event;
  - fork, clone and exec events, a new child's first stop, signal-delivery
    stops and exits (tracer._on_fork, _on_signal, _on_exit).

What it saw goes into records (struct rec) in a buffer Python reads; Python
makes them into events, in the order of the stops, before it handles a stop
itself, and whenever records wait while no tracee is stopped (R_IDLE: the time
the loop would otherwise spend polling). The trace is the one the Python loop
writes, event for event (tests/test_fastpath.py records builds both ways).

An ENOENT where something is at the path (a dangling link to explain) is a
HELD record: the loop returns at once and Python resumes that tracee after it
looked. A lookup whose answer is not known yet, a path relative to a dirfd,
an empty or unreadable path, a call of the kind a replay stops at: Python's.

This file: the records, one stop, the loop. fp_state.c: the settings, the
answers, the calls in flight, the pid sets. fp_read.c: reading the tracee
and /proc. fastpath.h: what they share. All four build into one library.
*/
#include "fastpath.h"

/* --- records ----------------------------------------------------------------------------- */
/* A record is made in c->rec (then its path, if any) and appended to the
   buffer by done_rec, once it is whole. The loop returns to Python (R_IDLE)
   before the buffer could lack room for one more (run). */
FP_HIDDEN struct rec *add_rec(struct ctx *c, int pid, int nr, int64_t t_ns, const uint64_t *args,
                           const char *raw, uint32_t rawlen) {
    struct rec *r = &c->rec.r;
    memset(r, 0, sizeof *r);
    r->size = (sizeof(struct rec) + rawlen + 7) & ~(size_t)7;
    r->pid = pid;
    r->nr = nr;
    r->rawlen = rawlen;
    r->t_ns = t_ns;
    memcpy(r->args, args, sizeof r->args);
    memcpy(c->rec.raw, raw, rawlen);
    return r;
}

FP_HIDDEN void done_rec(struct ctx *c, struct rec *r) {
    if (!c->used) c->first_ns = r->t_ns;   /* a call's entry: never later than now */
    memcpy(c->buf + c->used, r, sizeof *r + r->rawlen);
    c->used += r->size;
}

/* Python made the records into events: the buffer is empty again. */
size_t fp_used(struct ctx *c) { return c->used; }
void fp_clear(struct ctx *c) { c->used = 0; }


/* --- one stop ------------------------------------------------------------------------ */
/* -> 0: handled (the tracee runs on); R_STOP: Python's; R_HELD: record written,
   the tracee still stopped. */
static int on_entry(struct ctx *c, int pid) {
    struct info in;
    if (ptrace(PTRACE_GET_SYSCALL_INFO_, pid, (void *)sizeof in, &in) < 0) return R_STOP;
    if (in.op != 3) return R_STOP;
    uint64_t nr = in.sc.nr;
    if (nr == SYS_io_uring_setup) {
        /* An io_uring opens files from the kernel's side, outside any call
           of this process's we stop on: its next fd cannot be told any more,
           nor its children's (they inherit the ring), even across an exec
           (the ring fd may survive it). Python records the call. */
        set_add(c->rings, pid, 0);
        return R_STOP;
    }
    if (nr >= NR_MAX || !c->kind[nr] || (int)nr == c->slow_nr) return R_STOP;
    const uint64_t *args = in.sc.args;
    int kind = c->kind[nr];
    if (kind == K_OUT) {
        /* calls.Decoder._output: a write to fd 1/2 that is not the log is no event. */
        if (!c->has_rdev) return R_STOP;
        char p[64];
        struct stat st;
        snprintf(p, sizeof p, "/proc/%d/fd/%d", pid, (int32_t)args[0]);
        if (stat(p, &st) == 0 && st.st_rdev == c->rdev) return R_STOP;
        if (ptrace(PTRACE_CONT, pid, 0, 0) < 0) return R_STOP;
        return 0;
    }
    struct pending *p = c->free_pend;
    if (p) c->free_pend = p->next;
    else if (!(p = malloc(sizeof *p))) return R_STOP;
    p->rawlen = 0;
    if (kind == K_SIMPLE) {
        long len = read_cstr(c, pid, args[c->i_path[nr]]);
        if (len <= 0) goto python;     /* NULL, empty or unreadable: Python decodes it */
        int dirfd = c->i_dirfd[nr];
        if (c->raw[0] != '/' && dirfd >= 0 && (int32_t)args[dirfd] != AT_FDCWD_)
            goto python;               /* relative to a dirfd: Python reads /proc/PID/fd */
        p->rawlen = len;
        int where = c->lk_where[nr];
        if (c->predict && where && c->raw[0] == '/') {
            int follow = 1, asked = c->lk_stat[nr] ? ASK_STAT : ASK_OPEN, lookup = 1;
            if (c->lk_mode[nr] >= 0) asked = args[c->lk_mode[nr]] & 7;
            if (where == L_OFLAGS) {
                uint64_t fl = args[c->lk_i[nr]];
                if (fl & (O_CREAT_ | O_TMPFILE_)) lookup = 0;
                follow = !(fl & O_NOFOLLOW_);
                if (!(fl & (c->o_accmode | ~c->open_read_bits)))   /* predict.question */
                    asked = fl & c->o_directory ? ASK_READDIR : ASK_READ;
            } else if (where == L_ATFLAGS) {
                follow = !(args[c->lk_i[nr]] & AT_SYMLINK_NOFOLLOW_);
            } else if (where == L_ALWAYS) {
                follow = 0;
            }
            if (lookup) {
                struct answer *a = find_answer(c, c->raw, len, follow, asked);
                if (!a) goto python;   /* Python looks it up, and teaches us */
                int64_t rval = a->rval;
                if (a->state == A_OPENS && (rval = lowest_free_fd(c, pid)) < 0)
                    a = NULL;          /* not known for this process: its exit stop */
                if (a && a->state != A_EXIT) {
                    struct rec *r = add_rec(c, pid, nr, now_ns(), args, c->raw, len);
                    r->rval = rval;
                    r->flags = F_RESULT | F_PREDICTED | (rval < 0 ? F_ERR : 0);
                    done_rec(c, r);
                    release(c, p);
                    ptrace(PTRACE_CONT, pid, 0, 0);
                    return 0;
                }
            }
        }
        if (!c->needs_exit[nr]) {
            done_rec(c, add_rec(c, pid, nr, now_ns(), args, c->raw, len));
            release(c, p);
            ptrace(PTRACE_CONT, pid, 0, 0);
            return 0;
        }
        memcpy(p->raw, c->raw, len);
    }
    p->pid = pid;
    p->nr = nr;
    p->t_ns = now_ns();
    memcpy(p->args, args, sizeof p->args);
    if (ptrace(PTRACE_SYSCALL, pid, 0, 0) < 0) goto python;
    put_pending(c, p);
    return 0;
python:
    release(c, p);
    return R_STOP;
}

static int on_exit_stop(struct ctx *c, int pid, struct pending *p) {
    struct info in;
    memset(&in, 0, sizeof in);
    if (ptrace(PTRACE_GET_SYSCALL_INFO_, pid, (void *)sizeof in, &in) < 0) {
        release(c, p);
        return R_STOP;                 /* gone (killed): its exit status follows */
    }
    struct rec *r = add_rec(c, pid, p->nr, p->t_ns, p->args, p->raw, p->rawlen);
    r->rval = in.exit.rval;
    r->flags = F_RESULT | (in.exit.is_error ? F_ERR : 0);
    int held = 0;
    if (c->kind[p->nr] == K_WAIT4) {
        if (!in.exit.is_error && in.exit.rval > 0 && p->args[1]) {
            uint32_t st;
            if (read_mem(pid, p->args[1], (char *)&st, 4) == 4) {
                r->status = st;
                r->flags |= F_STATUS;
            }
        }
    } else if (in.exit.is_error && in.exit.rval == -ENOENT) {
        held = lexical_differs(p->raw, p->rawlen) || something_there(pid, p->raw, p->rawlen);
    }
    release(c, p);
    if (held) {
        r->flags |= F_HELD;
        done_rec(c, r);
        return R_HELD;
    }
    done_rec(c, r);
    ptrace(PTRACE_CONT, pid, 0, 0);
    return 0;
}

static void simple_rec(struct ctx *c, int pid, int nr, int64_t rval, uint64_t a0, uint64_t a1,
                       uint64_t a2, uint64_t a3) {
    uint64_t args[6] = {a0, a1, a2, a3, 0, 0};
    struct rec *r = add_rec(c, pid, nr, now_ns(), args, "", 0);
    r->rval = rval;
    done_rec(c, r);
}

static int fp_handle_known(struct ctx *c, int pid, int status);

/* tracer._on_fork: the child is a tracee from now on; its first stop, if it
   came before this event, is handled now. */
static void on_fork(struct ctx *c, int pid, int event) {
    unsigned long child = 0;
    ptrace(PTRACE_GETEVENTMSG, pid, 0, &child);
    if (clone_flags(pid) & CLONE_FILES_) {
        /* Parent and child share one fd table (threads do): neither one's
           next fd can be told from its stop any more (lowest_free_fd). */
        set_add(c->shared, pid, 0);
        set_add(c->shared, (int)child, 0);
    }
    if (set_find(c->rings, pid)) set_add(c->rings, (int)child, 0);
    long nspid, tgid;
    status_ids((int)child, &nspid, &tgid);
    fp_add(c, (int)child);
    simple_rec(c, pid, NR_FORK, 0, child, nspid, tgid, event);
    ptrace(PTRACE_CONT, pid, 0, 0);
    int st;
    if (set_take(c->unborn, (int)child, &st))
        fp_handle_known(c, (int)child, st);
}

/* tracer._on_signal: a notable signal is an event; none stops the build. */
static void on_signal(struct ctx *c, int pid, int sig) {
    if (sig > 0 && sig < 64 && (c->notable >> sig & 1))
        simple_rec(c, pid, NR_SIGNAL, 0, sig, 0, 0, 0);
    if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
        sig = 0;
    ptrace(PTRACE_CONT, pid, 0, (void *)(long)sig);
}

static int fp_handle_known(struct ctx *c, int pid, int status) {
    if (!WIFSTOPPED(status)) {
        /* tracer._on_exit */
        fp_exited(c, pid);
        simple_rec(c, pid, NR_EXIT, status, 0, 0, 0, 0);
        return c->live > 0 ? 0 : R_DONE;
    }
    int r = 0, event = status >> 16, sig = WSTOPSIG(status);
    if (event == EVENT_SECCOMP) {
        r = R_STOP;
        if (!c->all_slow && !(c->nwatched && watched(c, pid)))
            r = on_entry(c, pid);
    } else if (sig == (SIGTRAP | 0x80)) {
        struct pending *p = take_pending(c, pid);
        r = p ? on_exit_stop(c, pid, p) : R_STOP;
    } else if (event == EVENT_FORK || event == EVENT_VFORK || event == EVENT_CLONE) {
        on_fork(c, pid, event);
    } else if (event == EVENT_EXEC) {
        forget(c, pid);
        set_take(c->shared, pid, NULL);    /* exec unshares the fd table (fs/exec.c) */
        simple_rec(c, pid, NR_EXEC_DONE, 0, 0, 0, 0, 0);
        ptrace(PTRACE_CONT, pid, 0, 0);
    } else if (event) {
        ptrace(PTRACE_CONT, pid, 0, 0);  /* PTRACE_EVENT_STOP and the like */
    } else {
        on_signal(c, pid, sig);
    }
    if (r != R_STOP) c->stops++;
    return r;
}

/* A stop (or exit) from waitpid: handled here (0), or R_STOP / R_HELD for
   Python, R_DONE when the last tracee exited. A stop of a pid no fork event
   named yet is kept until one does; an exit of a pid that is not a tracee
   (the sandbox helper) is not ours. */
int fp_handle(struct ctx *c, int pid, int status) {
    if (!set_find(c->known, pid)) {
        if (WIFSTOPPED(status)) set_add(c->unborn, pid, status);
        return 0;
    }
    return fp_handle_known(c, pid, status);
}

/* The loop: until a stop is Python's (R_STOP, in pid and status), a HELD record
   (R_HELD), records wait and no stop came for idle_ns, the oldest is flush_ns
   old or the buffer is nearly full (R_IDLE), the last tracee exited (R_DONE), no child is left (R_NOCHILD)
   or a signal came (R_INTR: Python runs its handlers). Polls for spin_ns
   before blocking, as tracer._wait_any does. Runs without the GIL (ctypes). */
int fp_run(struct ctx *c, int *pid, int *status) {
    for (;;) {
        int st, p = 0;
        if (c->used) {
            /* Records wait for Python: it makes them events now if no
               tracee waits for us (the time the loop would poll anyway),
               at once under replay's lockstep or when the buffer could not
               take another record. */
            if (c->lockstep || c->cap - c->used < 2 * (sizeof(struct rec) + PATH_CAP + 8)
                || (c->flush_ns && now_ns() - c->first_ns > c->flush_ns))
                return R_IDLE;
            p = poll_for(c->idle_ns, &st);
            if (p < 0 && errno == ECHILD) return R_NOCHILD;
            if (p == 0) return R_IDLE;
        }
        if (p <= 0 && c->spin_ns) {
            p = poll_for(c->spin_ns, &st);
            if (p < 0 && errno == ECHILD) return R_NOCHILD;
            if (p < 0 && errno != EINTR) return -errno;
        }
        if (p <= 0) {
            p = waitpid(-1, &st, __WALL);
            if (p < 0) {
                if (errno == ECHILD) return R_NOCHILD;
                if (errno == EINTR) return R_INTR;
                return -errno;
            }
        }
        int r = fp_handle(c, p, st);
        if (r == R_HELD || r == R_DONE) return r;
        if (r == R_STOP) {
            *pid = p;
            *status = st;
            return R_STOP;
        }
    }
}
