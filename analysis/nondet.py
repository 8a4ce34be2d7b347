"""What made an output file come out different: its writer, and what that
writer read that differs from run to run (`nixrec diff`, docs/analysis.md).

A pure pass over one trace's events (data in, data out). The tracer records
file, exec, process and network calls (recorder/trace/syscalls.py), so a source of
nondeterminism is seen through the call that gives it away, not the value:

- clock: clock_gettime is answered by the vDSO, no syscall at all; what shows
  is a `date` (or `hostname`...) exec, and localtime()'s open of
  /etc/localtime or the zoneinfo files (a time is being formatted). A
  busybox `date` is a fork without an exec: only its /etc/localtime opens
  show it.
- random: the opens of /dev/urandom, /dev/random and
  /proc/sys/kernel/random/uuid (a fresh uuid at each read). getrandom is not a
  recorded call: glibc's malloc asks it for 8 bytes in every process it
  starts (the tcache key), so recording it would add a stop per process and
  point at every process alike.
- hostname: a `hostname`/`uname`/`domainname` exec, /etc/hostname,
  /proc/sys/kernel/{hostname,domainname} (the uname call is not recorded).
- cores: /proc/cpuinfo, /sys/devices/system/cpu/{online,possible,present},
  `nproc`/`getconf` (and, found by diff from the two plans, NIX_BUILD_CORES).
- readdir: an opendir (open with O_DIRECTORY) of a directory outside the store
  and the kernel's trees: the order of its entries is the file system's.
- PID: not visible (getpid is not recorded; a shell's $$ makes no call).

Data flow: a file is written by whoever holds the descriptor, and a shell
opens a redirection (`cmd > $out/f`) before it forks `cmd`, so the writer's
children forked after the open, until it waits for the first of them, count
as writers too; its ancestors, before they forked the line down to it, pass
it their environment and arguments. Descriptors (fdflow.py) add the rest:
a process that inherited a write fd on the file is a writer too (`{ a; b; }
> f` has two), and the writers of a pipe a maker read from are makers
(`head -c 16 /dev/urandom | od > f`: head's open of /dev/urandom is f's
source, via "pipe").
"""

import collections

from nixrec.analysis.deps import access_of, basename, creates
from nixrec.analysis.fdflow import FdFlow
from nixrec.recorder.trace.syscalls import FD_CALLS, O_DIRECTORY, OPEN_CALLS

# The kinds of cause diff names for a differing file, most telling first:
# a difference diff found in the calls of a process that made the file, an
# input that differs, then what a build reads that differs by itself.
RANK = ("divergence", "input", "random", "clock", "env", "cores", "hostname", "readdir")

CLOCK_PROGRAMS = frozenset(("date",))
HOSTNAME_PROGRAMS = frozenset(("hostname", "uname", "domainname", "dnsdomainname"))
CORES_PROGRAMS = frozenset(("nproc", "getconf"))
CLOCK_PATHS = frozenset(("/etc/localtime", "/etc/timezone"))
ZONEINFO = "/usr/share/zoneinfo/"
RANDOM_PATHS = frozenset(("/dev/urandom", "/dev/random", "/proc/sys/kernel/random/uuid"))
HOSTNAME_PATHS = frozenset(("/etc/hostname", "/proc/sys/kernel/hostname",
                            "/proc/sys/kernel/domainname"))
CORES_PATHS = frozenset(("/proc/cpuinfo", "/sys/devices/system/cpu/online",
                         "/sys/devices/system/cpu/possible",
                         "/sys/devices/system/cpu/present"))
_SOURCE_PATHS = CLOCK_PATHS | RANDOM_PATHS | HOSTNAME_PATHS | CORES_PATHS
# Trees whose listing order is fixed for the build (inputs) or not a file
# system's (the kernel's).
FIXED_TREES = ("/nix/store/", "/proc/", "/sys/", "/dev/")
# `date -d X` / `date -r FILE` print a given time, not the clock's.
_DATE_FIXED = ("-d", "--date", "-r", "--reference")
# Per process and kind, the first few sources are kept: enough to name one,
# bounded on a process that lists a thousand directories.
KEEP_PER_KIND = 3


def source_of(ev):
    """(kind, what) when this event reads something that differs between
    runs, else None."""
    if ev.kind == "exec":
        argv = ev.args.get("argv") or []
        prog = basename(argv[0]) if argv else basename(ev.path or "")
        if prog in CLOCK_PROGRAMS and not any(a.split("=")[0] in _DATE_FIXED
                                              for a in argv[1:]):
            return "clock", f"runs {prog} (the current time)"
        if prog in HOSTNAME_PROGRAMS:
            return "hostname", f"runs {prog}"
        if prog in CORES_PROGRAMS:
            return "cores", f"runs {prog} (the CPUs it may use)"
        return None
    # Opens only: a stat of /dev/urandom is ttyname() walking /dev, not a read.
    if ev.kind != "syscall" or not ev.path or ev.syscall not in OPEN_CALLS:
        return None if ev.syscall != "getrandom" else ("random", "getrandom()")
    path = ev.path
    if path in RANDOM_PATHS:
        return "random", f"opens {path}"
    if path in CLOCK_PATHS or path.startswith(ZONEINFO):
        return "clock", f"opens {path} (localtime(): it formats a time)"
    if path in HOSTNAME_PATHS:
        return "hostname", f"opens {path}"
    if path in CORES_PATHS:
        return "cores", f"opens {path}"
    if not ev.failed and (ev.flags or 0) & O_DIRECTORY and not path.startswith(FIXED_TREES) \
            and path + "/" not in FIXED_TREES:
        return "readdir", f"lists {path} (entries in the file system's order)"
    return None


class Flow:
    """One pass over a trace: who last wrote each of `targets`, who forked
    whom and when, and the sources of nondeterminism each process read."""

    def __init__(self, targets=()):
        self.targets = set(targets)
        self.writer = {}                       # path -> (seq, proc)
        self.parent = {}                       # proc -> parent proc
        self.born = {"1": 0}                   # proc -> seq of the fork that made it
        self.reaped = collections.defaultdict(list)    # proc -> [(seq, child)] it waited for
        self.argv = {}                         # proc -> argv of its last exec
        self.sources = collections.defaultdict(list)   # proc -> [(seq, kind, what)]
        self._kept = collections.Counter()     # (proc, kind) -> sources kept
        self.fd = FdFlow()                     # pipes and inherited fds (fdflow.py)

    def add(self, ev) -> None:
        if ev.path is None and ev.kind not in ("fork", "exec") and \
                ev.syscall not in ("getrandom", "wait4"):
            if ev.syscall in FD_CALLS and not ev.failed:
                self.fd.add(ev)
            return
        if ev.kind == "fork":
            child = ev.args.get("child")
            if child:
                self.parent[child] = ev.proc
                self.born[child] = ev.seq
                self.fd.fork(ev.proc, child, ev.seq)
            return
        if ev.syscall == "wait4" and ev.args.get("child"):
            self.reaped[ev.proc].append((ev.seq, ev.args["child"]))
            return
        if ev.kind == "exec" and not ev.failed:
            self.argv[ev.proc] = list(ev.args.get("argv") or [])
            self.fd.exec(ev.proc)
        elif ev.syscall in OPEN_CALLS and not ev.failed and access_of(ev) == "write":
            self.fd.opened(ev)
        if ev.path in self.targets or ev.path2 in self.targets:
            made = creates(ev)
            if made in self.targets:
                self.writer[made] = (ev.seq, ev.proc)
            elif ev.path in self.targets and not ev.failed and access_of(ev) == "write":
                self.writer[ev.path] = (ev.seq, ev.proc)
        # (most events are none: the cheap tests first, hello has 235k events)
        if ev.kind == "syscall" and (ev.path not in _SOURCE_PATHS or
                                     ev.syscall not in OPEN_CALLS) and \
                not (ev.flags or 0) & O_DIRECTORY and not (ev.path or "").startswith(ZONEINFO) \
                and ev.syscall != "getrandom":
            return
        src = source_of(ev)
        if src is not None:
            kind, what = src
            if self._kept[(ev.proc, kind)] < KEEP_PER_KIND:
                self._kept[(ev.proc, kind)] += 1
                self.sources[ev.proc].append((ev.seq, kind, what))

    # --- who made a file ---------------------------------------------------------------
    def ancestors(self, proc):
        out = []
        while proc in self.parent:
            proc = self.parent[proc]
            out.append(proc)
        return out

    def makers(self, path):
        """-> (seq, proc) of the write, and [(proc, how)]: the processes whose
        reads may have gone into the file (above: the writer, its children
        forked after the open, its ancestors), or None when nothing wrote it."""
        w = self.writer.get(path)
        if w is None:
            return None
        seq, proc = w
        who = [(proc, "writer")]
        until = self._command_end(proc, seq)
        for p in self.born:
            if p.startswith(proc + ".") and seq < self.born[self._child_of(proc, p)] < until:
                who.append((p, "child"))
        # Whoever else held a write fd on it (a redirection the child
        # inherited), and the writers of the pipes these read (`a | b > f`).
        named = {p for p, _ in who}
        for p, _ in self.fd.file_writers(path):
            if p not in named and not proc.startswith(p + "."):
                who.append((p, "child"))
                named.add(p)
        for up, _chan, _seq in self.fd.upstream(path):
            if up not in named:
                who.append((up, "pipe"))
                named.add(up)
        who += [(a, "ancestor") for a in self.ancestors(proc) if a not in named]
        return w, who

    def _command_end(self, proc, seq):
        """When the command a redirection opened at `seq` was for had ended:
        the writer's first wait for a child forked after the open (`cmd > f`
        is open, fork, wait); its later children write elsewhere. (`{ a; b;
        } > f` has two: b is found by the fd it inherited, fdflow.py.)"""
        for wseq, child in self.reaped.get(proc, ()):
            if wseq > seq and self.born.get(child, 0) > seq:
                return wseq
        return float("inf")

    @staticmethod
    def _child_of(top, proc):
        """The child of `top` on the way down to its descendant `proc`."""
        return top + "." + proc[len(top) + 1:].split(".")[0]

    def sources_of(self, path):
        """The sources the makers of `path` read: [{kind, proc, seq, what,
        via}], most telling first; an ancestor's only before it forked the
        line down to the writer."""
        made = self.makers(path)
        if made is None:
            return []
        (wseq, wproc), who = made
        found = []
        for proc, how in who:
            until = None
            if how == "ancestor":
                until = self.born.get(self._child_of(proc, wproc), wseq)
            for seq, kind, what in self.sources.get(proc, ()):
                if until is None or seq < until:
                    found.append({"kind": kind, "proc": proc, "seq": seq, "what": what,
                                  "via": how})
        return rank(found)


_VIA = {"writer": 0, "child": 1, "pipe": 1, "ancestor": 2}


def rank(sources):
    """Most telling first: by kind (RANK), then the writer before its
    children before its ancestors, then the earliest."""
    return sorted(sources, key=lambda s: (RANK.index(s["kind"]) if s["kind"] in RANK
                                          else len(RANK),
                                          _VIA.get(s.get("via"), 3), s.get("seq") or 0))
