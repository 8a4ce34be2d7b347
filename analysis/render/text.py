"""Short human text for `why`, `deps`, `phases` and `diff`.

Each renderer first escapes every string of its report (printable.py): paths,
argv and log lines are the build's, and reach a terminal.
"""

from nixrec.recorder.tracefile.printable import escape_all

TITLES = {"host": "Host paths", "store": "Store paths not in the closure",
          "home": "HOME", "network": "Network", "dns": "DNS",
          "process": "Other processes (signals and ptrace refused)"}


# A failure chain longer than this (a fork bomb's is thousands of shells) shows
# its first and last links and how many are left out between them.
CHAIN_SHOWN = 8


def why_text(rep: dict) -> str:
    rep = escape_all(rep)
    out = []
    for p in rep.get("partial") or ():
        out.append(f"note: partial trace: {p}")
        break
    if rep["status"] == "succeeded":
        out.append("the build succeeded: nothing to explain")
        return "\n".join(out) + "\n"
    inc = rep.get("incomplete")
    if rep["status"] == "incomplete":
        out += _incomplete_lines(inc)
        if not rep["failure_chain"]:
            out.append("no failure was recorded before the end")
            out.append(f"replay: {rep['replay']}")
            return "\n".join(out) + "\n"
    else:
        code = rep.get("exit_signal") or f"exit code {rep.get('exit_code')}"
        if rep.get("killed"):
            code += f": {rep['killed']}"
        out.append(f"build failed ({code})")
        if inc:
            out.append(f"note: incomplete recording: {inc['reason']}")
    chain = rep["failure_chain"]
    if chain:
        label = "last failure seen" if rep["status"] == "incomplete" else "failure chain"
        out.append(f"{label}: " + _chain_text(chain))
    if rep.get("phase"):
        out += _phase_line(rep["phase"])
    causes = rep["root_causes"]
    if causes:
        top = causes[0]
        out.append(f"root cause: {top['summary']}")
        for line in top.get("evidence", ()):
            out.append(f"  {line}")
        if top.get("via"):
            # The events `why` went through, from the symptom to the cause.
            out.append("  followed: " + " -> ".join(
                f"#{s}" for s in top.get("evidence_chain", ())))
        out.append(f"hint: {top['hint']}")
        if len(causes) > 1:
            out.append("other suspects:")
            for c in causes[1:4]:
                out.append(f"  [{c['kind']}] #{c['seq']} {c['summary']}")
    if rep.get("diff"):
        out.append(rep["diff"])
    out.append(f"replay: {rep['replay']}")
    return "\n".join(out) + "\n"


def _incomplete_lines(inc) -> list:
    """`why`'s first lines for a recording without its end: no verdict,
    what it holds."""
    rec = inc["recorded"]
    last = ""
    if rec.get("last_proc"):
        last = f"; the last event was of {_argv0(rec['last_argv'])} ({rec['last_proc']})"
    if not rec["events"]:
        return [f"incomplete: {inc['reason']}: no verdict on the build",
                "recorded: no event (the build had not started)"]
    running = f", {rec['running']} still running at the end" if rec["running"] else ""
    return [f"incomplete: {inc['reason']}: no verdict on the build",
            f"recorded: {rec['events']} events of {rec['processes']} processes"
            f"{running}{last}"]


def _chain_text(chain) -> str:
    links = [f"{_argv0(e['argv'])} ({_proc(e['proc'])}, {e.get('signal') or e['exit_code']})"
             for e in (chain if len(chain) <= CHAIN_SHOWN else
                       chain[:CHAIN_SHOWN // 2] + chain[-2:])]
    if len(chain) > CHAIN_SHOWN:
        links.insert(CHAIN_SHOWN // 2, f"... {len(chain) - CHAIN_SHOWN // 2 - 2} more ...")
    return " <- ".join(links)


def _proc(path: str) -> str:
    """A tree path as shown in a line: a fork bomb's are thousands of levels deep."""
    parts = path.split(".")
    if len(parts) <= 12:
        return path
    return f"{'.'.join(parts[:4])}...{'.'.join(parts[-4:])}, depth {len(parts)}"


def what_of(g) -> str:
    """What a deps group is about: a path, an address, a host or a process."""
    if g.get("target_pid") is not None or g["category"] == "process":
        sig = f" ({g['signal']})" if g.get("signal") else ""
        return f"pid {g.get('target_pid')}{sig}"
    return g.get("path") or g.get("address") or g.get("host")


def _argv0(argv):
    return (argv[0].rsplit("/", 1)[-1] if argv else "?")


# deps groups (deps.GROUPS) as the reports title them.
GROUP_TITLES = {"used": "Used outside the declared inputs",
                "hidden": "Hidden by the sandbox (the host has them)",
                "refused": "Refused (the build asked for them and did not get them)"}


def probe_line(rep: dict):
    """The absent probes in one line (deps.py: lookups every program makes and
    does without), or None: the most frequent first."""
    probes = [g for g in rep["undeclared"] if g["category"] == "probe"]
    if not probes:
        return None
    top = sorted(probes, key=lambda g: (-g["count"], g["first_seq"]))
    shown = ", ".join(f"{what_of(g)} x{g['count']}" for g in top[:3])
    more = f", and {len(probes) - 3} more" if len(probes) > 3 else ""
    lookups = sum(g["count"] for g in probes)
    return f"Absent probes, not dependencies: {len(probes)} path" \
        f"{'s' if len(probes) != 1 else ''}, {lookups} lookup" \
        f"{'s' if lookups != 1 else ''} ({shown}{more}; --json lists them, " \
        "category \"probe\")"


def deps_text(rep: dict) -> str:
    rep = escape_all(rep)
    out = []
    if not any(g["category"] != "probe" for g in rep["undeclared"]):
        out.append("no undeclared accesses")
    for group, title in GROUP_TITLES.items():
        mine = [g for g in rep["undeclared"] if g.get("group") == group]
        if mine:
            out.append(f"{title}:")
        last = None
        for g in mine:
            if g["category"] != last:
                last = g["category"]
                out.append(f"  {TITLES[last]}:")
            what = what_of(g)
            err = f" {g['errno']}" if g.get("errno") else ""
            out.append(f"    {what}  {g['access']} {g['result']}{err} x{g['count']} "
                       f"(first #{g['first_seq']}, procs {', '.join(g['procs'][:5])})")
    line = probe_line(rep)
    if line:
        out.append(line)
    if rep["unused_inputs"]:
        out.append("unused inputs:")
        out += [f"  {p}" for p in rep["unused_inputs"]]
    if rep.get("hidden_references"):
        out.append("store paths the outputs name that are not inputs (Nix records no "
                   "reference: missing wherever the output is copied alone):")
        out += [f"  {h['path']}  in output {h['output']}"
                + (f": {', '.join(h['files'])}" if h.get("files") else "")
                for h in rep["hidden_references"]]
    if rep.get("referenced_unused"):
        out.append("inputs the build never touched that its outputs refer to "
                   "(runtime dependencies: not unused):")
        out += [f"  {g['path']}  (referred to by {', '.join(g['outputs'])})"
                for g in rep["referenced_unused"]]
    return "\n".join(out) + "\n"


# --- `nixrec diff` -------------------------------------------------------------------

def cause_text(c) -> str:
    """One cause of a difference, in a line: `[clock] process 1.2 (event 13): ...`."""
    where = ""
    if c.get("proc"):
        side = f"{c['side'].upper()} " if c.get("side") else ""
        at = f", {side}event {c['seq']}" if c.get("seq") else ""
        where = f" process {c['proc']}{at}:"
    through = " (its writes reached the file through a pipe)" if c.get("via") == "pipe" else ""
    return f"[{c['kind']}]{where} {c['what']}{through}"


def diff_text(rep: dict) -> str:
    """`nixrec diff`'s report: the verdict, then plan, processes, files."""
    rep = escape_all(rep)
    out = [f"note: {side.upper()} is a partial trace: {probs[0]}"
           for side, probs in sorted((rep.get("partial") or {}).items()) if probs]
    if not rep["different"]:
        return "\n".join(out + ["no difference"]) + "\n"
    top = rep.get("first_cause")
    if top:
        on = f" (for {top['output']}:{top['file']})" if top.get("file") else ""
        out.append(f"first cause{on}: {cause_text(top)}")
    if rep["plan"]:
        out.append("inputs and plan that differ (A / B):")
        for p in rep["plan"]:
            name = p.get("label") or p["what"]
            if p["what"] == "closure":
                name = f"input {p['path']}"
            elif p["what"] == "env":
                name = f"env {p['var']}"
            elif p["what"] == "host":
                name = f"host {p['key']}"
            out.append(f"  {name}: {_short(p.get('a'))} / {_short(p.get('b'))}")
    if rep["divergences"]:
        out.append("first difference in each process (A / B):")
        for d in rep["divergences"]:
            who = d["a_proc"] if d["a_proc"] == d["b_proc"] else f"{d['a_proc']} (B {d['b_proc']})"
            prog = f" ({d['a_argv0'] or d['b_argv0']})" if d["a_argv0"] or d["b_argv0"] else ""
            seqs = f"A event {d['a_seq'] or '-'}, B event {d['b_seq'] or '-'}"
            env = f", the values of {d['env']}" if d.get("env") else ""
            out.append(f"  process {who}{prog}: {d['why']} ({seqs}{env})")
            out.append(f"    A: {d['a'] or 'nothing'}")
            out.append(f"    B: {d['b'] or 'nothing'}")
    for o in rep["outputs"]:
        if o["only_in"]:
            out.append(f"output {o['output']}: made by {o['only_in'].upper()} only")
    if rep["files"]:
        out.append("output files that differ:")
        for f in rep["files"]:
            out.append(f"  {f['output']}:{f['file'] or ''}  {f['how']}")
            for side in ("a", "b"):
                w = f.get(f"{side}_writer")
                if w:
                    out.append(f"    written in {side.upper()} by process {w['proc']} "
                               f"({_argv0(w['argv'])}) at event {w['seq']}")
            for c in f.get("sources", ())[:5]:
                out.append(f"    {cause_text(c)}")
            if not f.get("sources"):
                out.append("    nothing its makers read is known to differ (docs/analysis.md)")
    return "\n".join(out) + "\n"


def _short(v, n=100) -> str:
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n] + "..."


def _secs(us) -> str:
    return "-" if us is None else f"{us / 1e6:.2f} s"


def phases_text(rep: dict) -> str:
    """The `nixrec phases` table: one row per phase, the failing one marked."""
    rep = escape_all(rep)
    rows = rep["phases"]
    if not rows:
        return ("no phases: the builder announced none (not a stdenv build: no "
                "'Running phase:' line, @nix setPhase message or older header)\n")
    width = max(len("phase"), *(len(p["name"]) for p in rows))
    out = [f"{'phase':<{width}}  {'start':>9}  {'duration':>9}  {'procs':>5}  "
           f"{'events':>7}  {'refused':>7}  events #"]
    for p in rows:
        if p["first"] is None:
            why = f": {p['why']}" if p.get("why") else ""
            out.append(f"{p['name']:<{width}}  {p['status']}{why}")
            continue
        refused = "?" if p.get("refused") is None else p["refused"]
        mark = ""
        if p["status"] == "failed" and rep.get("failed"):
            mark = f"  <- failed (build exit code {rep.get('exit_status')})"
        out.append(f"{p['name']:<{width}}  {_secs(p['start']):>9}  {_secs(p['duration']):>9}  "
                   f"{p['processes']:>5}  {p['events']:>7}  {refused:>7}  "
                   f"{str(p['first']) + '-' + str(p['last']):<13}{mark}".rstrip())
    if rep.get("incomplete"):
        out.append("note: incomplete recording (interrupted, or no end recorded): "
                   "the last phase shown did not finish")
    if rep.get("replay"):
        out.append(f"replay: {rep['replay']}")
    return "\n".join(out) + "\n"


def _phase_line(ph) -> list:
    """`why`'s lines about the phase the failure happened in."""
    out = [f"phase: {ph['name']} (events {ph['first']}-{ph['last']})"]
    if ph.get("command"):
        cmd = " ".join(ph["command"])
        if len(cmd) > 160:
            cmd = cmd[:157] + "..."
        out.append(f"  the command of {ph['name']} that failed: {cmd} "
                   f"(process {ph['command_proc']}, {ph['command_exit']})")
    else:
        out.append(f"  no command of {ph['name']} failed: a shell builtin or function "
                   "of the builder did (test, cd, a hook's false...)")
    return out


# `why --verify` (replayer/verify.py): what each experiment showed, in words.
_OUTCOME_WORDS = {
    "fixed": "the build succeeds: proven",
    "further": "the build gets past the recorded failure: proven",
    "confirmed": "the same attempt is made again: confirmed",
    "needed": "used, but the build still fails as recorded: part of the cause",
    "same": "no effect: not this",
    "unknown": "the limit came first: not shown",
    "other": "it fails another way, not past the recorded failure: not shown",
}


def verify_text(rep: dict) -> str:
    """The experiments of `why --verify`, after why_text: one line per cause
    tried, its change, outcome and seconds, then which causes were proven."""
    v = rep.get("verify") or {}
    tried = [(i, c) for i, c in enumerate(rep.get("root_causes") or [], 1)
             if c.get("verification")]
    if not tried:
        return "verify: no cause to test\n"
    out = [f"verify: each cause re-run in nixrec's sandbox with that one difference removed "
           f"(recording {v.get('recording_seconds', 0):.1f} s, limit "
           f"{v.get('limit_seconds', 0):.1f} s a run, {v.get('jobs', 1)} at a time):"]
    for i, c in tried:
        r = c["verification"]
        if not r.get("change"):
            out.append(f"  {i}. not tested: {r.get('why')}")
        elif r.get("same_run_as"):
            out.append(f"  {i}. {r['outcome']}: {r['change']} -- the same change as "
                       "a cause above: its run")
        else:
            out.append(f"  {i}. {r['outcome']} in {r.get('seconds', 0):.1f} s: {r['change']} -- "
                       f"{_OUTCOME_WORDS.get(r['outcome'], r['outcome'])}")
        if r.get("where"):
            fails = "fails later in " if r["outcome"] == "further" and \
                not r["where"].startswith("still") else ""
            out.append(f"     {fails}{r['where']}")
        out.append(f"     [{c['kind']}] #{c['seq']} {c['summary']}")
    proven = [f"{i}" for i, c in tried
              if c["verification"]["outcome"] in ("fixed", "further", "confirmed")]
    if proven:
        out.append("proven: cause " + ", ".join(proven) + " (by the runs above)")
    else:
        out.append("proven: none of the causes tried (the trace's evidence only)")
    return "\n".join(out) + "\n"
