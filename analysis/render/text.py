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


# deps groups (deps.GROUPS) as the reports title them.
GROUP_TITLES = {"used": "Used outside the declared inputs",
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
