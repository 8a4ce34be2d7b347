"""The phases of a stdenv build, found in its events (docs/trace-format.md, "Phases").

nixpkgs' `genericBuild` runs one phase after another in the builder's bash
and announces each one before it runs it, in one of three forms:

    Running phase: buildPhase                            current nixpkgs, on stderr
    @nix {"action":"setPhase","phase":"buildPhase"}      on $NIX_LOG_FD, with Nix's
                                                         structured logging
    building                                             older nixpkgs' headers

The announcement is a write of the builder, recorded anyway as an output
event (the first process to announce a phase is the one whose later
announcements count; an older header only from the builder itself, `1`,
since "building" is a line many tools print). One runPhase may announce in
several forms, in separate writes (nixpkgs' real setup.sh: the setPhase
message, then `Running phase:`): they make one run, which runs from its first
announcement to the event before the next phase's (the last phase: to the
build's last event). The builder's environment (its
exec event) says which phases were meant to run (`phases`, or the standard
list with prePhases... spliced in) and which switches skip one (`dontBuild`,
`doCheck` unset...): a phase of that list that was never announced was
skipped, or, after the phase the build failed in, never reached.

    t = PhaseTracker()
    for ev in events: t.see(ev, refused=...)
    t.result() -> [{"name": "buildPhase", "status": "ran", "first": 561, ...}, ...]

The recorder folds the phases as it writes (the summary's `phases`); the
reader folds them from the events for a trace recorded before that.
"""

import json
import re

from nixrec.recorder.trace.syscalls import FD_CALLS

STANDARD = ("unpackPhase", "patchPhase", "configurePhase", "buildPhase", "checkPhase",
            "installPhase", "fixupPhase", "installCheckPhase", "distPhase")
# Where nixpkgs splices the user's extra phase lists into the standard one.
_SPLICE_BEFORE = {"unpackPhase": "prePhases", "configurePhase": "preConfigurePhases",
                  "buildPhase": "preBuildPhases", "installPhase": "preInstallPhases",
                  "fixupPhase": "preFixupPhases", "distPhase": "preDistPhases"}
# The switch that skips a phase, and whether it must be set (do*) or unset (dont*).
SWITCHES = {"unpackPhase": ("dontUnpack", False), "patchPhase": ("dontPatch", False),
            "configurePhase": ("dontConfigure", False), "buildPhase": ("dontBuild", False),
            "checkPhase": ("doCheck", True), "installPhase": ("dontInstall", False),
            "fixupPhase": ("dontFixup", False),
            "installCheckPhase": ("doInstallCheck", True), "distPhase": ("doDist", True)}
# Older nixpkgs' `header` lines, one per standard phase.
OLD_HEADERS = {"unpacking sources": "unpackPhase", "patching sources": "patchPhase",
               "configuring": "configurePhase", "building": "buildPhase",
               "running tests": "checkPhase", "installing": "installPhase",
               "post-installation fixup": "fixupPhase",
               "running install tests": "installCheckPhase",
               "doing a distribution build": "distPhase"}
_RUNNING = re.compile(r"^Running phase: ([A-Za-z_][A-Za-z0-9_]*)\s*$")
# A phase name as a shell function or variable may spell it.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def announcement(line: str):
    """-> (phase name, style) when the log line announces a phase, else None."""
    m = _RUNNING.match(line)
    if m:
        return m.group(1), "plain"
    if line.startswith("@nix "):
        try:
            msg = json.loads(line[5:])
        except ValueError:
            return None
        if isinstance(msg, dict) and msg.get("action") == "setPhase" \
                and isinstance(msg.get("phase"), str) and _NAME.match(msg["phase"]):
            return msg["phase"], "structured"
        return None
    name = OLD_HEADERS.get(line.strip())
    return (name, "old") if name else None


def env_dict(ev) -> dict:
    """The builder's environment from its exec event ("K=V" list, or a dict)."""
    env = (ev.args or {}).get("env")
    if isinstance(env, dict):
        return env
    out = {}
    for item in env or ():
        k, sep, v = str(item).partition("=")
        if sep:
            out[k] = v
    return out


def expected(env: dict) -> list:
    """The phases genericBuild would run with this environment, in order."""
    given = env.get("phases", "").split()
    if given:
        return given
    names = []
    for phase in STANDARD:
        names += env.get(_SPLICE_BEFORE.get(phase, ""), "").split()
        names.append(phase)
    return names + env.get("postPhases", "").split()


def skip_reason(phase: str, env: dict):
    """Why genericBuild skips `phase` with this environment (None: it runs it)."""
    sw = SWITCHES.get(phase)
    if sw is None:
        return None
    var, must_be_set = sw
    is_set = bool(env.get(var))
    if must_be_set and not is_set:
        return f"{var} is not set"
    if not must_be_set and is_set:
        return f"{var} is set"
    return None


class PhaseTracker:
    """Folds events into phases; memory: one small dict per phase."""

    def __init__(self):
        self.announcer = None       # the process that announced the first phase
        self.env = None             # the builder's environment
        self.runs = []              # one dict per announced phase, in order
        self.builder_exit = None    # the builder's exit status (None: killed, or not seen)
        self.builder_ended = False
        self.last_seq = 0
        self.last_time = 0
        self._styles = set()        # the forms the current run was announced in
        self._lead = None           # (proc, seq): the fd calls just before a write

    def see(self, ev, refused=False) -> None:
        self.last_seq, self.last_time = ev.seq, ev.time
        kind = ev.kind
        if kind == "syscall":
            # Most events: only a refused call counts (the recorder calls
            # this on every event it writes).
            if refused and self.runs:
                self.runs[-1]["refused"] += 1
            # bash redirects an announcement (`echo ... >&$NIX_LOG_FD`) with
            # dup2 just before the write: those calls open the run they
            # announce. Counted in the phase before, `--until-phase-end` of
            # that one stopped inside the next runPhase (curPhase already
            # the next phase's).
            if ev.syscall in FD_CALLS:
                if self._lead is None or self._lead[0] != ev.proc:
                    self._lead = (ev.proc, ev.seq)
            else:
                self._lead = None
            return
        if kind == "output" and (self.announcer is None or ev.proc == self.announcer):
            self._announced(ev)
        self._lead = None
        cur = self.runs[-1] if self.runs else None
        if cur is not None:
            if kind == "fork" and not (ev.args or {}).get("thread") and ev.result is not None \
                    and ev.result >= 0:
                cur["processes"] += 1
            if refused:
                cur["refused"] += 1
        if ev.proc == "1":
            if kind == "exec" and self.env is None and (ev.args or {}).get("env") is not None:
                self.env = env_dict(ev)
            elif kind == "exit":
                self.builder_ended = True
                self.builder_exit = (ev.args or {}).get("status", ev.result)

    def _announced(self, ev) -> None:
        data = (ev.args or {}).get("data")
        if not data:
            return
        text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) \
            else str(data)
        for line in text.splitlines():
            found = announcement(line)
            if found is None:
                continue
            name, style = found
            if style == "old" and ev.proc != "1":
                continue            # "building" is a common line: only the builder's counts
            if self._same_run(name, style):
                continue            # the same runPhase's other announcement
            self.announcer = ev.proc
            self._styles = {style}
            lead = self._lead
            first = lead[1] if lead is not None and lead[0] == ev.proc else ev.seq
            # "announced": the write itself, where --until-phase stops (replay
            # does not match fd calls: replayer/matcher.py).
            self.runs.append({"name": name, "style": style, "first": first,
                              "announced": ev.seq,
                              "start": ev.time, "processes": 0, "refused": 0})

    def _same_run(self, name, style) -> bool:
        """Whether an announcement belongs to the phase run that is on.

        One runPhase may announce its phase in several forms: nixpkgs' writes
        `@nix {"action":"setPhase"...}` to $NIX_LOG_FD, then `Running phase:`
        to stdout, in two writes; older ones wrote the setPhase message and a
        `header` line. So a second announcement of the current phase in a
        form it has not used yet is the same run; the same form again is the
        phase run a second time.
        """
        if not self.runs or self.runs[-1]["name"] != name:
            return False
        if style in self._styles:
            return False
        self._styles.add(style)
        return True

    def result(self) -> list:
        """Every phase: the announced ones with their events, and those of the
        expected list that never ran (skipped, or not reached after a failure)."""
        runs = []
        for i, run in enumerate(self.runs):
            nxt = self.runs[i + 1] if i + 1 < len(self.runs) else None
            last = nxt["first"] - 1 if nxt else self.last_seq
            end = nxt["start"] if nxt else self.last_time
            runs.append(dict(run, status="ran", last=last, events=last - run["first"] + 1,
                             duration=max(0, end - run["start"])))
        failed = self.builder_ended and self.builder_exit != 0
        if failed and runs:
            runs[-1]["status"] = "failed"
        return _with_unrun(runs, self.env or {}, failed or not self.builder_ended)


def _with_unrun(runs, env, stopped) -> list:
    """Merge the phases that never ran into the announced ones, in the
    expected order. After the last announced phase of a failed (or cut
    short) build a phase was not reached; anywhere else it was skipped."""
    if not runs:
        return []
    want = expected(env)
    ran = [r["name"] for r in runs]
    out, k = [], 0
    for name in want:
        if name in ran[k:]:
            j = ran.index(name, k)
            out += runs[k:j + 1]
            k = j + 1
            continue
        after_last = k >= len(runs)
        if after_last and stopped:
            status, why = "not reached", None
        else:
            status, why = "skipped", skip_reason(name, env)
        out.append({"name": name, "status": status, "why": why, "first": None, "last": None,
                    "start": None, "duration": 0, "processes": 0, "events": 0,
                    "refused": 0, "style": None})
    return out + runs[k:]


def split_runs(phases) -> bool:
    """Whether a phase list (a trace's summary) has one runPhase as two runs:
    a 1-event run (its announcement alone) then the same phase announced in
    another form, as recorders before issue 22 folded nixpkgs' real stdenv."""
    ran = [p for p in phases if p.get("first") is not None]
    return any(a["name"] == b["name"] and a.get("events") == 1 and a.get("style") != b.get("style")
               for a, b in zip(ran, ran[1:]))


def find(phases, name):
    """The phase called `name` (its first run when it ran more than once), or None."""
    for p in phases or ():
        if p["name"] == name:
            return p
    return None


def lookup(phases, name) -> dict:
    """The phase `name` that ran, for --phase and --until-phase; BadInput
    (one line) when the trace has none, it was skipped or never reached."""
    from nixrec.recorder.errors import BadInput
    if not phases:
        raise BadInput("the trace has no phases: the build announced none (not a stdenv "
                       "build: no 'Running phase:' line, @nix setPhase message or "
                       "older header from its builder)")
    p = find(phases, name)
    if p is None:
        raise BadInput(f"the trace has no phase {name} "
                       f"(it has {', '.join(q['name'] for q in phases)})")
    if p["first"] is None:
        why = f": {p['why']}" if p.get("why") else ""
        raise BadInput(f"phase {name} did not run: it was {p['status']}{why}")
    return p


def containing(phases, seq):
    """The phase that ran event `seq`, or None (before the first phase)."""
    for p in phases or ():
        if p["first"] is not None and p["first"] <= seq <= p["last"]:
            return p
    return None


__all__ = ["PhaseTracker", "announcement", "expected", "skip_reason", "split_runs", "find",
           "lookup",
           "containing",
           "STANDARD"]
