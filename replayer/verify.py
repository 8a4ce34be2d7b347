"""`nixrec why --verify`: a cause proven by an experiment (docs/analysis.md, docs/replay.md).

For each of `why`'s top candidates, the build is run again in nixrec's own
sandbox, rebuilt from the trace the way replay rebuilds it (replayer/session's
plan_of, recorder/build.Build), with the one difference the cause names
removed:

- a host path the sandbox hid: that path (or, when the host has no such file,
  its nearest directory the host has) bound read-only at the same place;
- a store path outside the input closure: added to the inputs;
- HOME written to: /homeless-shelter made a writable (empty) directory;
- a network or DNS attempt: nothing changed (the sandbox never has a network):
  the cause is confirmed when the run makes the same attempt again.

What a run shows (`outcome`): `fixed`, the builder exits 0; `further`, the
build got past the recorded failure (the process that failed there no longer
fails so) and fails later, or is still running at the limit; `other`, it
fails elsewhere without getting past the recorded failure; `needed`, the
cause's own failing call succeeds now but the build ends as recorded (the
path is used, something else is hidden too); `same`, the process that failed
fails again with the same status, and the cause's own failing call failed
again (or, for a cause without one, it ended on the same words as recorded);
`confirmed` (network); `unknown`, the limit came before the
recorded point of failure. A run stops at the first of: the build's end, the
recorded failure repeated (`same`, `confirmed`), the limit (LIMIT_FACTOR times
the recording's duration).

Experiments are forked processes (a Build's tracer and signal handlers want a
main thread of their own); each reports its progress and result as JSON lines
on a pipe, which the parent reads to draw the status line. Everything the
caller gets is a value: `verify()` returns the per-cause verification dicts.
"""

import json
import os
import re
import select
import shutil
import signal
import tempfile
import threading
import time

from nixrec.recorder.build import Build
from nixrec.recorder.errors import BadInput, NixrecError
from nixrec.recorder.session import check_host
from nixrec.recorder.sandbox.steps import build_ids
from nixrec.replayer.session import calls_of, check_inputs, plan_of

# A run is stopped at this many times the recording's duration: the issue's
# target (a failed build recorded in under 60 s verifies in at most 3x per
# candidate). FLOOR: a sandbox's setup and teardown alone take ~0.3 s, and a
# build recorded in a fraction of a second still needs a moment to succeed.
LIMIT_FACTOR = 3.0
FLOOR_SECONDS = 2.0
NO_DURATION = 20.0
TEARDOWN = 1.5          # seconds: hello's configure killed at the limit took 1.2 to end
# Progress lines from an experiment: at most this often.
PROGRESS_EVERY = 0.25
# Bytes of each process's log kept to name where a run failed.
TAIL = 400
# A run that failed elsewhere went further only with more events than this
# times the recording's (seen: 1.3x for cargo given HOME, 1.03x for go given a
# /sys file that changed nothing, its failure's words varying from run to run).
FURTHER_FACTOR = 1.1
# Lines of the log kept to tell whether the recorded last words came again.
SAID = 50
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# Kinds whose cause is a host or store path the sandbox hid.
PATH_KINDS = ("undeclared-host-path", "undeclared-store-path", "missing-interpreter",
              "missing-executable", "missing-header")
NET_KINDS = ("network", "dns")
# Places that are the sandbox's own: exposing the host's copy changes nothing.
_OWN = ("/build", "/tmp", "/proc", "/dev", "/nix/store")


# --- which change tests which cause ---------------------------------------------------

def change_for(c, plan):
    """-> the change that removes cause `c`'s difference, as a dict
    {"what", "text", "path"?}, or (None, why not) when no one change does."""
    kind = c.get("kind")
    if kind == "home":
        home = plan.home or "/homeless-shelter"
        return {"what": "home", "path": home,
                "text": f"HOME ({home}) made a writable directory"}, None
    if kind in NET_KINDS:
        what = c.get("host") or c.get("address")
        return {"what": "network", "attempt": what,
                "text": f"none (the sandbox has no network): is {what} asked for again?"}, None
    if kind not in PATH_KINDS:
        return None, f"a {kind} cause names no one path to expose"
    if kind == "missing-executable":
        return _command_change(c)
    store_dir = plan.store_dir or "/nix/store"
    absent = "the host has none of its paths either: nothing to expose"
    for p in _paths_of(c):
        if p.startswith(store_dir + "/"):
            sp = store_dir + "/" + p[len(store_dir) + 1:].split("/", 1)[0]
            if sp in (plan.inputs or ()):
                continue                    # there already: not the difference
            if os.path.exists(sp):
                return {"what": "input", "path": sp,
                        "text": f"{sp} added to the inputs"}, None
            absent = f"{sp} is not in this machine's store: nothing to add"
            continue
        host = _host_has(p)
        if host and not _own(host):
            return {"what": "bind", "path": host,
                    "text": f"{host} bound read-only from the host"}, None
    return None, absent


def _command_change(c):
    """A command not found on PATH: the host's copy in one of the directories
    the build looked in, bound there."""
    cmd = c.get("command")
    for d in c.get("looked_in") or ():
        p = d.rstrip("/") + "/" + (cmd or "")
        if cmd and not _own(p) and os.path.exists(p):
            return {"what": "bind", "path": p, "text": f"{p} bound read-only from the host"}, None
    return None, f"no directory the build looked in has {cmd} on the host"


def _paths_of(c):
    """The paths a cause names, the most precise first."""
    out = []
    if c.get("looked_for") and c.get("path"):
        # A file searched for in a list of places: its directory is what the
        # sandbox hides (the summary names it), and what comes with the file
        # (zlib.h includes zconf.h) is there too.
        out.append(os.path.dirname(c["path"]))
    for k in ("link_target", "interpreter", "path", "accessed"):
        v = c.get(k)
        if isinstance(v, str) and v.startswith("/") and v not in out:
            out.append(v)
    return out


def _host_has(path):
    """`path` when the host has it, else its nearest directory the host has
    (not /): the thing to bind. None when only / is there."""
    p = os.path.normpath(path)
    while p not in ("/", ""):
        if os.path.exists(p):
            return p
        p = os.path.dirname(p)
    return None


def _own(path):
    return any(path == o or path.startswith(o + "/") for o in _OWN)


def apply_change(plan, change, workdir):
    """The plan with `change` made (a new sandbox path or input)."""
    if change["what"] == "bind":
        plan.sandbox_paths = list(plan.sandbox_paths or []) + [
            {"target": change["path"], "source": change["path"], "optional": False}]
    elif change["what"] == "input":
        plan.inputs = sorted(set(plan.inputs or []) | {change["path"]})
    elif change["what"] == "home":
        home = os.path.join(workdir, "home")
        os.makedirs(home)
        uid, gid = build_ids(plan)
        if os.geteuid() == 0:
            os.chown(home, uid, gid)         # the build user's own, as /build is
        plan.sandbox_paths = list(plan.sandbox_paths or []) + [
            {"target": change["path"], "source": home, "optional": False,
             "writable": True}]
    return plan


# --- what the recorded failure was -----------------------------------------------------

def target_of(rep, c):
    """What a run is compared with: the recorded failure's origin (the last
    process of the failure chain), its program and status, and for a network
    cause the attempt."""
    chain = rep.get("failure_chain") or []
    origin = chain[-1] if chain else {}
    net = c.get("kind") in NET_KINDS
    tail = [e["text"] for e in rep.get("stderr_tail") or () if e.get("text", "").strip()]
    return {"origin": origin.get("proc"), "said": _clean(tail[-1]) if tail else None, "program": _base(origin.get("argv")),
            "status": origin.get("exit_code"), "signal": origin.get("signal"),
            # The cause's own failing call: (call, path, errno) as recorded.
            "call": None if net or not c.get("syscall") else
            (c["syscall"], c.get("accessed") or c.get("path"), c.get("errno")),
            "host": c.get("host") if net else None,
            "address": c.get("address") if net else None}


def _clean(line):
    return "".join(ch if ch.isprintable() else "?" for ch in line.strip())[:200]


def _base(argv):
    return argv[0].rsplit("/", 1)[-1] if argv else None


class Watch:
    """An experiment's events, as they come: enough to say its outcome."""

    def __init__(self, target):
        self.t = target
        self.events = 0
        self.program = {}          # proc -> argv0 basename of its last exec
        self.failed = {}           # proc -> (status, signal, seq) of a failed exit
        self.children = {}         # proc -> [children in fork order]
        self.tail = {}             # proc -> the end of its log output
        self.verdict = None        # "same" / "confirmed": the run may stop now
        self.recurred = False      # the cause's failing call failed again
        self.said = []             # the last SAID distinct lines of the log
        self.passed = False        # the recorded failure's origin got past it

    def see(self, ev):
        self.events += 1
        k = ev.kind
        if k == "fork" and ev.args.get("child"):
            self.children.setdefault(ev.proc, []).append(ev.args["child"])
            # A child runs its parent's program until it execs (busybox's
            # applets never do).
            self.program[ev.args["child"]] = self.program.get(ev.proc)
        elif k == "exec" and not ev.failed:
            self.program[ev.proc] = _base(ev.args.get("argv") or [ev.path or ""])
        elif k == "output":
            # A message comes in pieces (cp writes its path apart): keep a tail.
            data = bytes(ev.args.get("data") or b"").decode("utf-8", "replace")
            self.tail[ev.proc] = (self.tail.get(ev.proc, "") + data)[-TAIL:]
            line = self.last_line(ev.proc)
            if line and line not in self.said:
                self.said.append(line)
                del self.said[:-SAID]
        elif k == "exit":
            self._exit(ev)
        elif k == "syscall" or k == "exec":
            t = self.t
            if ev.failed and t["call"] is not None and \
                    (ev.syscall, ev.path, ev.errno) == t["call"]:
                self.recurred = True
            elif ev.args and (t["host"] or t["address"]):
                # The same attempt: the question asked (a resolver's UDP
                # connect succeeds; only the query fails), or the address.
                if (t["host"] and ev.args.get("dns") == t["host"]) or \
                        (t["address"] and ev.args.get("address") == t["address"]):
                    self.verdict = "confirmed"

    def _exit(self, ev):
        status, sig = ev.args.get("status"), ev.args.get("signal")
        if status or sig:
            self.failed[ev.proc] = (status, sig, ev.seq)
        t = self.t
        if ev.proc != t["origin"] or self.program.get(ev.proc) != t["program"]:
            return
        if (status, sig) != (t["status"], t["signal"]):
            self.passed = True
        elif self.recurred or t["call"] is None:
            self.verdict = self.verdict or "same"     # it failed there again
        # (The same status without the cause's failing call: the build's
        # last words at its end tell whether the failure is the same.)

    def last_line(self, proc):
        """The last non-blank line `proc` wrote, printable (the build chose it)."""
        lines = [x for x in _ANSI.sub("", self.tail.get(proc, "")).splitlines() if x.strip()]
        return _clean(lines[-1]) if lines else None

    def said_again(self):
        """Did the build end on the words it ended on in the recording? (A
        change that made the cause's call succeed and left the failure as it
        was: the call was not it.)"""
        return self.t["said"] is not None and self.t["said"] in self.said

    def origin(self):
        """The live failure's origin: from the builder down through the
        failed children, the last one to fail at each step."""
        proc = "1"
        while True:
            kids = [c for c in self.children.get(proc, ()) if c in self.failed]
            if not kids:
                return proc
            proc = max(kids, key=lambda c: self.failed[c][2])


def outcome(w, builder_status, stopped_at_limit, recorded_events):
    """-> (outcome, where or None) of a finished experiment."""
    if w.verdict == "confirmed":
        return "confirmed", None
    if w.verdict == "same" and not w.passed:
        return "same", None
    if builder_status == ("exit", 0):
        return "fixed", None
    if stopped_at_limit:
        if w.passed or w.events > recorded_events:
            return "further", "still running at the limit, past the recorded failure"
        return "unknown", "the limit came before the recorded point of failure"
    proc = w.origin()
    status, sig, _ = w.failed.get(proc, (None, None, None))
    prog = w.program.get(proc) or "?"
    t = w.t
    # The same program failing the same way (not the same tree path: go's
    # processes and make's jobs are numbered in the order they come).
    same_origin = (prog, status, sig) == (t["program"], t["status"], t["signal"])
    if same_origin and not w.passed and t["call"] is not None and not w.recurred \
            and w.said_again():
        # The change took: the cause's own call no longer fails. The failure
        # stayed as it was, so the build needs more than this one path (a
        # catalog found, then the files it names still hidden): the cause is
        # real, and must not drop below one that changed nothing.
        return "needed", ("its failing call succeeds now, the build fails as recorded: "
                          "something else is hidden too")
    if same_origin and not w.passed and (w.recurred or t["call"] is None or w.said_again()):
        return "same", None
    line = w.last_line(proc) or (w.said[-1] if w.said else None)
    where = f"{prog} ({proc}) " + (f"killed by {sig}" if sig else f"exit {status}")
    # Later only if the recorded failure's process got past it; else the
    # change broke something else (or the build took another way).
    # Past the recorded failure: its process got past it, or the cause's own
    # failing call did not fail again (go, given HOME, fails on its proxy);
    # and the build did more than it did when recorded (go numbers its
    # processes in the order they come: a tree path alone proves little).
    past = (w.passed or (t["call"] is not None and not w.recurred)) \
        and w.events > FURTHER_FACTOR * recorded_events
    return ("further" if past else "other"), where + (f": {line}" if line else "")


# --- one experiment (in a forked child) -------------------------------------------------

def run_experiment(header, change, target, limit, recorded_events, report):
    """Run the build once with `change`; `report(dict)` gets progress. -> result dict."""
    plan = plan_of(header)
    calls = calls_of(header)
    workdir = tempfile.mkdtemp(prefix="nixrec-verify-")
    w = Watch(target)
    state = {"at_limit": False, "build": None, "last": 0.0}
    t0 = time.monotonic()
    # Killing, draining and removing the sandbox take a moment: the build is
    # stopped that much before the limit, so that the run ends within it.
    deadline = limit - min(TEARDOWN, limit / 10)

    def emit(ev):
        w.see(ev)
        b = state["build"]
        now = time.monotonic()
        if w.verdict and not (w.verdict == "same" and w.passed):
            if not state.get("decided"):
                state["decided"] = True
                b.tracer.kill_build()             # decided: no need to run on
        elif now - t0 > deadline and not state["at_limit"]:
            state["at_limit"] = True
            b.tracer.kill_build()
        if now - state["last"] > PROGRESS_EVERY:
            state["last"] = now
            report({"events": w.events, "current": b.tracer.current})

    try:
        apply_change(plan, change, workdir)
        b = state["build"] = Build(plan, workdir, emit, calls=calls)
        b.start()
        try:
            _run_bounded(b, t0, deadline, state)
        finally:
            b.stop()
            b.remove_sandbox()
        seconds = time.monotonic() - t0
        result, where = outcome(w, b.tracer.builder_status, state["at_limit"],
                                recorded_events)
        out = {"change": change["text"], "outcome": result,
               "seconds": round(seconds, 2), "events": w.events}
        if where:
            out["where"] = where
        return out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_bounded(b, t0, limit, state):
    """b.run(), with a timer that stops a build silent past the limit
    (emit sees only builds that make calls)."""
    def guard():
        while not done.wait(0.1):
            if time.monotonic() - t0 > limit:
                state["at_limit"] = True
                b.tracer.kill_build()
                return
    done = threading.Event()
    th = threading.Thread(target=guard, daemon=True)
    th.start()
    try:
        b.run()
    finally:
        done.set()


# --- the parent: forks, status, results --------------------------------------------------

class _Child:
    def __init__(self, i, pid, fd):
        self.i, self.pid, self.fd = i, pid, fd
        self.buf = b""
        self.result = None
        self.progress = {}


def _spawn(i, fn):
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                        # the experiment
        os.close(r)
        code = 0
        try:
            def report(d):
                os.write(wfd, (json.dumps(d) + "\n").encode())
            res = fn(report)
            report({"result": res})
        except NixrecError as e:
            report({"error": str(e).splitlines()[0] if str(e) else "error",
                    "code": e.exit_code})
        except BaseException as e:      # noqa: BLE001 - becomes the parent's one line
            try:
                report({"error": f"internal error: {type(e).__name__}: {e}", "code": 70})
            except BaseException:       # noqa: BLE001
                pass
            code = 70
        os._exit(code)
    os.close(wfd)
    return _Child(i, pid, r)


def _read(child):
    try:
        data = os.read(child.fd, 65536)
    except OSError:
        data = b""
    if not data:
        return False
    child.buf += data
    *lines, child.buf = child.buf.split(b"\n")
    for line in lines:
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "result" in d or "error" in d:
            child.result = d
        else:
            child.progress = d
    return True


def verify(trace_header, summary, rep, max_n=3, jobs=None, status=None):
    """Run the experiments for `rep`'s top `max_n` causes. -> {"recording_seconds",
    "limit_seconds", "jobs", "verifications": [dict per cause tried, or None]}.
    `status(dict)`: progress for the status line. Raises NixrecError for what
    stops every experiment (no plan, inputs missing, no namespaces)."""
    if rep.get("status") == "succeeded":
        raise BadInput("why --verify: the build succeeded: there is no failure to verify")
    plan = plan_of(trace_header)                # one line and exit 2 when there is none
    if plan.no_sandbox:
        raise BadInput("why --verify: the recording ran without the sandbox "
                       "(--no-sandbox): nothing it hid can be exposed")
    check_inputs(trace_header)
    calls_of(trace_header)
    check_host()                                # no user namespaces: exit 3, before any run
    # A trace without a recorded end has no duration: NO_DURATION stands in.
    recorded = float((summary or {}).get("duration") or 0) or NO_DURATION
    limit = max(LIMIT_FACTOR * recorded, FLOOR_SECONDS)
    rec_events = int((summary or {}).get("events") or 0)
    causes = (rep.get("root_causes") or [])[:max_n]
    plans = []
    for i, c in enumerate(causes):
        change, why_not = change_for(c, plan_of(trace_header))
        plans.append((i, c, change, why_not))
    # One run per distinct change (three HOME writes of cargo's are one experiment).
    todo, same_as = [], {}
    for i, c, ch, _ in plans:
        if ch is None:
            continue
        first = next((j for j, _, other in todo if other == ch), None)
        if first is None:
            todo.append((i, c, ch))
        else:
            same_as[i] = first
    jobs = max(1, min(jobs or max(1, (os.cpu_count() or 1) // 2), len(todo) or 1))
    results = {i: {"change": None, "outcome": "untested", "seconds": 0.0, "why": why_not}
               for i, c, ch, why_not in plans if ch is None}
    _run_all(trace_header, rep, todo, jobs, limit, rec_events, results, status)
    for i, first in same_as.items():
        results[i] = dict(results[first], same_run_as=first + 1)
    return {"recording_seconds": round(recorded, 2), "limit_seconds": round(limit, 2),
            "jobs": jobs, "verifications": [results.get(i) for i in range(len(causes))]}


def _run_all(header, rep, todo, jobs, limit, rec_events, results, status):
    running, queue, t0 = {}, list(todo), time.monotonic()
    try:
        while queue or running:
            while queue and len(running) < jobs:
                i, c, ch = queue.pop(0)
                target = target_of(rep, c)

                def fn(report, ch=ch, target=target):
                    return run_experiment(header, ch, target, limit, rec_events, report)
                child = _spawn(i, fn)
                child.text = ch["text"]
                child.t0 = time.monotonic()
                running[child.fd] = child
            ready, _, _ = select.select(list(running), [], [], 0.2)
            for fd in ready:
                child = running[fd]
                if not _read(child):
                    del running[fd]
                    os.close(fd)
                    os.waitpid(child.pid, 0)
                    results[child.i] = _result_of(child)
            if status:
                status(_progress(running, len(todo), len(results), t0))
    except BaseException:
        for child in running.values():        # ours, by pid: Build kills its build
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in running.values():
            os.waitpid(child.pid, 0)
        raise


def _result_of(child):
    d = child.result
    if d is None:
        raise NixrecError(f"why --verify: the experiment for cause {child.i + 1} "
                          "ended without a result", 70)
    if "error" in d:
        raise NixrecError(f"why --verify: {d['error']}", d.get("code") or 70)
    return d["result"]


def _progress(running, total, done, t0):
    now = time.monotonic()
    events = sum(c.progress.get("events", 0) for c in running.values())
    doing = ", ".join(f"#{c.i + 1} {c.text[:40]} {now - c.t0:.0f}s"
                      for c in sorted(running.values(), key=lambda c: c.i))
    return {"elapsed": now - t0, "events": events,
            "current": f"verify {done}/{total} done" + (f"; {doing}" if doing else ""),
            "phase": ""}


# --- the report ----------------------------------------------------------------------------

# Outcomes that show the change mattered, and how firmly.
PROVEN = ("fixed", "further", "confirmed")


def annotate(rep, ver):
    """Put each verification on its cause and move the causes a change did
    not affect (`same`) below those it did (stable otherwise)."""
    causes = rep.get("root_causes") or []
    for c, v in zip(causes, ver["verifications"]):
        if v is not None:
            c["verification"] = v
    n = len(ver["verifications"])
    head, tail = causes[:n], causes[n:]
    head.sort(key=lambda c: (c.get("verification") or {}).get("outcome") == "same")
    rep["root_causes"] = head + tail
    rep["verify"] = {k: ver[k] for k in ("recording_seconds", "limit_seconds", "jobs")}
    return rep
