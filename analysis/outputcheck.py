"""A build whose builder succeeded and whose output Nix rejects (`why`, kind
`output-check`).

The recorder runs Nix's checks on the outputs after the build
(recorder/nix/outputs.py) and keeps what failed in the trace summary's
`output_check`: the check, the output, the files to blame (for a reference
rule: the files whose contents, name or link target hold the forbidden store
path, or the reference that leads to it) and the paths a rule forbids. The
builder exited 0, so no failed call explains anything: the cause is the check,
and the event to look at is the one that wrote the first blamed file.
"""

from nixrec.analysis.deps import STORE_DIR, basename

# What each check is about, for the summary line; {paths} are the forbidden ones.
_WHAT = {
    "allowedReferences": "refers to {paths}, which the derivation's allowedReferences "
                         "do not allow",
    "allowedRequisites": "refers to {through}, which brings {paths} into the output's "
                         "closure, which the derivation's allowedRequisites do not allow",
    "disallowedReferences": "refers to {paths}, which the derivation's "
                            "disallowedReferences forbid",
    "disallowedRequisites": "refers to {through}, which brings {paths} into the "
                            "output's closure, which the derivation's "
                            "disallowedRequisites forbid",
    "cycle": "refers to output {paths}, which refers back: outputs may not refer to "
             "each other in a cycle",
    "fixed-references": "refers to {paths}: the output of a fixed-output derivation "
                        "may not refer to any store path",
}


def output_cause(facts, summary, builder_exit, trace_path="TRACE"):
    """The `output-check` cause, or None when the builder failed (its own
    causes explain the build) or every output passed. The recorder keeps the
    outputs in TRACE.d/outputs/: the hint names the blamed file there."""
    check = (summary or {}).get("output_check")
    if not check or builder_exit != 0:
        return None
    files = check.get("files") or []
    proc, seq, blamed = "1", None, files[0] if files else None
    for f in files:
        made = _last_writer(facts, f)
        if made is not None:
            seq, proc = made
            blamed = f
            break
    q = facts.procs.get(proc) or facts.procs.get("1")
    if seq is None:
        seq = (q.exit_seq or q.last_seq) if q else facts.last_seq
    kept = None
    if blamed and blamed.startswith(STORE_DIR + "/"):
        kept = f"{trace_path}.d/outputs/{blamed[len(STORE_DIR) + 1:]}"
    return {"kind": "output-check", "seq": seq, "proc": proc, "kept": kept,
            "argv": list(q.argv) if q else [], "syscall": None, "errno": None,
            "path": blamed, "check": check.get("check"), "output": check.get("output"),
            "forbidden": list(check.get("paths") or []),
            "through": list(check.get("through") or []), "message": summary.get("error"),
            "blamed_files": files, "score": 10}


def _last_writer(facts, path):
    """(seq, proc) of the last event that wrote or made `path`, or None."""
    seen = list(facts.writers.get(path, ())) + list(facts.created.get(path, ()))
    return max(seen) if seen else None


def summary_of(c, who):
    """The root-cause line for an output-check cause."""
    check, out = c.get("check"), c.get("output")
    paths = ", ".join(c.get("forbidden") or ()) or "?"
    what = _WHAT.get(check, "").format(paths=paths,
                                       through=", ".join(c.get("through") or ()) or "?")
    if check in _WHAT and c.get("path"):
        return f"{who} wrote {c['path']}, which {what} -- Nix rejects output '{out}'"
    if check in _WHAT:
        return f"output '{out}' {what} -- Nix rejects it"
    if check == "missing":
        return f"the builder exited 0 without making output '{out}'"
    if check == "permissions":
        return (f"output '{out}' is group- or world-writable when the build ends "
                f"(made by {who}) -- Nix rejects it")
    if check == "unsupported":
        return (f"{who} made {c.get('path')}, a FIFO, socket or device file, which the "
                f"store cannot hold -- Nix rejects output '{out}'")
    if check == "hash":
        return (f"output '{out}' (made by {who}) does not have the hash the fixed-output "
                f"derivation declares: {c.get('message')}")
    if check == "deterministic":
        n = len(c.get("blamed_files") or ())
        more = f" (and {n - 1} more files differ)" if n > 1 else ""
        return (f"{who} wrote {c.get('path')}, which differs from the output already in "
                f"the store{more} -- the build is not deterministic")
    if check == "size":
        return f"output '{out}' (made by {who}) is too large: {c.get('message')}"
    return f"the derivation's output rules are malformed: {c.get('message')}"


HINTS = {
    "references": "look for the hash in the file as the build left it (strings "
                  "{file} | grep {hash}): often a compiler's -I/-L or an RPATH, a #! "
                  "line, a recorded configure command; drop it at the source, or with "
                  "remove-references-to -t <path> in postInstall",
    "cycle": "outputs may refer to each other in one direction only: move what "
             "refers back (often a doc or dev output naming $out), or merge them",
    "missing": "make the builder create every output in `outputs` ($out, $dev...), "
               "or drop the output",
    "permissions": "clear the group/other write bits (chmod g-w,o-w; umask 022) "
                   "before the builder exits",
    "unsupported": "remove FIFOs, sockets and device files from the output before "
                   "the builder exits",
    "fixed-references": "a fixed output (a fetcher's) may name no store path: look for "
                        "the hash in the file (strings {file} | grep {hash}), often a #! "
                        "line patchShebangs rewrote or a tool's recorded path; skip that "
                        "step (dontFixup) or strip the path before the builder exits",
    "hash": "if the new content is the one wanted, put the hash Nix reports (got:) "
            "in outputHash; else find why the fetched content changed",
    "deterministic": "compare the two ({kept} against the store's copy, e.g. with "
                     "diffoscope): timestamps, random values, build paths, the order "
                     "of a parallel step; replay to the event to see the sandbox where "
                     "it is written",
    "size": "the output outgrew outputChecks' maxSize/maxClosureSize: trim it, or "
            "raise the limit",
    "rule": "each entry of a reference rule must be a store path or an output name",
}


def hint_of(c):
    check = c.get("check")
    if check in _WHAT:
        f = c.get("kept") or c.get("path") or "the output"
        held = c.get("through") or c.get("forbidden") or []
        h = basename(held[0])[:32] if held else "<hash>"
        hint = check if check in ("cycle", "fixed-references") else "references"
        return HINTS[hint].format(file=f, hash=h)
    if check == "deterministic":
        return HINTS[check].format(kept=c.get("kept") or "the recorded output")
    return HINTS.get(check, HINTS["rule"])
