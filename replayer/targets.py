"""Where a replay stops: --until N, --until-fail, --until-exec GLOB, --until-path PATH.

Each option picks one recorded event while the recorded index is built (one
streaming pass, session.py), and the pick becomes a Target: the Loc
(matcher.py) of the event to stop *before*. Only calls pass the tracer's
entry hook, so a fork, exit or signal event is stopped at through the
nearest call of the same process, and the Target says so in `note`.
"""

import fnmatch
import os
import shlex

from nixrec.recorder.errors import BadInput
from nixrec.recorder.tracefile import phases
from nixrec.replayer.matcher import counted, hooked, same_path


class Target:
    """The recorded event to stop before, and how to recognise it live."""

    def __init__(self, ev, loc, requested_seq, note=None, command=None):
        self.ev = ev                    # the recorded event stopped before
        self.loc = loc
        self.requested_seq = requested_seq
        self.note = note                # why the stop is not exactly at the request
        self.command = command          # --until-fail: argv of the failing process
        self.forked_only = False
        self.seg = 0                    # execs/forks/exit of its process before it
        self.phase = None               # --until-phase(-end): (phase dict, end?)

    def hit_loose(self, ev, seg) -> bool:
        """In a process that runs jobs in parallel and whose own calls went
        another order (procmap.py): the first call like this one after as many
        execs/forks as recorded, else the first call after the next one."""
        if seg != self.seg:
            return seg > self.seg
        rec = self.ev
        return ev.kind == rec.kind and ev.syscall == rec.syscall and \
            same_path(rec.path, ev.path) and same_path(rec.path2, ev.path2)

    @property
    def seq(self) -> int:
        return self.ev.seq

    def hit(self, loc, ev=None) -> bool:
        """Is the live call about to run at `loc` (the live event `ev`) the one
        to stop before?"""
        want = self.loc
        if loc.proc != want.proc:
            return False
        if want.j == 0:
            return loc.j == 0 and loc.k == want.k
        if loc.j == 0:
            # A volatile target (wait4, output) that did not recur this time:
            # stop at the next counted call, the nearest stable point.
            return loc.k == want.k + 1
        said = self.ev.args.get("data") if self.ev.kind == "output" else None
        if said and ev is not None and ev.kind == "output":
            # A log line (a phase's announcement): the write of the same
            # words, whatever other lines came first this time (stdenv's
            # "buildPhase completed in 31 seconds" when the live phase took
            # 30 s or more and the recorded one did not).
            return loc.k == want.k and ev.args.get("data") == said
        return loc.k == want.k and loc.j == want.j


class Finder:
    """Sees every recorded event with its Loc; keeps what a Target needs.

    `pick(ev)` chooses the event; with last=True the last picked one wins
    (--until-fail), else the first.
    """

    def __init__(self, pick, what, last=False):
        self.pick, self.what, self.last = pick, what, last
        self.phase = None               # --until-phase(-end): (phase dict, end?)
        self.found = None               # (ev, loc)
        self.before = None              # the last call of its process before it
        self.after = None               # the first call of its process after it
        self._last_call = {}            # proc -> (ev, loc) of its last hooked event

    def see(self, ev, loc) -> None:
        if self.found is None or self.last:
            if self.pick(ev):
                self.found = (ev, loc)
                self.before = self._last_call.get(ev.proc)
                self.after = None
        elif self.after is None and ev.proc == self.found[0].proc and hooked(ev):
            self.after = (ev, loc)
        if hooked(ev):
            self._last_call[ev.proc] = (ev, loc)

    def target(self) -> Target:
        t = self._target()
        t.phase = self.phase
        return t

    def _target(self) -> Target:
        if self.found is None:
            raise BadInput(f"nothing to stop at: the recording has no {self.what}")
        ev, loc = self.found
        if hooked(ev):
            return Target(ev, loc, ev.seq)
        # fork/exit/signal: the kernel does them inside other calls, or at
        # the very end; the nearest call of the same process stands in.
        near = self.after if ev.kind != "exit" and self.after else self.before
        if near is None:
            raise BadInput(f"event {ev.seq} ({ev.kind} of process {ev.proc}) has no "
                           "call of its process to stop before")
        side = "after" if near is self.after else "before"
        note = (f"event {ev.seq} ({ev.kind}) is not a call, and a replay stops only before calls; "
                f"stopping before event {near[0].seq}, the nearest call {side} it")
        return Target(near[0], near[1], ev.seq, note)


def until_seq(n: int, last_seq: int) -> Finder:
    if not 1 <= n <= max(last_seq, 1):
        raise BadInput(f"--until {n}: the trace has events 1 to {last_seq}")
    return Finder(lambda ev: ev.seq == n, f"event {n}")


def until_phase(reader, name: str, end: bool = False) -> Finder:
    """--until-phase NAME: the phase's announcement, a write of the builder's
    shell (its first event, or after the dup2 of that write's redirection:
    phases.py; traces before that have no "announced"); --until-phase-end: its
    last event."""
    p = phases.lookup(reader.phases, name)
    seq = p["last"] if end else p.get("announced", p["first"])
    f = Finder(lambda ev: ev.seq == seq, f"event {seq}")
    f.phase = (p, end)
    return f


def until_exec(glob: str) -> Finder:
    def pick(ev):
        if ev.kind != "exec":
            return False
        argv = ev.args.get("argv") or []
        names = [ev.path or "", os.path.basename(ev.path or "")]
        if argv:
            names += [argv[0], os.path.basename(argv[0])]
        return any(fnmatch.fnmatchcase(n, glob) for n in names if n)
    return Finder(pick, f"exec of a program matching {glob!r}")


def until_path(path: str, cwd: str) -> Finder:
    # A relative PATH is relative to the build directory, where builds start.
    want = os.path.normpath(os.path.join(cwd, path))

    def pick(ev):
        return ev.kind in ("syscall", "exec") and want in (ev.path, ev.path2)
    return Finder(pick, f"access to {want}")


def until_fail() -> Finder:
    """The last call of each process is kept; session.py picks the origin's
    once the failure chain is known (it needs the whole trace)."""
    return FailFinder()


class FailFinder(Finder):
    """Remembers every process's last counted call; the origin is chosen later."""

    def __init__(self):
        super().__init__(lambda ev: False, "failure")
        self.last_counted = {}          # proc -> (ev, loc)

    def see(self, ev, loc) -> None:
        if hooked(ev) and counted(ev):
            self.last_counted[ev.proc] = (ev, loc)

    def target_for(self, origin, argv, forked_only=False) -> Target:
        found = self.last_counted.get(origin)
        if found is None:
            raise BadInput(f"the failing process {origin} made no call to stop before")
        ev, loc = found
        # The cwd is read from the live process at the stop (the trace has none).
        t = Target(ev, loc, ev.seq, command=list(argv))
        t.forked_only = forked_only     # ran no program of its own: argv is its parent's
        return t


def command_line(argv, cwd) -> str:
    """A line a user can paste into the replay shell to run the command again."""
    cmd = " ".join(shlex.quote(a) for a in argv) or "?"
    return f"cd {shlex.quote(cwd)} && {cmd}" if cwd else cmd


__all__ = ["Target", "Finder", "FailFinder", "until_seq", "until_phase", "until_exec",
           "until_path", "until_fail", "command_line"]
