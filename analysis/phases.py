"""The stdenv phases of a build, for `nixrec phases` and `nixrec why` (plain data).

The phases themselves are found by recorder/tracefile/phases.py (the one owner
of what an announcement looks like); this module only arranges them for the
user: a table with the failing phase marked, and for `why` the phase the
failure happened in and the command of that phase that failed.
"""

from nixrec.recorder.tracefile.phases import containing


def phases_report(phases, summary, trace_path="TRACE") -> dict:
    """-> {"phases": [...], "failed": name or None, "exit_status", "replay"}."""
    rows = [dict(p) for p in phases]
    failed = next((p["name"] for p in rows if p["status"] == "failed"), None)
    summary = summary or {}
    # No summary, or an interrupted one: the last phase shown did not end
    # as the build would have ended it (analysis/incomplete.py).
    incomplete = summary.get("exit_status") is None or bool(summary.get("interrupted"))
    if summary.get("interrupted"):
        failed = None          # the interrupt's kill is not the phase's failure
    return {
        "phases": rows,
        "failed": failed,
        "incomplete": incomplete,
        "exit_status": summary.get("exit_status"),
        "replay": (f"nixrec replay {trace_path} --until-phase {failed}" if failed else None),
    }


def failure_phase(phases, why) -> dict:
    """Where in the phases a failure (`explain`'s report) happened, or None.

    The phase is the one the build failed in (the last announced one when the
    builder exited non-zero), else the one holding the top root cause (a
    builder that exited 0 but whose outputs Nix rejects). The phase's command
    that failed is the builder's child in the failure chain: the process the
    phase's shell code started and whose status made the builder give up; a
    chain of the builder alone means a shell builtin or function of the phase
    failed (`test`, `cd`, a hook's `false`), which has no process of its own.
    """
    if not phases or why.get("status") != "failed":
        return None
    p = next((q for q in phases if q["status"] == "failed"), None)
    causes = why.get("root_causes") or ()
    if p is None and causes:
        p = containing(phases, causes[0].get("seq") or 0)
    if p is None:
        return None
    chain = why.get("failure_chain") or ()
    out = {"name": p["name"], "first": p["first"], "last": p["last"], "command": None,
           "command_proc": None, "command_exit": None}
    if len(chain) > 1:
        step = chain[1]
        out.update(command=list(step.get("argv") or ()), command_proc=step["proc"],
                   command_exit=step.get("signal") or step.get("exit_code"))
    return out
