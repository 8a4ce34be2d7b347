"""What a lookup call will answer, known at its entry stop (issue 6).

Most of a build's calls that stop twice are probes: cc1 looks for every header
in each include directory, ld.so for every library in each library directory,
gcc for its own programs. On GNU hello, 96k of the 160k calls with an exit
stop were stat/open/access calls that failed with ENOENT in /usr or /nix/store.

When the path lies in a tree the build cannot change (an input store path or a
sandbox path: all are bind-mounted read-only, sandbox/steps.py), the answer is fixed
before the call runs. The tracer then looks the path up itself, from the
build's own root with openat2(RESOLVE_IN_ROOT) so that symlinks and ".." resolve
exactly as the kernel resolves them for the build, and with the build user's
file access ids (setfsuid), so that a directory the build may not search says
EACCES here too; it records the answer and lets the call run with no exit
stop. Only these answers are taken this way:

* the path does not exist (ENOENT), for every call in syscalls.LOOKUPS;
* it exists, for the stat family (syscalls.LOOKUP_ZERO), whose success is 0;
* the access family's answer (syscalls.LOOKUP_ACCESS), 0 or its errno, asked
  of the file with faccessat2(AT_EACCESS) as the build user (whose real and
  effective ids are the same, and who holds no capability);
* a plain read-only open (syscalls.OPEN_READ_BITS) of a regular file or a
  directory succeeds (OPENS) when the tracer, as the build user, can open it
  the same way. Its result is an fd, the lowest one the process has free when
  it makes the call: the C loop (fastpath.c) reads that from /proc/PID/fd at
  the entry stop, for a process whose fd table no other one shares; the
  Python loop lets the call run to its exit stop.

Anything else (an error other than ENOENT, a relative path, a path outside the
fixed trees) keeps its exit stop. The build's
supplementary groups are the recorder's own (setgroups is denied in its user
namespace), so the thread's groups are already the right ones.

The trees cannot change while the build runs, so an answer holds for the
whole build: each path is looked up once (GNU hello: 147k answers from about
2,000 lookups; every cc1 probes the same include directories). `fixed(path)`
says the same to the tracer, which may then remember what it found at a path.
"""

import errno
import os
import stat

from nixrec.recorder.sandbox import linux
from nixrec.recorder.trace import syscalls

# The tracer's own lookup: a path fd, nothing opened for reading.
_FOLLOW = os.O_PATH | os.O_CLOEXEC
_NOFOLLOW = _FOLLOW | os.O_NOFOLLOW
_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_MAX_KNOWN = 200_000          # answers kept; past this the cache starts over
# The answer "this open succeeds": its fd is known only at the call's stop.
OPENS = ("fd", None)


class Predictor:
    """Answers lookups in the fixed trees of one sandbox."""

    def __init__(self, fixed_roots, ids):
        # "/usr/" etc.: a path is in a tree if it is the root or below it.
        self.roots = tuple(sorted({r.rstrip("/") + "/" for r in fixed_roots if r != "/"}))
        self.ids = ids               # (uid, gid) of the build user, as the host sees them
        self.root_fd = None
        self.answered = 0            # answers the tracer applied (it counts them, either loop)
        self._known = {}             # question -> answer, or None: let the kernel tell

    def question(self, sc, args, raw):
        """-> (raw path, follow?, what is asked) if this call's answer may be
        known now, else None. What is asked: "stat", "open" (only ENOENT can
        be known), "read" / "readdir" (a plain read-only open, without and
        with O_DIRECTORY: its success too), or an access mode."""
        if not raw or raw[0] != 0x2F or not self.roots:        # relative: keep the stop
            return None
        name = sc.name
        asked = "stat" if name in syscalls.LOOKUP_ZERO else "open"
        if name in syscalls.LOOKUP_ACCESS:
            asked = args[syscalls.LOOKUP_ACCESS[name]] & 7      # R_OK|W_OK|X_OK
        where, i = syscalls.LOOKUPS[name]
        if where == "oflags":
            flags = args[i]
            if flags & (syscalls.O_CREAT | syscalls.O_TMPFILE):
                return None
            if not flags & (syscalls.O_ACCMODE | ~syscalls.OPEN_READ_BITS):
                asked = "readdir" if flags & syscalls.O_DIRECTORY else "read"
            return raw, not flags & syscalls.O_NOFOLLOW, asked
        if where == "atflags":
            return raw, not args[i] & syscalls.AT_SYMLINK_NOFOLLOW, asked
        return raw, where != "always", asked

    def answer(self, pid, question, path):
        """-> (result, errno name) the call will return, OPENS (it succeeds,
        with the process's lowest free fd), or None to let it tell.

        `path` is the decoded path (for the fixed-tree test); the lookup
        itself walks the raw bytes the process passed."""
        try:
            return self._known[question]
        except KeyError:
            return self._look_up(pid, question, path)

    def _look_up(self, pid, key, path):
        # The raw path is absolute (question()), so it names one place: an
        # answer, or "not in a fixed tree", holds for the whole build.
        if self.root_fd is None and not self._open_root(pid):
            return None
        if len(self._known) >= _MAX_KNOWN:
            self._known.clear()
        if not self.fixed(path):
            answer = None
        else:
            answer = self._resolve(*key)
        self._known[key] = answer
        return answer

    def fixed(self, path) -> bool:
        """Is `path` (absolute, as decoded) in a tree the build cannot change?"""
        return bool(path) and (path + "/").startswith(self.roots)

    def _resolve(self, raw, follow, asked):
        old = linux.set_fs_ids(*self.ids)
        try:
            fd = linux.openat2(self.root_fd, raw, _FOLLOW if follow else _NOFOLLOW, _RESOLVE)
            if fd < 0:
                # Only ENOENT: another failure (EACCES on the way, ENOTDIR,
                # ELOOP) is the kernel's to tell, at the exit stop.
                return (-1, "ENOENT") if fd == -errno.ENOENT else None
            try:
                if asked == "stat":
                    return 0, None
                if asked == "open":
                    return None
                if asked in ("read", "readdir"):
                    return self._opens(fd, raw, follow, asked == "readdir")
                r = linux.access_fd(fd, asked)
                if r in (-errno.ENOSYS, -errno.EINVAL):
                    return None       # a kernel before 5.8: no faccessat2 to ask
                return (0, None) if r == 0 else (-1, syscalls.errno_name(-r))
            finally:
                os.close(fd)
        finally:
            linux.restore_fs_ids(old)

    def _opens(self, fd, raw, follow, directory):
        """OPENS if the build's plain read-only open of `raw` will succeed,
        else None (the kernel tells: EACCES, ENOTDIR, ELOOP...). Only a
        regular file or a directory is opened here: a fifo or a device could
        block or act on being opened."""
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return None
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
        if directory:
            flags |= os.O_DIRECTORY
        if not follow:
            flags |= os.O_NOFOLLOW
        opened = linux.openat2(self.root_fd, raw, flags, _RESOLVE)
        if opened < 0:
            return None
        os.close(opened)
        return OPENS

    def _open_root(self, pid):
        # Every process of a build shares one root (none may chroot), the one
        # the builder pivoted into: its mount namespace is reached through it.
        try:
            self.root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY
                                   | os.O_CLOEXEC)
        except OSError:
            self.roots = ()          # no prediction for this build, never a failure
            return False
        return True

    def close(self):
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None
