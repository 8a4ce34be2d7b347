"""ReplaySession: trace -> the same sandbox -> the build under the tracer -> a stop.

    s = ReplaySession(trace, finder_for=..., log=...)
    s.prepare()              # inputs checked, recording indexed; nothing runs yet
    stop = s.start()         # runs the build until the stop (or the end)
    ...                      # cli: attach a shell / run a command (attach.py)
    end = s.resume()         # --continue: the rest of the build, compared
    s.close()                # kill what is left, remove the sandbox

Steps return small values (Stop, End); cli.py prints them and picks the exit
code. A divergence is one of those values, never an exception.
"""

import os
import tempfile

from nixrec.recorder import session as rsession, tree
from nixrec.recorder.nix import store
from nixrec.recorder.trace import syscalls
from nixrec.recorder.build import Build
from nixrec.recorder.errors import BadInput
from nixrec.recorder.sandbox.plan import SandboxPlan
from nixrec.recorder.sandbox.steps import check_sandbox_paths
from nixrec.recorder.tracefile import open_trace
from nixrec.replayer import targets
from nixrec.replayer.matcher import RecordedIndex, counted, describe
from nixrec.replayer.procmap import Follower


class Stop:
    """Where a replay stopped: before a live call, with its process frozen."""

    def __init__(self, **kw):
        self.reason = "target"      # "target" or "divergence"
        self.proc = None            # the recorded process (tree path)
        self.live_proc = None       # the live one matched to it, when not the same
        self.loose = False          # found by its call in a lenient process (procmap.py)
        self.loc = None
        self.recorded_seq = None    # the recorded event this call matches, if any
        self.live_seq = 0           # events the replay had emitted before the stop
        self.live_pid = None        # host pid of the frozen process (never printed as a key)
        self.cwd = None             # its cwd inside the sandbox
        self.call = None            # describe() of the call about to run
        self.__dict__.update(kw)


class End:
    """How a replay ended: matched, diverged, or stopped and killed."""

    def __init__(self, **kw):
        self.state = "done"         # "done" (ran to the end) or "killed" (at the stop)
        self.events = 0             # events emitted live
        self.divergence = None
        self.unreached = None       # a target the build never got to (seq)
        self.builder = None         # ("exit", code) / ("signal", name) of the builder
        self.interrupted = False
        self.__dict__.update(kw)

    @property
    def matched(self) -> bool:
        return self.state == "done" and self.divergence is None and self.unreached is None


def check_inputs(header) -> None:
    """Every input the recording used must be here and unchanged, or nothing runs."""
    for item in header.get("closure") or ():
        path, want = item.get("path"), item.get("hash")
        if not path or not os.path.lexists(path):
            raise BadInput(f"input missing: {path} (the recording used it; "
                           "nix-store --realise it or copy it here first)")
        if want and store.path_hash(path) != want:
            raise BadInput(f"input changed since the recording: {path} "
                           f"(hash {store.path_hash(path)}, recorded {want})")


def plan_of(header) -> SandboxPlan:
    plan = header.get("plan")
    if not isinstance(plan, dict) or not plan.get("builder"):
        raise BadInput("the trace has no sandbox plan in its header: not a recording "
                       "nixrec can replay")
    plan = SandboxPlan.from_dict(plan)
    missing = check_sandbox_paths(plan)
    if missing:
        raise BadInput(f"sandbox path missing on this machine: {missing[0]}")
    return plan


def calls_of(header):
    """The calls the recording stopped on (None: a trace from before the
    header said, which stopped on the whole table)."""
    calls = header.get("calls")
    if calls is not None and not (isinstance(calls, list)
                                  and all(isinstance(c, str) for c in calls)):
        raise BadInput("the trace header's list of recorded calls is malformed: "
                       "not a recording nixrec can replay")
    unknown = sorted(set(calls or ()) - set(syscalls.BY_NAME))
    if unknown:
        # A newer nixrec's recording: replaying it without stopping on these
        # calls would only show divergences that are not the build's.
        raise BadInput(f"the trace stopped on calls this nixrec does not know "
                       f"({', '.join(unknown[:5])}): replay it with the nixrec that recorded it")
    return calls


class ReplaySession:
    def __init__(self, trace_path, finder_for=None, log=None):
        self.trace_path = trace_path
        self.finder_for = finder_for    # callable(reader, plan) -> Finder, or None
        self.log = log
        self.reader = None
        self.plan = None
        self.target = None
        self.follow = None              # Follower: live process -> recorded one
        self.build = None
        self.workdir = None
        self.live_seq = 0
        self.divergence = None
        self.comparing = True
        self._freeze_next = False       # a divergence seen after a call ran
        self._stopped = None            # Stop, while frozen
        self._stops_done = False        # the target was reached once: never again
        self._nlenient = 0              # lenient processes the C loop was told of
        self.refused = 0                # live calls the sandbox refused (the status line)
        self._roots = None

    # --- before anything runs ---------------------------------------------------------
    def prepare(self) -> None:
        """Read and check the trace: header, inputs, index, target."""
        self.reader = open_trace(self.trace_path)
        header = self.reader.header
        self.plan = plan_of(header)
        self.calls = calls_of(header)
        check_inputs(header)
        finder = self.finder_for(self.reader, self.plan) if self.finder_for else None
        index = RecordedIndex()
        facts = _facts_for(header, self.reader) if isinstance(finder, targets.FailFinder) \
            else None
        for ev in self.reader.events():
            loc = index.add(ev)
            if finder is not None:
                finder.see(ev, loc)
            if facts is not None:
                facts.add(ev)
        self.follow = Follower(index)
        if facts is not None:
            self.target = _fail_target(finder, facts, self.reader.summary)
        elif finder is not None:
            self.target = finder.target()
        if self.target is not None:
            self.target.seg = index.segment(self.target.loc)

    # --- running ------------------------------------------------------------------------
    def start(self):
        """Lay out the sandbox and run the build until the stop: -> Stop, or End."""
        rsession.check_host()
        self.workdir = tempfile.mkdtemp(prefix="nixrec-replay-")
        self.build = Build(self.plan, self.workdir, self._emit, log=self.log,
                                    before=self._before, ran=self._ran,
                                    calls=self.calls)
        self.build.start()
        fast = self.build.tracer.fast
        if fast is not None:
            fast.lockstep()
        if fast is not None and self.target is not None and self.target.ev.kind == "syscall":
            # Every call of the target's kind goes through the hook (which can
            # freeze) rather than the C loop (which shows it after it ran).
            sc = syscalls.BY_NAME.get(self.target.ev.syscall)
            if sc is not None:
                fast.slow(nr=sc.nr)
        return self._run()

    def resume(self):
        """--continue: thaw the build and let it run on (compared) to its end."""
        self._stopped = None
        self._stops_done = True
        self.comparing = self.divergence is None
        fast = self.build.tracer.fast
        if fast is not None:
            fast.slow()                 # nothing more to stop at
        self.build.thaw()
        return self._run()

    def _run(self):
        state = self.build.run()
        if state == "frozen" and self._stopped is not None:
            return self._stopped
        return self._end("done")

    def close(self):
        """Kill what is left of the build (if anything), reap it, remove the sandbox.
        -> End for a replay that was still stopped."""
        end = None
        # pump is set once Build.start got the builder going; before that,
        # start() itself cleaned up what it had made.
        if self.build is not None and self.build.pump is not None:
            if self._stopped is not None:
                end = self._end("killed")
            self.comparing = False
            self.build.stop()
            self.build = None
        if self.workdir:
            tree.remove(self.workdir, ignore_errors=True)
            self.workdir = None
        if self.reader is not None:
            self.reader.close()
        return end

    def _end(self, state) -> End:
        unreached = None
        interrupted = self.build.interrupted
        if state == "done" and self.divergence is None and not interrupted:
            if self.comparing:
                self.divergence = self.follow.unreached()
            if self.target is not None and not self._stops_done:
                unreached = self.target.seq
        tracer = self.build.tracer
        return End(state=state, events=self.live_seq, divergence=self.divergence,
                   unreached=unreached, builder=tracer.builder_status,
                   interrupted=interrupted)

    # --- the tracer's hooks ------------------------------------------------------------
    def _before(self, ev, ran=False) -> bool:
        """At each call's entry, before the kernel runs it: freeze here?

        ran: the tracer's C loop (recorder/trace/fastpath.c) let this call run
        already and shows it now, before it handles the next stop (lockstep);
        it cannot be frozen at. The C loop hands over every call of the
        target's kind and every call of a process compared loosely (_watch),
        so the target is never one of these; a divergence seen in one stops
        the build at the next call, as it does for a call that diverges in
        its outcome.
        """
        follow = self.follow
        loc = follow.peek(ev)
        if self.comparing and counted(ev):
            loc, d = follow.entry(ev, loc, self.live_seq + 1)
            if d is not None:
                self._diverged(d)
                if not self._stops_done:
                    return self._freeze_or_next(ev, loc, "divergence", ran)
        return self._stop_here(ev, loc, ran)

    def _stop_here(self, ev, loc, ran) -> bool:
        """The call compared: is it where the replay stops (after a
        divergence, or the target)? -> freeze now."""
        if self._stops_done:
            return False
        if self._freeze_next:
            if ran:
                return False
            self._freeze_next = False
            return self._freeze(ev, loc, "divergence")
        if self.follow.hit(self.target, ev, loc):
            return self._freeze_or_next(ev, loc, "target", ran)
        self._watch()
        return False

    def _ran(self, ev) -> None:
        """A call the C loop let run, shown before the next stop (lockstep):
        _before(ev, ran=True) and _emit(ev) in one pass when it is the
        recorded call at its place (Follower.ran), else those two."""
        loc = self.follow.ran(ev) if self.comparing and not self._freeze_next else None
        if loc is None:
            self._before(ev, True)
            self._emit(ev)
            return
        self._stop_here(ev, loc, True)
        self.live_seq += 1

    def _freeze_or_next(self, ev, loc, reason, ran) -> bool:
        if not ran:
            return self._freeze(ev, loc, reason)
        self._stop_at_next_call()
        return False

    def _stop_at_next_call(self) -> None:
        """Freeze before the next call of any process (the C loop hands
        every stop over from now on)."""
        self._freeze_next = True
        fast = self.build.tracer.fast if self.build and self.build.tracer else None
        if fast is not None:
            fast.slow(everything=True)

    def _watch(self) -> None:
        """The C loop hands over every stop of the processes compared loosely:
        in one of those the target is found by what the call is (procmap.py)."""
        lenient = self.follow.lenient
        if len(lenient) == self._nlenient or self.target is None:
            return
        self._nlenient = len(lenient)
        tracer = self.build.tracer
        if tracer.fast is not None:
            tracer.fast.watch([t.pid for t in list(tracer.tracees.values())
                               if t.proc in lenient])

    def progress(self) -> dict:
        """What the status line shows (cli.py): the phase, and the live counts."""
        build = self.build
        if build is None or build.tracer is None:
            return {"phase": "reading the trace"}
        t = build.tracer
        phase = f"to event {self.target.seq}" if self.target is not None else "to the end"
        return {"processes": t.nprocesses, "alive": len(t.tracees), "events": self.live_seq,
                "refused": self.refused, "current": t.current, "phase": phase}

    def _emit(self, ev) -> None:
        """Every event the live build makes (the tracer's sink)."""
        self.live_seq += 1
        if ev.errno is not None:
            if self._roots is None:
                self._roots = rsession.visible_roots(self.plan)
            self.refused += rsession.is_refused(ev, self._roots)
        _, d = self.follow.emitted(ev, self.live_seq, self.comparing)
        if d is not None:
            self._diverged(d)
            # The call has run already: stop at the next call of any process.
            if not self._stops_done:
                self._stop_at_next_call()

    def _diverged(self, d) -> None:
        if self.divergence is None:
            self.divergence = d
        self.comparing = False          # after the first, every event differs

    def _freeze(self, ev, loc, reason) -> bool:
        self._stops_done = True
        self.comparing = False          # the kill after the stop is not the build's doing
        loose = ev.proc in self.follow.lenient
        if loose and reason == "target":
            loc = self.target.loc       # the same call, found by what it is
        rec = self.follow.index.at(loc) if loc.j == 0 and not loose else None
        t = self._tracee_of(ev)
        self._stopped = Stop(
            reason=reason, proc=loc.proc, loc=loc, live_seq=self.live_seq, loose=loose,
            live_proc=ev.proc if ev.proc != loc.proc else None,
            recorded_seq=rec[0] if rec else (self.target.seq if reason == "target" else None),
            live_pid=t.pid if t else None, cwd=t.cwd if t else None, call=describe(ev),
            divergence=self.divergence, target=self.target)
        return True

    def _tracee_of(self, ev):
        for t in self.build.tracer.tracees.values():
            if t.proc == ev.proc:
                return t
        return None

    # --- attaching ---------------------------------------------------------------------
    def phase_shell(self, stop):
        """At a phase stop (--until-phase) in a bash: that bash's path in the
        sandbox, to run the command with the shell's state; else None."""
        t = stop.target
        if stop.reason != "target" or t is None or t.phase is None:
            return None
        q = self.reader.processes.get(stop.proc)
        exe = getattr(q, "exe", None) or self.plan.builder
        return exe if os.path.basename(exe or "").startswith("bash") else None

    def live_cwd(self, stop) -> str:
        """The stopped process's cwd inside the sandbox (the tracer follows chdir)."""
        return stop.cwd or self.plan.cwd


def _facts_for(header, reader):
    from nixrec.analysis.facts import Facts
    return Facts(header, reader.processes)


def _fail_target(finder, facts, summary):
    """--until-fail: the origin of the failure chain (`nixrec why`), before its
    last call, so what it wrote, its cwd and its environment are all there."""
    from nixrec.analysis.rootcause import failure_chain
    facts.finish()
    root = facts.procs.get("1")
    if root is not None and summary and summary.get("exit_status") is not None:
        root.exit_status = summary["exit_status"]
    chain = failure_chain(facts)
    if not chain:
        raise BadInput("--until-fail: the recorded build did not fail")
    origin = chain[-1]
    q = facts.procs[origin]
    return finder.target_for(origin, q.argv, forked_only=not q.exec_seq and origin != "1")
