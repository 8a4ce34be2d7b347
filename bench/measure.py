"""Measuring helpers for bench/run.py: timed runs with the peak RSS of one
process, counts from an strace log and from a nixrec trace.

Nothing here asserts anything (style.md: benchmarks are not tests).
"""

import os
import re
import statistics
import subprocess
import time
from collections import Counter

# The calls the completeness check compares, by group (the list).
GROUPS = {
    "exec": ("execve", "execveat"),
    "open": ("open", "openat", "openat2", "creat"),
    "connect": ("connect",),
}
_GROUP_OF = {name: g for g, names in GROUPS.items() for name in names}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --- running ---------------------------------------------------------------------


class Run:
    """What one timed command ended with."""

    def __init__(self, argv, rc, wall, peak_rss_kib=None, stdout=b"", stderr=b"",
                 killed=False):
        self.argv, self.rc, self.wall = argv, rc, wall
        self.peak_rss_kib = peak_rss_kib
        self.killed = killed            # stopped by us at rss_limit_kib
        self.cpu = None                 # (user, sys) s of the process itself (poll_rss)
        self.stdout, self.stderr = stdout, stderr

    def tail(self, n=5) -> str:
        lines = self.stderr.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])


def _vm_hwm_kib(pid):
    """VmHWM of `pid`: the peak resident set of that one process (its own mm),
    unlike wait4's ru_maxrss, which also folds in every child it reaped."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_seconds(pid):
    """(user, sys) CPU seconds of `pid` itself, all its threads, not its children."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, ValueError, IndexError):
        return None


def timed(argv, env=None, cwd=None, poll_rss=False, stdout_path=None,
          rss_limit_kib=None) -> Run:
    """Run argv to its end; wall time from just before the fork to the reap.

    poll_rss: read /proc/PID/status VmHWM (and /proc/PID/stat CPU times) every
    20 ms while it runs. VmHWM
    only grows, so the last value read (at most 20 ms before the exit) is the
    peak, give or take what the process allocates in its last 20 ms.
    """
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
    peak, killed, cpu = None, False, None
    if poll_rss:
        # The pipes must be drained while we poll, or a chatty command blocks.
        import threading
        got = {}
        pipes = [("err", p.stderr)] + ([("out", p.stdout)] if p.stdout else [])
        threads = [threading.Thread(target=lambda k=k, f=f: got.__setitem__(k, f.read()),
                                    daemon=True) for k, f in pipes]
        for th in threads:
            th.start()
        while p.poll() is None:
            v = _vm_hwm_kib(p.pid)
            c = _cpu_seconds(p.pid)
            if c is not None:
                cpu = c
            if v is not None:
                peak = v
                if rss_limit_kib and v > rss_limit_kib and not killed:
                    p.kill()
                    killed = True
            time.sleep(0.02)
        wall = time.monotonic() - t0
        for th in threads:
            th.join()
        stdout, stderr = got.get("out", b""), got.get("err", b"")
    else:
        stdout, stderr = p.communicate()
        wall = time.monotonic() - t0
    if stdout_path:
        out.close()
    r = Run(argv, p.returncode, wall, peak, stdout or b"", stderr or b"", killed)
    r.cpu = cpu
    return r


def first_line_time(argv, env=None, cwd=None, timeout=60.0):
    """Seconds from the fork to the first complete line on stdout (then the
    command is stopped: only the time to the first answer is measured)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    line = p.stdout.readline()
    dt = time.monotonic() - t0
    p.kill()
    p.wait()
    p.stdout.close()
    return dt if line else None


# --- strace ------------------------------------------------------------------------

_LINE = re.compile(rb"^(\d+) +(?:(\w+)\(|<\.\.\. (\w+) resumed>|\+\+\+ )")
_EXITED = re.compile(rb"^(\d+) +\+\+\+ (?:exited|killed)")


class StraceCounts:
    """Calls made by the builder's process tree in an `strace -f` log.

    strace follows nix-build itself (evaluation, sandbox setup, registering the
    output) as well as the build. The build is the tree under the process that
    execs the builder: found as the pids first seen between that exec and the
    builder's exit (the builder is PID 1 of its namespace, so nothing of the
    build outlives it, and nix-build starts no process while it waits).
    strace cannot name parents here: inside the build's PID namespace clone()
    returns namespace pids while strace labels lines with host pids.
    """

    def __init__(self):
        self.calls = Counter()          # syscall name -> calls started by the build
        self.groups = Counter()         # GROUPS key -> calls
        self.lines = 0                  # lines of the build's tree (starts + resumes)
        self.bytes = 0                  # their bytes: the build's share of the log
        self.total_bytes = 0            # the whole log, nix-build included
        self.pids = 0
        self.forks = 0                  # successful fork/vfork/clone (non-thread) lines


def parse_strace(path, builder=b"/bin/sh") -> StraceCounts:
    c = StraceCounts()
    seen = set()
    tree = set()
    builder_pid = None
    done = False
    with open(path, "rb") as f:
        for line in f:
            c.total_bytes += len(line)
            m = _LINE.match(line)
            if not m:
                continue
            pid = m.group(1)
            if builder_pid is None:
                if m.group(2) == b"execve" and b'execve("' + builder + b'"' in line:
                    builder_pid = pid
                    tree.add(pid)
                else:
                    seen.add(pid)
                    continue
            elif not done and pid not in seen and pid not in tree:
                tree.add(pid)
            if pid not in tree:
                continue
            c.lines += 1
            c.bytes += len(line)
            name = m.group(2)
            if name:
                name = name.decode()
                c.calls[name] += 1
                g = _GROUP_OF.get(name)
                if g:
                    c.groups[g] += 1
                if name in ("fork", "vfork", "clone", "clone3") and _forked(line):
                    c.forks += 1
            elif m.group(3) and m.group(3) in (b"fork", b"vfork", b"clone", b"clone3") \
                    and _forked(line):
                c.forks += 1
            if pid == builder_pid and _EXITED.match(line):
                done = True
    c.pids = len(tree)
    return c


def _forked(line: bytes) -> bool:
    # A process (not a thread) was made: the call returned a pid.
    if b"CLONE_THREAD" in line:
        return False
    return re.search(rb"\) += [1-9]\d*", line) is not None


# --- nixrec traces -------------------------------------------------------------------


class TraceCounts:
    def __init__(self):
        self.events = 0
        self.calls = Counter()          # syscall name (or kind) -> events
        self.groups = Counter()
        self.processes = 0
        self.summary = {}
        self.stops = None


def count_trace(path) -> TraceCounts:
    from nixrec.recorder.tracefile import open_trace
    c = TraceCounts()
    with open_trace(path) as r:
        for ev in r.events():
            c.events += 1
            name = ev.syscall or ev.kind
            c.calls[name] += 1
            g = _GROUP_OF.get(ev.syscall)
            if g:
                c.groups[g] += 1
        c.processes = len(r.processes)
        c.summary = r.summary or {}
        c.stops = c.summary.get("stops")
    return c


def pct_diff(ours, theirs):
    if not theirs:
        return None if ours else 0.0
    return 100.0 * (ours - theirs) / theirs


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return None
