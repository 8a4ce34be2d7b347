"""The host's view of what the build could not reach: the trace summary's
`host_view` (docs/trace-format.md), the one owner of its shape.

A build that fails only in the sandbox fails on a difference between the
sandbox and the host it runs on. nixrec records on that host, so at the end
of `record` it stats there each distinct path that failed in the sandbox
(ENOENT, EACCES, EPERM, ENOTDIR, ELOOP) outside the build directory, /proc
and /sys, and the declared inputs and the outputs: whether the host has it, its
type and size, and (Debian, when `dpkg` answers in time) the package that
owns it. `why` and `deps` read it on any machine: a path the sandbox hid and
the host has is the difference; a path missing on the host too is a probe.

    see = Collector(build_dir)          # in the recorder's emit()
    see(ev) ...
    summary["host_view"] = probe(see.paths, inputs, outputs, truncated=see.full)
    view = HostView(summary)            # analysis: view.has(path) -> True/False/None
"""

import os
import shutil
import stat
import subprocess
import time

# The errnos of a lookup the sandbox may have caused (a hidden path, a
# read-only or unreadable one, a symlink out of it).
ERRNOS = frozenset(("ENOENT", "EACCES", "EPERM", "ENOTDIR", "ELOOP"))
# The kernel's interfaces: neither kept nor answered (HostView.has).
KERNEL = ("/proc/", "/sys/")
# Distinct paths kept: a big C build fails ~10k distinct lookups (GNU hello:
# see docs/trace-format.md); past this the view says `truncated`.
MAX_PATHS = 50000
# dpkg -S reads every package's file list once per call: a few hundred paths
# per call, and no more than this many seconds in all (a slow disk, a huge
# package database: the view then has no packages rather than a slow record).
DPKG_BATCH = 400
DPKG_SECONDS = 8.0

_TYPES = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "link"),
          (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
          (stat.S_ISSOCK, "socket"))


class Collector:
    """The distinct failed paths of a recording, as its events go by."""

    __slots__ = ("paths", "_skip", "full")

    def __init__(self, build_dir="/build"):
        self.paths = set()
        # The build's own directory, and the kernel's interfaces: /proc and
        # /sys show the host's kernel, not files a build could declare (the
        # Go and Java runtimes read /sys/kernel/mm/... at start and do without).
        self._skip = (build_dir.rstrip("/") + "/",) + KERNEL
        self.full = False

    def __call__(self, ev):
        if ev.errno not in ERRNOS:
            return
        for p in (ev.path, ev.args.get("link_target") if ev.args else None):
            if not p or not p.startswith("/") or p.startswith(self._skip) \
                    or p == self._skip[0][:-1]:
                continue
            if len(self.paths) >= MAX_PATHS:
                self.full = True
                return
            self.paths.add(p)


def _entry(path):
    """[type, size, None] for a path the host has (type of what it leads to;
    `link` only for a dangling symlink), or None."""
    try:
        st = os.stat(path)
    except OSError:
        try:
            os.lstat(path)
        except OSError:
            return None
        return ["link", 0, None]          # dangling: the host has the name only
    kind = next((name for test, name in _TYPES if test(st.st_mode)), "other")
    return [kind, st.st_size if kind == "file" else 0, None]


def probe(paths, inputs=(), outputs=(), packages=True, truncated=False):
    """The summary's `host_view`: {"paths": {path: entry}, "packages": bool,
    "truncated": bool}, entry as _entry(); stat()s on this host now."""
    view = {}
    for p in sorted(set(paths) | set(inputs) | set(outputs)):
        view[p] = _entry(p)
    found = packages and _packages(
        [p for p, e in view.items() if e and e[0] != "dir"
         and not p.startswith("/nix/")], view)
    return {"paths": view, "packages": bool(found), "truncated": bool(truncated)}


def _packages(paths, view):
    """Fill in each path's Debian package from `dpkg -S`, batched and bounded
    in time; False when there is no dpkg or it did not answer."""
    dpkg = shutil.which("dpkg-query") or shutil.which("dpkg")
    if not dpkg or not paths:
        return False
    deadline = time.monotonic() + DPKG_SECONDS
    # usrmerge: dpkg knows /lib/x/libz.so.1 where the build asked for
    # /usr/lib/x/libz.so.1 (or the reverse): ask for the real path too.
    asked = {}
    for p in paths:
        asked.setdefault(p, p)
        real = os.path.realpath(p)
        if real != p:
            asked.setdefault(real, p)
    names = sorted(asked)
    answered = False
    for i in range(0, len(names), DPKG_BATCH):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            out = subprocess.run([dpkg, "-S", "--", *names[i:i + DPKG_BATCH]],
                                 capture_output=True, timeout=left,
                                 env=dict(os.environ, LC_ALL="C")).stdout
        except (OSError, subprocess.TimeoutExpired):
            break
        answered = True
        for line in out.decode("utf-8", "surrogateescape").splitlines():
            pkgs, sep, path = line.partition(": ")
            if not sep or pkgs.startswith("diversion ") or path not in asked:
                continue
            e = view.get(asked[path])
            if e and e[2] is None:
                e[2] = pkgs.split(", ")[0]
    return answered


class HostView:
    """What the trace says the host had (analysis side; any machine)."""

    def __init__(self, summary):
        hv = (summary or {}).get("host_view") or {}
        self.paths = hv.get("paths") or {}
        self.known = bool(self.paths)

    def has(self, path):
        """True: the host has it; False: it lacks it too; None: not recorded."""
        if not self.known or path not in self.paths or path.startswith(KERNEL):
            return None
        return self.paths[path] is not None

    def entry(self, path):
        """{"type", "size", "package"} for a path the host has, else None."""
        e = self.paths.get(path) if self.known else None
        if not e:
            return None
        return {"type": e[0], "size": e[1], "package": e[2]}
