/* fp_read.c: what nixrec's C tracer loop reads (fastpath.c has the
   overview): a stopped tracee's memory (process_vm_readv), its /proc entries
   (fd table, status, root), its registers at a fork, the clock, and the
   poll before a blocking waitpid. */
#include "fastpath.h"

/* --- reading the tracee ------------------------------------------------------------- */
FP_HIDDEN ssize_t read_mem(int pid, uint64_t addr, char *buf, size_t size) {
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
FP_HIDDEN long read_cstr(struct ctx *c, int pid, uint64_t addr) {
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

FP_HIDDEN int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* tracer._wait_any's poll: waitpid(WNOHANG) for up to ns. -> a pid, 0 (none
   came), or -1 (errno). */
FP_HIDDEN int poll_for(int64_t ns, int *st) {
    int64_t deadline = now_ns() + ns;
    for (;;) {
        int p = waitpid(-1, st, __WALL | WNOHANG);
        if (p != 0 && !(p < 0 && errno == EINTR)) return p;
        if (now_ns() >= deadline) return 0;
    }
}

/* Is the path's lexical form (the one the trace keeps, tracer._explain_enoent
   looks at) possibly another place than the kernel's own walk? With a ".."
   component, or a trailing slash (which makes lstat follow a last symlink),
   Python explains the ENOENT itself. */
FP_HIDDEN int lexical_differs(const char *raw, uint32_t len) {
    if (len > 1 && raw[len - 1] == '/') return 1;
    for (uint32_t i = 0; i + 1 < len; i++)
        if ((i == 0 || raw[i - 1] == '/') && raw[i] == '.' && raw[i + 1] == '.'
            && (i + 2 == len || raw[i + 2] == '/'))
            return 1;
    return 0;
}

/* tracer._explain_enoent's first question, asked the same way: is anything at
   the path, seen from the process's root (absolute) or cwd (relative)? */
FP_HIDDEN int something_there(int pid, const char *raw, uint32_t len) {
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
FP_HIDDEN int lowest_free_fd(struct ctx *c, int pid) {
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

/* tracer._status_ids: the pid inside the build's PID namespace (the last
   NSpid field) and the Tgid, from /proc/PID/status. */
FP_HIDDEN void status_ids(int pid, long *nspid, long *tgid) {
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

/* The flags of the clone a fork event stop is in (the parent is inside the
   call): clone's first argument, clone3's first field; fork and vfork share
   nothing. Unreadable: CLONE_FILES, to be safe. */
FP_HIDDEN uint64_t clone_flags(int pid) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) < 0) return CLONE_FILES_;
    if (regs.orig_rax == SYS_clone) return regs.rdi;
    if (regs.orig_rax == SYS_clone3) {
        uint64_t flags;
        return read_mem(pid, regs.rdi, (char *)&flags, 8) == 8 ? flags : CLONE_FILES_;
    }
    return 0;
}
