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
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NR_MAX 512
#define PATH_CAP 8192              /* read_cstr may go a page past its 4096 limit */
#define STR_LIMIT 4096

/* Kinds of call (fastpath.py sets them from the syscall table). */
enum { K_NONE = 0, K_SIMPLE = 1, K_WAIT4 = 2, K_OUT = 3 };
/* Where a lookup's "do not follow" bit is (syscalls.LOOKUPS). */
enum { L_NONE = 0, L_OFLAGS = 1, L_ATFLAGS = 2, L_ALWAYS = 3, L_FOLLOW = 4 };
/* What a lookup asks (predict.question): an access mode 0..7, or these. */
#define ASK_STAT 8
#define ASK_OPEN 9
#define ASK_READ 10                /* a plain read-only open (syscalls.OPEN_READ_BITS) */
#define ASK_READDIR 11             /* ... with O_DIRECTORY */
/* Cached answers. */
enum { A_EXIT = 1, A_ANSWER = 2, A_OPENS = 3 };
/* fp_run's return codes. */
enum { R_STOP = 1, R_IDLE = 2, R_HELD = 3, R_NOCHILD = 4, R_INTR = 5, R_DONE = 6 };
/* Record flags. */
#define F_RESULT 1                 /* rval holds the result (else: no exit stop) */
#define F_ERR 2                    /* rval is -errno */
#define F_STATUS 4                 /* status holds wait4's status word */
#define F_HELD 8                   /* the tracee is still stopped: Python resumes it */
#define F_PREDICTED 16             /* answered at entry from the cache */

#define O_CREAT_ 0100
#define O_TMPFILE_ 020000000
#define O_NOFOLLOW_ 0400000
#define AT_SYMLINK_NOFOLLOW_ 0x100
#define AT_FDCWD_ (-100)
#define PTRACE_GET_SYSCALL_INFO_ 0x420e
#define EVENT_SECCOMP 7
#define EVENT_EXEC 4
#define EVENT_FORK 1
#define EVENT_VFORK 2
#define EVENT_CLONE 3
#define CLONE_FILES_ 0x400
/* Records of what is not a call: nr is one of these (fastpath.py: the same). */
#define NR_FORK 1001               /* args: child pid, its pid in the build, tgid, event */
#define NR_EXIT 1002               /* rval: the wait status */
#define NR_SIGNAL 1003             /* args[0]: the signal */
#define NR_EXEC_DONE 1004          /* PTRACE_EVENT_EXEC: the exec succeeded */

struct info {                      /* struct ptrace_syscall_info, x86_64 */
    uint8_t op;
    uint8_t pad[3];
    uint32_t arch;
    uint64_t ip, sp;
    union {
        struct { uint64_t nr, args[6]; uint32_t ret_data; } sc;
        struct { int64_t rval; uint8_t is_error; } exit;
    };
};

/* One record, then `rawlen` path bytes, padded to 8. fastpath.py: REC. */
struct rec {
    uint32_t size;
    int32_t pid;
    uint16_t nr;
    uint8_t flags;
    uint8_t pad;
    uint32_t rawlen;
    int64_t t_ns;
    uint64_t args[6];
    int64_t rval;
    uint32_t status;
    uint32_t pad2;
};

struct pending {                   /* a call between its entry and exit stops */
    struct pending *next;
    int pid;
    uint16_t nr;
    int64_t t_ns;
    uint64_t args[6];
    uint32_t rawlen;
    char raw[PATH_CAP];
};

struct answer {
    struct answer *next;
    uint64_t hash;
    uint8_t follow, asked, state;
    int64_t rval;
    uint32_t len;
    char raw[];
};

#define PBUCKETS 1024
#define ABUCKETS 65536
#define ANSWERS_MAX 200000         /* as predict._MAX_KNOWN: then start over */
#define WATCH_MAX 256

struct pnode {                     /* a pid in a set (known tracees, unborn stops) */
    struct pnode *next;
    int pid, status;
};

struct ctx {
    uint8_t kind[NR_MAX], i_path[NR_MAX], needs_exit[NR_MAX];
    int8_t i_dirfd[NR_MAX], lk_where[NR_MAX], lk_i[NR_MAX], lk_mode[NR_MAX], lk_stat[NR_MAX];
    int predict;
    int has_rdev;
    uint64_t rdev;
    int64_t spin_ns;
    int64_t idle_ns;               /* no stop for this long: records to Python (R_IDLE) */
    int64_t flush_ns;              /* the oldest record this old: to Python (R_IDLE) */
    int64_t first_ns;              /* when the oldest record waiting was made */
    int all_slow;                  /* replay: every stop to Python */
    int lockstep;                  /* replay: each record an event before the next stop */
    int slow_nr;                   /* replay: the target's call: to Python */
    int watched[WATCH_MAX];        /* replay: pids whose every stop goes to Python */
    int nwatched;
    long stops;                    /* stops handled here */
    uint64_t notable;              /* signals worth an event (bit n: signal n) */
    uint64_t open_read_bits, o_directory, o_accmode;   /* fp_set_open_read */
    struct pnode *shared[PBUCKETS];/* tracees whose fd table another one may share */
    struct pnode *rings[PBUCKETS]; /* tracees with an io_uring (or their children):
                                      the kernel may add fds to their table at any time */
    struct pnode *known[PBUCKETS]; /* the live tracees */
    struct pnode *unborn[PBUCKETS];/* stops of children whose fork event is still to come */
    long live;
    struct pending *pend[PBUCKETS];
    struct pending *free_pend;
    struct answer *ans[ABUCKETS];
    long nanswers;
    char raw[PATH_CAP];            /* the path just read */
    char *buf;                     /* the records for Python (fastpath.py reads them) */
    size_t cap, used;
    struct { struct rec r; char raw[PATH_CAP]; } rec;   /* the record being made */
};

static void set_free(struct pnode **set);

/* --- set-up (fastpath.py) --------------------------------------------------------- */
/* The interface's version: fastpath.py uses a library only when it says the
   same (a library left from another checkout is ignored, not misread). */
int fp_abi(void) { return 3; }

void *fp_new(char *buf, size_t cap) {
    struct ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slow_nr = -1;
    c->buf = buf;
    c->cap = cap;
    return c;
}

static void clear_answers(struct ctx *c) {
    for (int i = 0; i < ABUCKETS; i++) {
        struct answer *a = c->ans[i];
        while (a) { struct answer *n = a->next; free(a); a = n; }
        c->ans[i] = NULL;
    }
    c->nanswers = 0;
}

void fp_free(struct ctx *c) {
    if (!c) return;
    clear_answers(c);
    for (int i = 0; i < PBUCKETS; i++) {
        struct pending *p = c->pend[i];
        while (p) { struct pending *n = p->next; free(p); p = n; }
    }
    struct pending *p = c->free_pend;
    while (p) { struct pending *n = p->next; free(p); p = n; }
    set_free(c->known);
    set_free(c->unborn);
    set_free(c->shared);
    set_free(c->rings);
    free(c);
}

void fp_set_call(struct ctx *c, int nr, int kind, int i_path, int i_dirfd, int needs_exit,
                 int lk_where, int lk_i, int lk_mode, int lk_stat) {
    if (nr < 0 || nr >= NR_MAX) return;
    c->kind[nr] = kind;
    c->i_path[nr] = i_path;
    c->i_dirfd[nr] = i_dirfd;
    c->needs_exit[nr] = needs_exit;
    c->lk_where[nr] = lk_where;
    c->lk_i[nr] = lk_i;
    c->lk_mode[nr] = lk_mode;
    c->lk_stat[nr] = lk_stat;
}

void fp_set_options(struct ctx *c, int predict, int has_rdev, uint64_t rdev, int64_t spin_ns,
                    int64_t idle_ns) {
    c->idle_ns = idle_ns;
    c->predict = predict;
    c->has_rdev = has_rdev;
    c->rdev = rdev;
    c->spin_ns = spin_ns;
}

void fp_set_predict(struct ctx *c, int on) { c->predict = on; }

/* A busy build may stop again within idle_ns for a long while: records then
   wait here, where a SIGKILLed recorder loses them. Past flush_ns the loop
   returns (R_IDLE) so that they become events, and go to the trace file
   (tracefile/writer.py: a killed recorder loses at most ~0.1 s). */
void fp_set_flush(struct ctx *c, int64_t flush_ns) { c->flush_ns = flush_ns; }

void fp_set_slow(struct ctx *c, int all_slow, int slow_nr) {
    c->all_slow = all_slow;
    c->slow_nr = slow_nr;
}

/* Replay: before the loop handles a stop, every earlier record is an event.
   Its hook then sees each call as soon as it ran, and a divergence it finds
   there makes the very next stop Python's (all_slow), as without this loop. */
void fp_set_lockstep(struct ctx *c, int on) { c->lockstep = on; }

void fp_watch(struct ctx *c, const int *pids, int n) {
    if (n > WATCH_MAX) { c->all_slow = 1; n = 0; }   /* too many: all of them */
    memcpy(c->watched, pids, n * sizeof(int));
    c->nwatched = n;
}

long fp_stops(struct ctx *c) { return c->stops; }

/* --- the answers Python taught (predict.py), keyed as predict.question ----------- */
static uint64_t hash_of(const char *raw, uint32_t len, int follow, int asked) {
    uint64_t h = 1469598103934665603ULL;      /* FNV-1a */
    for (uint32_t i = 0; i < len; i++) { h ^= (uint8_t)raw[i]; h *= 1099511628211ULL; }
    h ^= (uint64_t)(follow * 16 + asked);
    h *= 1099511628211ULL;
    return h;
}

static struct answer *find_answer(struct ctx *c, const char *raw, uint32_t len,
                                  int follow, int asked) {
    uint64_t h = hash_of(raw, len, follow, asked);
    for (struct answer *a = c->ans[h % ABUCKETS]; a; a = a->next)
        if (a->hash == h && a->len == len && a->follow == follow && a->asked == asked
            && memcmp(a->raw, raw, len) == 0)
            return a;
    return NULL;
}

/* state A_EXIT: let the call run to its exit stop; A_ANSWER: rval is the answer. */
void fp_learn(struct ctx *c, const char *raw, uint32_t len, int follow, int asked,
              int state, int64_t rval) {
    if (find_answer(c, raw, len, follow, asked)) return;
    if (c->nanswers >= ANSWERS_MAX) clear_answers(c);
    struct answer *a = malloc(sizeof *a + len);
    if (!a) return;
    a->hash = hash_of(raw, len, follow, asked);
    a->follow = follow;
    a->asked = asked;
    a->state = state;
    a->rval = rval;
    a->len = len;
    memcpy(a->raw, raw, len);
    a->next = c->ans[a->hash % ABUCKETS];
    c->ans[a->hash % ABUCKETS] = a;
    c->nanswers++;
}

/* --- calls between entry and exit --------------------------------------------------- */
static struct pending *take_pending(struct ctx *c, int pid) {
    struct pending **pp = &c->pend[(unsigned)pid % PBUCKETS];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->pid == pid) {
            struct pending *p = *pp;
            *pp = p->next;
            return p;
        }
    return NULL;
}

static void put_pending(struct ctx *c, struct pending *p) {
    unsigned b = (unsigned)p->pid % PBUCKETS;
    p->next = c->pend[b];
    c->pend[b] = p;
}

static void release(struct ctx *c, struct pending *p) {
    p->next = c->free_pend;
    c->free_pend = p;
}

/* A process that exited or exec'd has no call in flight any more. */
static void forget(struct ctx *c, int pid) {
    struct pending *p = take_pending(c, pid);
    if (p) release(c, p);
}

/* --- sets of pids ------------------------------------------------------------------ */
static struct pnode *set_find(struct pnode **set, int pid) {
    for (struct pnode *n = set[(unsigned)pid % PBUCKETS]; n; n = n->next)
        if (n->pid == pid) return n;
    return NULL;
}

static void set_add(struct pnode **set, int pid, int status) {
    struct pnode *n = set_find(set, pid);
    if (!n) {
        if (!(n = malloc(sizeof *n))) return;
        n->pid = pid;
        n->next = set[(unsigned)pid % PBUCKETS];
        set[(unsigned)pid % PBUCKETS] = n;
    }
    n->status = status;
}

/* -> 1 and its status if pid was in the set (and is no more). */
static int set_take(struct pnode **set, int pid, int *status) {
    for (struct pnode **pp = &set[(unsigned)pid % PBUCKETS]; *pp; pp = &(*pp)->next)
        if ((*pp)->pid == pid) {
            struct pnode *n = *pp;
            *pp = n->next;
            if (status) *status = n->status;
            free(n);
            return 1;
        }
    return 0;
}

static void set_free(struct pnode **set) {
    for (int i = 0; i < PBUCKETS; i++) {
        struct pnode *n = set[i];
        while (n) { struct pnode *x = n->next; free(n); n = x; }
        set[i] = NULL;
    }
}

/* The builder, seized by Python: the first tracee. */
void fp_add(struct ctx *c, int pid) {
    if (!set_find(c->known, pid)) c->live++;
    set_add(c->known, pid, 0);
}

/* Python saw a tracee exit itself (replay's freeze, the drain after a kill). */
void fp_exited(struct ctx *c, int pid) {
    forget(c, pid);
    set_take(c->shared, pid, NULL);
    set_take(c->rings, pid, NULL);
    if (set_take(c->known, pid, NULL)) c->live--;
}

void fp_set_notable(struct ctx *c, uint64_t mask) { c->notable = mask; }

/* What makes an open "plain read-only" (syscalls.OPEN_READ_BITS): O_RDONLY
   (no accmode bit) and no bit outside `bits`; `directory` is O_DIRECTORY. */
void fp_set_open_read(struct ctx *c, uint64_t bits, uint64_t directory, uint64_t accmode) {
    c->open_read_bits = bits;
    c->o_directory = directory;
    c->o_accmode = accmode;
}

/* --- reading the tracee ------------------------------------------------------------- */
static ssize_t read_mem(int pid, uint64_t addr, char *buf, size_t size) {
    struct iovec local = {buf, size}, remote = {(void *)addr, size};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0) {
        size_t first = 4096 - (addr & 4095);
        if (first >= size) return 0;
        local.iov_len = remote.iov_len = first;
        n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n < 0) return 0;
    }
    return n;
}

/* linux.read_cstr, byte for byte the same answer: 256 bytes first, then a page
   at a time while shorter than the limit. -> length, or -1 for a NULL pointer. */
static long read_cstr(struct ctx *c, int pid, uint64_t addr) {
    if (addr == 0) return -1;
    size_t first = 4096 - (addr & 4095);
    if (first > 256) first = 256;
    ssize_t n = read_mem(pid, addr, c->raw, first);
    char *z = memchr(c->raw, 0, n);
    if (z) return z - c->raw;
    if ((size_t)n < first) return n;
    size_t out = n;
    while (out < STR_LIMIT) {
        size_t len = 4096 - ((addr + out) & 4095);
        if (out + len > PATH_CAP) return -2;           /* cannot happen: two pages at most */
        n = read_mem(pid, addr + out, c->raw + out, len);
        if (n <= 0) break;
        z = memchr(c->raw + out, 0, n);
        if (z) return z - c->raw;
        out += n;
    }
    return out;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* tracer._wait_any's poll: waitpid(WNOHANG) for up to ns. -> a pid, 0 (none
   came), or -1 (errno). */
static int poll_for(int64_t ns, int *st) {
    int64_t deadline = now_ns() + ns;
    for (;;) {
        int p = waitpid(-1, st, __WALL | WNOHANG);
        if (p != 0 && !(p < 0 && errno == EINTR)) return p;
        if (now_ns() >= deadline) return 0;
    }
}

/* --- records ----------------------------------------------------------------------------- */
/* A record is made in c->rec (then its path, if any) and appended to the
   buffer by done_rec, once it is whole. The loop returns to Python (R_IDLE)
   before the buffer could lack room for one more (run). */
static struct rec *add_rec(struct ctx *c, int pid, int nr, int64_t t_ns, const uint64_t *args,
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

static void done_rec(struct ctx *c, struct rec *r) {
    if (!c->used) c->first_ns = r->t_ns;   /* a call's entry: never later than now */
    memcpy(c->buf + c->used, r, sizeof *r + r->rawlen);
    c->used += r->size;
}

/* Python made the records into events: the buffer is empty again. */
size_t fp_used(struct ctx *c) { return c->used; }
void fp_clear(struct ctx *c) { c->used = 0; }


static int watched(struct ctx *c, int pid) {
    for (int i = 0; i < c->nwatched; i++)
        if (c->watched[i] == pid) return 1;
    return 0;
}

/* Is the path's lexical form (the one the trace keeps, tracer._explain_enoent
   looks at) possibly another place than the kernel's own walk? With a ".."
   component, or a trailing slash (which makes lstat follow a last symlink),
   Python explains the ENOENT itself. */
static int lexical_differs(const char *raw, uint32_t len) {
    if (len > 1 && raw[len - 1] == '/') return 1;
    for (uint32_t i = 0; i + 1 < len; i++)
        if ((i == 0 || raw[i - 1] == '/') && raw[i] == '.' && raw[i + 1] == '.'
            && (i + 2 == len || raw[i + 2] == '/'))
            return 1;
    return 0;
}

/* tracer._explain_enoent's first question, asked the same way: is anything at
   the path, seen from the process's root (absolute) or cwd (relative)? */
static int something_there(int pid, const char *raw, uint32_t len) {
    char p[PATH_CAP + 64];
    int n = snprintf(p, 64, raw[0] == '/' ? "/proc/%d/root" : "/proc/%d/cwd/", pid);
    memcpy(p + n, raw, len);
    p[n + len] = 0;
    struct stat st;
    return lstat(p, &st) == 0;
}

/* The fd a successful open by a stopped pid will return: the lowest one not
   open in its fd table (the kernel's rule, fs/file.c alloc_fd), from the
   entries of /proc/PID/fd; -1 when that is not certain: a table another
   process or thread may change meanwhile (shared, see on_fork), no free fd
   below the process's RLIMIT_NOFILE (the call fails EMFILE), no answer
   from /proc, or an io_uring that may open files from the kernel's side
   (rings, see on_entry). */
static int lowest_free_fd(struct ctx *c, int pid) {
    if (set_find(c->shared, pid) || set_find(c->rings, pid)) return -1;
    char p[64], buf[4096];
    uint64_t used[16] = {0};       /* fds 0..1023: the lowest free one is below */
    snprintf(p, sizeof p, "/proc/%d/fd", pid);
    int dfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n <= 0) {
            close(dfd);
            if (n < 0) return -1;
            break;
        }
        for (long off = 0; off < n;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type;
                     char name[]; } *d = (void *)(buf + off);
            off += d->reclen;
            if (d->name[0] < '0' || d->name[0] > '9') continue;     /* "." and ".." */
            long fd = strtol(d->name, NULL, 10);
            if (fd < 1024) used[fd / 64] |= 1ULL << (fd % 64);
        }
    }
    int fd = -1;
    for (int i = 0; i < 16 && fd < 0; i++)
        if (~used[i]) fd = i * 64 + __builtin_ctzll(~used[i]);
    struct rlimit rl;
    if (fd < 0 || prlimit(pid, RLIMIT_NOFILE, NULL, &rl) < 0 || (rlim_t)fd >= rl.rlim_cur)
        return -1;
    return fd;
}

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

/* tracer._status_ids: the pid inside the build's PID namespace (the last
   NSpid field) and the Tgid, from /proc/PID/status. */
static void status_ids(int pid, long *nspid, long *tgid) {
    char p[64], buf[4096];
    *nspid = pid;
    *tgid = 0;
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = 0;
    char *t = strstr(buf, "\nTgid:");
    if (t) *tgid = strtol(t + 6, NULL, 10);
    t = strstr(buf, "\nNSpid:");
    if (t) {
        char *end = strchr(t + 1, '\n'), *q = t + 7;
        long v = *nspid;
        for (;;) {
            char *e;
            long x = strtol(q, &e, 10);
            if (e == q || (end && e > end)) break;
            v = x;
            q = e;
        }
        *nspid = v;
    }
}

static void simple_rec(struct ctx *c, int pid, int nr, int64_t rval, uint64_t a0, uint64_t a1,
                       uint64_t a2, uint64_t a3) {
    uint64_t args[6] = {a0, a1, a2, a3, 0, 0};
    struct rec *r = add_rec(c, pid, nr, now_ns(), args, "", 0);
    r->rval = rval;
    done_rec(c, r);
}

static int fp_handle_known(struct ctx *c, int pid, int status);

/* The flags of the clone a fork event stop is in (the parent is inside the
   call): clone's first argument, clone3's first field; fork and vfork share
   nothing. Unreadable: CLONE_FILES, to be safe. */
static uint64_t clone_flags(int pid) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) < 0) return CLONE_FILES_;
    if (regs.orig_rax == SYS_clone) return regs.rdi;
    if (regs.orig_rax == SYS_clone3) {
        uint64_t flags;
        return read_mem(pid, regs.rdi, (char *)&flags, 8) == 8 ? flags : CLONE_FILES_;
    }
    return 0;
}

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
