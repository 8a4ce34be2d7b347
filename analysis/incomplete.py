"""Is the recording whole? A trace without a recorded end gets no verdict.

Issue 23: after kill -9 of the recorder, a full disk, Ctrl-C (also while
nixrec was checking the outputs) or a trace cut after its header, `why`
said "the build succeeded". What tells a finished recording is its index,
which the writer puts last (the reader says "recording interrupted after
event N" without it), and in it the summary: the build's exit status and
whether an interrupt stopped it (`interrupted`, `interrupted_by`,
`interrupted_while`: docs/trace-format.md). Without a summary, or with an
interrupted one, the verdict is "incomplete", unless what was recorded
already decides it: a builder whose own non-zero exit was recorded before
the interrupt failed, whatever came after.

Pure functions of the summary and `facts` (facts.py).
"""

# The summary's `killed` when nixrec closed the pty on an interrupt, in
# traces made before interrupts were told apart (issue 23).
_EOF_KILL = "killed when it closed its standard output and error"


def incompleteness(summary, problems, facts):
    """-> None for a whole recording, else {"reason": one sentence,
    "recorded": what the trace holds}."""
    summary = summary or {}
    cut = next((p for p in problems or () if p.startswith("recording interrupted")), None)
    if cut is None and not summary.get("interrupted"):
        return None
    if summary.get("interrupted"):
        by = summary.get("interrupted_by")
        during = summary.get("interrupted_while")
        reason = ("the recording was interrupted"
                  + (f" ({by})" if by else "")
                  + (f" while {during}" if during else ""))
    else:
        reason = (f"no end of the build was recorded ({cut}: the recorder was killed, "
                  "the disk filled, or the trace was cut)")
    return {"reason": reason, "recorded": _recorded(facts)}


def _recorded(facts) -> dict:
    procs = facts.procs
    ended = sum(1 for q in procs.values() if q.exit_seq)
    last = max(procs.values(), key=lambda q: q.last_seq, default=None)
    return {"events": facts.last_seq, "processes": len(procs),
            "running": len(procs) - ended,
            "last_proc": last.proc if last and last.last_seq else None,
            "last_argv": list(last.argv) if last and last.last_seq else []}


def forget_interrupt(facts, summary) -> None:
    """An interrupt's kill is nobody's failure: the processes it killed did
    not fail, and nixrec's closing of the pty is no limit (old traces)."""
    if (summary or {}).get("interrupted") and (facts.killed or "").startswith(_EOF_KILL):
        facts.killed = None


def decided_failure(facts) -> bool:
    """Did the builder's own failure, recorded before the end, decide the
    build? (It exited non-zero, or a signal other than the interrupt's
    SIGKILL ended it.) Before the summary is applied to `facts`."""
    root = facts.procs.get("1")
    if root is None or root.exit_seq is None:
        return False
    if root.exit_signal:
        # SIGKILL is how nixrec ends a build it stops (an interrupt, a full
        # disk): in a recording without its end, it decides nothing.
        return root.exit_signal != "SIGKILL"
    return root.exit_status not in (None, 0)


def last_failure(facts):
    """The process whose failure came last before the end, the interrupt's
    kills left out: where `why` looks in an incomplete trace. None if none."""
    interrupted_kill = ("SIGKILL",)
    failed = [q for q in facts.procs.values() if q.exit_seq and q.failed
              and q.exit_signal not in interrupted_kill]
    if not failed:
        return None
    return max(failed, key=lambda q: q.exit_seq).proc
