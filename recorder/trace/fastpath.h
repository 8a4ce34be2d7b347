/* fastpath.h: what the three files of nixrec's C tracer loop share (the
   constants Python's fastpath.py mirrors, the record layout, the loop's
   state in struct ctx). fastpath.c has the overview. */
#ifndef NIXREC_FASTPATH_H
#define NIXREC_FASTPATH_H

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


/* Shared between fastpath.c, fp_state.c and fp_read.c; not exported. */
#define FP_HIDDEN __attribute__((visibility("hidden")))

/* fp_state.c: the answers, the calls in flight, the pid sets. */
FP_HIDDEN struct answer *find_answer(struct ctx *c, const char *raw, uint32_t len,
                                     int follow, int asked);
FP_HIDDEN struct pending *take_pending(struct ctx *c, int pid);
FP_HIDDEN void put_pending(struct ctx *c, struct pending *p);
FP_HIDDEN void release(struct ctx *c, struct pending *p);
FP_HIDDEN void forget(struct ctx *c, int pid);
FP_HIDDEN struct pnode *set_find(struct pnode **set, int pid);
FP_HIDDEN void set_add(struct pnode **set, int pid, int status);
FP_HIDDEN int set_take(struct pnode **set, int pid, int *status);
FP_HIDDEN void set_free(struct pnode **set);
FP_HIDDEN int watched(struct ctx *c, int pid);
void fp_add(struct ctx *c, int pid);
void fp_exited(struct ctx *c, int pid);

/* fp_read.c: the stopped tracee's memory and /proc, the clock, waiting. */
FP_HIDDEN ssize_t read_mem(int pid, uint64_t addr, char *buf, size_t size);
FP_HIDDEN long read_cstr(struct ctx *c, int pid, uint64_t addr);
FP_HIDDEN int64_t now_ns(void);
FP_HIDDEN int poll_for(int64_t ns, int *st);
FP_HIDDEN int lexical_differs(const char *raw, uint32_t len);
FP_HIDDEN int something_there(int pid, const char *raw, uint32_t len);
FP_HIDDEN int lowest_free_fd(struct ctx *c, int pid);
FP_HIDDEN void status_ids(int pid, long *nspid, long *tgid);
FP_HIDDEN uint64_t clone_flags(int pid);

/* fastpath.c: the records for Python. */
FP_HIDDEN struct rec *add_rec(struct ctx *c, int pid, int nr, int64_t t_ns, const uint64_t *args,
                              const char *raw, uint32_t rawlen);
FP_HIDDEN void done_rec(struct ctx *c, struct rec *r);

#endif
