"""Short human text for `why` and `deps`."""

TITLES = {"host": "Host paths", "store": "Store paths not in the closure",
          "home": "HOME", "network": "Network", "dns": "DNS",
          "process": "Other processes (signals and ptrace refused)"}


def why_text(rep: dict) -> str:
    out = []
    for p in rep.get("partial") or ():
        out.append(f"note: partial trace: {p}")
        break
    if rep["status"] == "succeeded":
        out.append("the build succeeded: nothing to explain")
        return "\n".join(out) + "\n"
    code = rep.get("exit_signal") or f"exit code {rep.get('exit_code')}"
    if rep.get("killed"):
        code += f": {rep['killed']}"
    out.append(f"build failed ({code})")
    chain = rep["failure_chain"]
    if chain:
        out.append("failure chain: " + " <- ".join(
            f"{_argv0(e['argv'])} ({e['proc']}, {e.get('signal') or e['exit_code']})"
            for e in chain))
    if rep.get("phase"):
        out += _phase_line(rep["phase"])
    causes = rep["root_causes"]
    if causes:
        top = causes[0]
        out.append(f"root cause: {top['summary']}")
        for line in top.get("evidence", ()):
            out.append(f"  {line}")
        out.append(f"hint: {top['hint']}")
        if len(causes) > 1:
            out.append("other suspects:")
            for c in causes[1:4]:
                out.append(f"  [{c['kind']}] #{c['seq']} {c['summary']}")
    out.append(f"replay: {rep['replay']}")
    return "\n".join(out) + "\n"


def what_of(g) -> str:
    """What a deps group is about: a path, an address, a host or a process."""
    if g.get("target_pid") is not None or g["category"] == "process":
        sig = f" ({g['signal']})" if g.get("signal") else ""
        return f"pid {g.get('target_pid')}{sig}"
    return g.get("path") or g.get("address") or g.get("host")


def _argv0(argv):
    return (argv[0].rsplit("/", 1)[-1] if argv else "?")


def deps_text(rep: dict) -> str:
    out = []
    if not rep["undeclared"]:
        out.append("no undeclared accesses")
    last = None
    for g in rep["undeclared"]:
        if g["category"] != last:
            last = g["category"]
            out.append(f"{TITLES[last]}:")
        what = what_of(g)
        err = f" {g['errno']}" if g.get("errno") else ""
        out.append(f"  {what}  {g['access']} {g['result']}{err} x{g['count']} "
                   f"(first #{g['first_seq']}, procs {', '.join(g['procs'][:5])})")
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


def _secs(us) -> str:
    return "-" if us is None else f"{us / 1e6:.2f} s"


def phases_text(rep: dict) -> str:
    """The `nixrec phases` table: one row per phase, the failing one marked."""
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
        if p["status"] == "failed":
            mark = f"  <- failed (build exit code {rep.get('exit_status')})"
        out.append(f"{p['name']:<{width}}  {_secs(p['start']):>9}  {_secs(p['duration']):>9}  "
                   f"{p['processes']:>5}  {p['events']:>7}  {refused:>7}  "
                   f"{str(p['first']) + '-' + str(p['last']):<13}{mark}".rstrip())
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
