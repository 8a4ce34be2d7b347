"""THE syscall table: every call nixrec records, with its number, class and
the role of each argument. The seccomp filter, the tracer's decoder and the
analysis all read this table; a new syscall is one row here.

x86_64 only for now (numbers from the kernel's syscall_64.tbl). nixrec keeps
its own rows for what python-ptrace's table has not: each call's class and
argument roles, and fchmodat2, which python-ptrace 0.9.9 lacks (it has openat2,
clone3 and faccessat2). The numbers agree with python-ptrace's x86_64 table
(tests/test_linux.py); they are not read from it because analysis imports
this table, and python-ptrace's syscall package takes ~0.1 s to import
(docs/performance.md). `nixrec events --syscall` names the other calls
with python-ptrace's table.
"""

import errno as _errno

ARCH = "x86_64"
AUDIT_ARCH_X86_64 = 0xC000003E

# Classes: what kind of thing the call touches (analysis groups by these).
FILE, EXEC, PROC, NET, OUT = "file", "exec", "proc", "net", "out"
# Descriptors: where data goes between processes (pipes, socketpairs, dups).
FD = "fd"

# Argument roles used by the decoder (recorder/trace/decode.py):
#   dirfd/path      a path relative to dirfd (AT_FDCWD = the process's cwd)
#   dirfd2/path2    the second path of rename/link
#   target          a symlink target: a string, not resolved
#   flags / mode    an int worth keeping (open flags, access or chmod mode)
#   atflags         AT_* flags (AT_EMPTY_PATH: the call is about dirfd itself)
#   fd              a file descriptor the call acts on
#   argv/envp       exec vectors; addr/addrlen a sockaddr; msg a msghdr;
#   mmsg            an mmsghdr vector; buf a data buffer (len in `count`);
#   iov/iovcnt      a write vector; how an open_how struct (openat2)
#   wstatus         an int* filled in by wait4; sfamily/stype socket() args
#   fds             an int[2] the call fills in (pipe, pipe2, socketpair)
#   pid/sig         the target and signal of kill-family calls
#   skip            an argument nixrec does not decode
#
# Each row: nr, name, class, roles, needs_exit. needs_exit=False means the
# result is not recorded and the tracer lets the call run after the entry stop
# (output writes: what was written is known at entry; waiting costs a stop).
_ROWS = [
    (2, "open", FILE, ("path", "flags", "mode"), True),
    (85, "creat", FILE, ("path", "mode"), True),
    (257, "openat", FILE, ("dirfd", "path", "flags", "mode"), True),
    (437, "openat2", FILE, ("dirfd", "path", "how", "skip"), True),
    (4, "stat", FILE, ("path", "skip"), True),
    (6, "lstat", FILE, ("path", "skip"), True),
    (262, "newfstatat", FILE, ("dirfd", "path", "skip", "atflags"), True),
    (332, "statx", FILE, ("dirfd", "path", "atflags", "skip", "skip"), True),
    (21, "access", FILE, ("path", "mode"), True),
    (269, "faccessat", FILE, ("dirfd", "path", "mode"), True),
    (439, "faccessat2", FILE, ("dirfd", "path", "mode", "atflags"), True),
    # readlink at entry only, and only when asked (OPTIONAL below): gcc and
    # friends readlink every path component (157k of hello's 181k calls fail
    # with EINVAL, "not a link"); the exit stop would double their cost for a
    # result nothing uses (issue 6).
    (89, "readlink", FILE, ("path", "skip", "skip"), False),
    (267, "readlinkat", FILE, ("dirfd", "path", "skip", "skip"), False),
    (83, "mkdir", FILE, ("path", "mode"), True),
    (258, "mkdirat", FILE, ("dirfd", "path", "mode"), True),
    (87, "unlink", FILE, ("path",), True),
    (263, "unlinkat", FILE, ("dirfd", "path", "atflags"), True),
    (84, "rmdir", FILE, ("path",), True),
    (82, "rename", FILE, ("path", "path2"), True),
    (264, "renameat", FILE, ("dirfd", "path", "dirfd2", "path2"), True),
    (316, "renameat2", FILE, ("dirfd", "path", "dirfd2", "path2", "flags"), True),
    (86, "link", FILE, ("path", "path2"), True),
    (265, "linkat", FILE, ("dirfd", "path", "dirfd2", "path2", "atflags"), True),
    (88, "symlink", FILE, ("target", "path2"), True),
    (266, "symlinkat", FILE, ("target", "dirfd2", "path2"), True),
    (80, "chdir", FILE, ("path",), True),
    (81, "fchdir", FILE, ("fd",), True),
    (90, "chmod", FILE, ("path", "mode"), True),
    (91, "fchmod", FILE, ("fd", "mode"), True),
    (268, "fchmodat", FILE, ("dirfd", "path", "mode"), True),
    (452, "fchmodat2", FILE, ("dirfd", "path", "mode", "atflags"), True),
    (92, "chown", FILE, ("path", "skip", "skip"), True),
    (94, "lchown", FILE, ("path", "skip", "skip"), True),
    (260, "fchownat", FILE, ("dirfd", "path", "skip", "skip", "atflags"), True),
    (76, "truncate", FILE, ("path", "skip"), True),
    (132, "utime", FILE, ("path", "skip"), True),
    (235, "utimes", FILE, ("path", "skip"), True),
    (280, "utimensat", FILE, ("dirfd", "path", "skip", "atflags"), True),
    (133, "mknod", FILE, ("path", "mode", "skip"), True),
    (259, "mknodat", FILE, ("dirfd", "path", "mode", "skip"), True),
    (188, "setxattr", FILE, ("path",), True),
    (189, "lsetxattr", FILE, ("path",), True),
    (190, "fsetxattr", FILE, ("fd",), True),
    # Reading xattrs: stopped on only where the Nix followed refuses them
    # (2.24 on: ENOTSUP; OPTIONAL "xattr-read", chosen by the plan). 2.26.3
    # lets *listxattr through (verified: it returns 0 there).
    (191, "getxattr", FILE, ("path",), True),
    (192, "lgetxattr", FILE, ("path",), True),
    (193, "fgetxattr", FILE, ("fd",), True),
    (161, "chroot", FILE, ("path",), True),
    (165, "mount", FILE, ("skip", "path", "skip", "flags"), True),
    (155, "pivot_root", FILE, ("path", "path2"), True),
    (59, "execve", EXEC, ("path", "argv", "envp"), True),
    (322, "execveat", EXEC, ("dirfd", "path", "argv", "envp", "atflags"), True),
    (61, "wait4", PROC, ("skip", "wstatus", "skip", "skip"), True),
    # Reaching other processes: refused by the PID namespace (ESRCH) for
    # anything outside the build; recorded so the attempt is in the trace.
    (62, "kill", PROC, ("pid", "sig"), True),
    (200, "tkill", PROC, ("pid", "sig"), True),
    (234, "tgkill", PROC, ("skip", "pid", "sig"), True),
    (101, "ptrace", PROC, ("flags", "pid"), True),
    (272, "unshare", PROC, ("flags",), True),
    # Recorded for the C loop: a process with an io_uring may get fds from the
    # kernel's side, so its opens are no longer answered at entry (fastpath.c).
    (425, "io_uring_setup", PROC, ("skip", "skip"), True),
    (41, "socket", NET, ("sfamily", "stype", "skip"), True),
    (42, "connect", NET, ("fd", "addr", "addrlen"), True),
    (49, "bind", NET, ("fd", "addr", "addrlen"), True),
    (44, "sendto", NET, ("fd", "buf", "count", "skip", "addr", "addrlen"), True),
    (46, "sendmsg", NET, ("fd", "msg", "skip"), True),
    (307, "sendmmsg", NET, ("fd", "mmsg", "count", "skip"), True),
    # Data flow between processes (analysis/fdflow.py): a pipe's two fds and
    # the object they are (`pipe:[ino]`, read from /proc at the exit stop),
    # and which fd a dup made of which. Rare calls but for dup2, which the C
    # loop records with its result (fastpath.K_ARGS): a shell's every
    # redirection. close() is not recorded (every process makes thousands):
    # a later open, pipe or dup onto the same fd number replaces it.
    (22, "pipe", FD, ("fds",), True),
    (293, "pipe2", FD, ("fds", "flags"), True),
    (53, "socketpair", FD, ("skip", "flags", "skip", "fds"), True),
    (32, "dup", FD, ("fd",), True),
    (33, "dup2", FD, ("fd", "skip"), True),
    (292, "dup3", FD, ("fd", "skip", "flags"), True),
    (1, "write", OUT, ("fd", "buf", "count"), False),
    (20, "writev", OUT, ("fd", "iov", "iovcnt"), False),
]


class Syscall:
    """One row of the table, as the tracer and the filter use it."""

    __slots__ = ("nr", "name", "cls", "roles", "needs_exit", "i_path", "i_dirfd", "i_path2",
                 "i_dirfd2", "i_flags", "i_atflags", "i_fd", "i_target", "i_how",
                 "i_pid", "i_sig", "i_fds", "only_path")

    def __init__(self, nr, name, cls, roles, needs_exit):
        self.nr, self.name, self.cls = nr, name, cls
        self.roles, self.needs_exit = roles, needs_exit
        # The tracer reads these at every stop: argument indices, looked up once.
        self.i_path, self.i_dirfd = self.arg("path"), self.arg("dirfd")
        self.i_path2, self.i_dirfd2 = self.arg("path2"), self.arg("dirfd2")
        self.i_flags = self.arg("flags") if self.arg("flags") is not None else self.arg("mode")
        self.i_atflags, self.i_fd = self.arg("atflags"), self.arg("fd")
        self.i_target, self.i_how = self.arg("target"), self.arg("how")
        self.i_pid, self.i_sig = self.arg("pid"), self.arg("sig")
        self.i_fds = self.arg("fds")
        # A file call that names one path and has nothing else to read (open,
        # stat, access, mkdir, unlink...): most of a build's calls. The
        # decoder stops early for them; the C loop handles them (fastpath.py).
        self.only_path = (cls == FILE and self.i_path is not None and self.i_path2 is None
                          and self.i_target is None and self.i_fd is None
                          and self.i_how is None and self.i_pid is None)

    def arg(self, role):
        """Index of the argument with this role, or None."""
        try:
            return self.roles.index(role)
        except ValueError:
            return None


BY_NR = {r[0]: Syscall(*r) for r in _ROWS}
BY_NAME = {s.name: s for s in BY_NR.values()}

# Calls recorded only when asked (`nixrec record --readlink`): realpath()
# readlinks every component of every path it canonicalizes, which made a third
# of GNU hello's stops and half its events, all about paths whose opens and
# stats are recorded anyway; without them the recording is 24 % faster
# (docs/performance.md). name of the group -> its calls.
OPTIONAL = {"readlink": ("readlink", "readlinkat"),
            "xattr-read": ("getxattr", "lgetxattr", "fgetxattr")}


def recorded(extra=()) -> list:
    """-> the names of the calls a recording stops on: the table but for the
    OPTIONAL groups not named in `extra`. Kept in the trace header ("calls")."""
    off = {n for group, names in OPTIONAL.items() if group not in extra for n in names}
    return sorted(n for n in BY_NAME if n not in off)


def table_of(names) -> dict:
    """-> nr -> Syscall for these call names (a trace header's "calls"); a
    trace from before the header said (no list) stopped on the whole table."""
    if names is None:
        return dict(BY_NR)
    return {BY_NAME[n].nr: BY_NAME[n] for n in names if n in BY_NAME}

# Calls the sandbox's seccomp rules refuse (nix-sandbox.md §2.7): chmod-family
# with S_ISUID/S_ISGID -> EPERM, *setxattr (and since 2.24 *getxattr)
# -> ENOTSUP. Name -> arg index of mode.
SETUID_CHMOD = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2}
XATTR_SET = ("setxattr", "lsetxattr", "fsetxattr")
# Refused since Nix 2.24; a recording stops on them only then (OPTIONAL).
XATTR_READ = OPTIONAL["xattr-read"]
S_ISUID, S_ISGID = 0o4000, 0o2000

# Output writes worth a stop: only to fd 1 and 2 (the build log). The filter
# checks the fd in BPF so a compiler writing object files never stops.
OUTPUT_FDS = (1, 2)

# Calls whose fstat-style form (AT_EMPTY_PATH with an empty path) names no
# path: the filter lets them through without a stop (issue 6). name -> atflags arg.
EMPTY_PATH_SKIP = {"newfstatat": 3, "statx": 2}
AT_EMPTY_PATH = 0x1000
AT_FDCWD = -100

# Calls that only look a path up and change nothing (recorder/trace/predict.py can
# know their answer at entry, issue 6): name -> (where the "do not follow a
# final symlink" bit is: "oflags" O_NOFOLLOW / "atflags" AT_SYMLINK_NOFOLLOW in
# that argument, "always" for lstat, None: always followed; argument index).
# open/openat count only without O_CREAT or O_TMPFILE (they may create).
LOOKUPS = {"open": ("oflags", 1), "openat": ("oflags", 2), "stat": (None, None),
           "lstat": ("always", None), "newfstatat": ("atflags", 3),
           "statx": ("atflags", 2), "access": (None, None), "faccessat": (None, None),
           "faccessat2": ("atflags", 3)}
# Of those, the ones whose success is the result 0 whatever the file's mode
# (an open's result is an fd: fastpath.c works it out, see OPEN_READ_BITS).
LOOKUP_ZERO = frozenset(("stat", "lstat", "newfstatat", "statx"))
# And the ones that ask about permissions: name -> index of the mode argument.
LOOKUP_ACCESS = {"access": 1, "faccessat": 2, "faccessat2": 2}
# x86_64 open flags (asm-generic/fcntl.h), as the build passes them.
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0o1, 0o2, 0o100, 0o1000
O_TMPFILE, O_NOFOLLOW = 0o20000000, 0o400000
O_ACCMODE, O_DIRECTORY = 0o3, 0o200000
# A plain read-only open: O_RDONLY with no other bits than these. Its success
# in a fixed tree is known at entry (predict.py opens the file the same way),
# and its result then is the lowest fd the process has free (fastpath.c reads
# /proc/PID/fd): no other bit changes which fd it gets or whether it opens a
# regular file or directory (O_CLOEXEC, O_LARGEFILE, O_NOCTTY, O_NONBLOCK).
O_CLOEXEC = 0o2000000          # also SOCK_CLOEXEC (socketpair's type)
OPEN_READ_BITS = O_CLOEXEC | 0o100000 | 0o400 | 0o4000 | O_NOFOLLOW | O_DIRECTORY
AT_SYMLINK_NOFOLLOW = 0x100

# Calls that change what a process is, by class, for analysis.
WRITE_CALLS = frozenset(("creat", "mkdir", "mkdirat", "unlink", "unlinkat", "rmdir",
                         "rename", "renameat", "renameat2", "link", "linkat", "symlink",
                         "symlinkat", "chmod", "fchmodat", "fchmodat2", "chown", "lchown",
                         "fchownat", "truncate", "utime", "utimes", "utimensat", "mknod",
                         "mknodat", "setxattr", "lsetxattr"))
STAT_CALLS = frozenset(("stat", "lstat", "newfstatat", "statx", "access", "faccessat",
                        "faccessat2", "readlink", "readlinkat"))
OPEN_CALLS = frozenset(("open", "openat", "openat2"))
FD_CALLS = frozenset(s.name for s in BY_NR.values() if s.cls == FD)
# Of those, the ones that fill in an int[2] of fds.
FD_PAIR_CALLS = frozenset(s.name for s in BY_NR.values() if s.i_fds is not None)


_ERRNO_NAMES = _errno.errorcode


def errno_name(n: int) -> str:
    name = _ERRNO_NAMES.get(n)
    return name if name is not None else f"E{n}"
