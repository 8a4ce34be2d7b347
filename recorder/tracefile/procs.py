"""The process table and "which program was it" as a pure fold over events.

The writer folds events through a ProcessTracker as they are appended (to put
the exec history in the index); the reader folds them when a trace has no index
(an interrupted recording). Both follow the event conventions of
docs/trace-format.md: fork args["child"], exec args["argv"], exit args["status"].
"""

import bisect
import os
import sys

from nixrec.recorder.tracefile.model import Event, Process


def parent_of(proc: str):
    """Tree path of the parent: "1.3.2" -> "1.3"; the builder "1" has none."""
    head, dot, _ = proc.rpartition(".")
    return head if dot else None


def argv0_of(argv) -> str:
    """The program name to show for an argv: its first word, without directories."""
    if not argv:
        return None
    first = argv[0]
    if isinstance(first, bytes):
        first = os.fsdecode(first)
    return os.path.basename(str(first)) or str(first)


class ProcessTracker:
    """Folds events into {proc: Process} and each process's exec history.

    execs[proc] is a list of (seq, argv0), the program in effect from that seq
    on: one entry per successful exec, and for a forked child a first entry at
    the fork with the parent's program (a child runs its parent's program
    until it execs).
    """

    def __init__(self):
        self.procs = {}
        self.execs = {}

    def argv0(self, proc: str):
        """The program `proc` is running now (after the events seen so far)."""
        hist = self.execs.get(proc)
        return hist[-1][1] if hist else None

    def see(self, ev: Event) -> None:
        p = self._get(ev.proc, ev.seq)
        p.last_seq = ev.seq
        if ev.pid and not p.pid:
            p.pid = ev.pid
        handler = _HANDLERS.get(ev.kind)
        if handler is not None:
            handler(self, p, ev)

    def _get(self, proc: str, seq: int) -> Process:
        p = self.procs.get(proc)
        if p is None:
            p = self.procs[proc] = Process(proc, parent=parent_of(proc),
                                           first_seq=seq, last_seq=seq)
        return p

    def _push_exec(self, proc: str, seq: int, argv0) -> None:
        self.execs.setdefault(proc, []).append((seq, argv0))

    def _fork(self, p: Process, ev: Event) -> None:
        child = ev.args.get("child")
        if not child or ev.failed:
            return
        c = self._get(child, ev.seq)
        if isinstance(ev.result, int) and ev.result > 0:
            c.pid = ev.result
        c.parent = p.proc
        # Shared, not copied: a child that never execs costs no argv of its own.
        c.argv, c.exe = p.argv, p.exe
        if p.proc in self.execs:
            self._push_exec(child, ev.seq, self.argv0(p.proc))

    def _exec(self, p: Process, ev: Event) -> None:
        if ev.failed:
            return
        # Shared with the event (nothing edits an argv): the table holds one
        # per exec'd process for the whole recording.
        p.argv = ev.args.get("argv") or []
        p.exe = ev.path
        a0 = argv0_of(p.argv)
        self._push_exec(p.proc, ev.seq, sys.intern(a0) if type(a0) is str else a0)

    def _exit(self, p: Process, ev: Event) -> None:
        p.exit_status = ev.args.get("status", ev.result)
        p.exit_signal = ev.args.get("signal")


_HANDLERS = {
    "fork": ProcessTracker._fork,
    "exec": ProcessTracker._exec,
    "exit": ProcessTracker._exit,
}


def argv0_at(execs: dict, proc: str, seq: int):
    """The program `proc` was running at event `seq` (an exec at `seq` counts).

    `execs` maps proc -> [(seq, argv0), ...] sorted by seq; None when unknown.
    """
    hist = execs.get(proc)
    if not hist:
        return None
    i = bisect.bisect_right(hist, seq, key=lambda e: e[0]) if _HAS_KEY else \
        bisect.bisect_right([e[0] for e in hist], seq)
    return hist[i - 1][1] if i else None


_HAS_KEY = True
try:
    bisect.bisect_right([], 0, key=lambda e: e)
except TypeError:          # Python < 3.10 has no key=
    _HAS_KEY = False
