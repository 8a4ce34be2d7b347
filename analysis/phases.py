"""The stdenv phases of a build, for `nixrec phases` and `nixrec why` (plain data).

The phases themselves are found by recorder/tracefile/phases.py (the one owner
of what an announcement looks like); this module only arranges them for the
user: a table with the failing phase marked, and for `why` the phase the
failure happened in and the command of that phase that failed.
"""

import re

from nixrec.analysis.facts import is_ancestor
from nixrec.analysis.scoring import GOOD
from nixrec.recorder.tracefile.phases import announcement, containing


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


# -- `why` inside the failed phase ---------------------------------------------------

# The calls a shell makes to look a name up on PATH (bash's `type -p`,
# `command -v`, the search before an exec): stat-like, not opens.
_LOOKUP_CALLS = frozenset(("stat", "lstat", "newfstatat", "fstatat64", "statx", "access",
                           "faccessat", "faccessat2"))
# bash 5.2 prints this after errexit ends a function called through eval
# (runPhase's way: nixpkgs-stdenv/README.md): bash's words, not the build's.
_BASH_OWN = "pop_var_context: head of shell_variables not a function context"
_OWN_LINES = 6


def focus(ranked, facts, chain, phases, trace_path="TRACE"):
    """`why`'s causes for a build that failed in a stdenv phase: looked for
    inside that phase, and in what fed it.

    First the causes of the phase's command that failed (the builder's
    child in the failure chain, and its subtree), then that command's own
    output when none of them stands on its own (a test suite's failing test
    says why in its own words), then the other causes inside the phase, then
    those before it that fed it: found through the data flow (`via`), or a
    process that wrote a file the phase read. The stdenv shell's own lookups
    of a name on PATH (`type -p preConfigure` for every hook it might run)
    that found nothing and made no error are never a cause; nor is anything
    else outside the phase.
    """
    p = next((q for q in phases or () if q["status"] == "failed"), None)
    if p is None or not chain or any(c["kind"] == "limit" for c in ranked):
        return ranked
    command = chain[1] if len(chain) > 1 else None
    first, last = p["first"], p["last"]
    cmd, phase, fed = [], [], []
    for c in ranked:
        if _shell_lookup(c, facts):
            continue
        if first <= (c.get("seq") or 0) <= last:
            under = command is not None and (c["proc"] == command
                                             or is_ancestor(command, c["proc"]))
            (cmd if under else phase).append(c)
        elif c.get("via") or _fed(c, facts, first, last):
            fed.append(c)
    own = _own_words(facts, chain, p, trace_path)
    if own is None:
        return cmd + phase + fed or ranked
    says_why = own.pop("says_why")
    if cmd and cmd[0].get("score", 0) >= GOOD:
        return cmd + [own] + phase + fed
    if command is None and phase and (phase[0].get("score", 0) >= GOOD
                                      or not says_why):
        # A shell function failed without a word (`test -e x` in a hook):
        # its last failed call in the phase says more than the hook's log.
        return phase + [own] + fed
    return [own] + cmd + phase + fed


def _shell_lookup(c, facts) -> bool:
    """A failed PATH lookup by the stdenv shell (the builder) that the shell
    took as an answer: a stat of DIR/NAME in a bin directory, with no
    "NAME: not found" or "command not found" from the builder."""
    if c["proc"] != "1" or c.get("syscall") not in _LOOKUP_CALLS or c.get("errno") != "ENOENT":
        return False
    d, _, name = (c.get("path") or "").rpartition("/")
    if not name or d.rsplit("/", 1)[-1] not in ("bin", "sbin"):
        return False
    said = facts.stderr_text(["1"])
    return f"{name}: not found" not in said and f"{name}: command not found" not in said


def _fed(c, facts, first, last) -> bool:
    """Whether the cause's process (not the builder, whose shell spans every
    phase) wrote a file a process read inside the phase."""
    proc = c["proc"]
    if proc == "1":
        return False
    for path, writes in facts.writers.items():
        if any(w == proc or is_ancestor(proc, w) for _, w in writes) and \
                any(first <= s <= last for s, _ in facts.reads.get(path, ())):
            return True
    return False


def _own_words(facts, chain, p, trace_path):
    """The failed command's own output inside the phase, as a cause: the
    deepest failed process of the chain (a test program, the compiler) and
    the processes between it and the phase's command; the builder's own when
    a shell function of the phase failed (substituteInPlace's ERROR)."""
    procs = chain[1:] or chain[:1]
    lines = sorted((s, q, line) for q in procs for s, line in facts.stderr.get(q, ())
                   if p["first"] <= s <= p["last"] and _own_line(line))
    if not lines:
        return None
    origin = chain[-1]
    q = facts.procs[origin]
    mine = [line for _, w, line in lines if w == origin] or [lines[-1][2]]
    words = next((line for line in reversed(mine) if _SAYS_WHY.search(line)), mine[-1])
    who = f"{q.argv0()} ({origin})"
    how = f"killed by {q.exit_signal}" if q.exit_signal else f"exited {q.exit_status}"
    under = ""
    if len(chain) > 2:
        top = facts.procs[chain[1]]
        under = f", under {top.argv0()} ({chain[1]})"
    if origin == "1":
        summary = f"{p['name']} failed in the builder's shell: {words.strip()}"
    else:
        summary = f"{who} {how} in {p['name']}{under}: {words.strip()}"
    shown = lines[-_OWN_LINES:]
    return {"kind": "phase-output", "seq": q.exit_seq or shown[-1][0], "proc": origin,
            "argv": list(q.argv), "syscall": None, "errno": None, "score": GOOD,
            "summary": summary,
            "hint": ("these are the failing command's own words; to see it fail again in "
                     f"the sandbox: nixrec replay {trace_path} --until-phase {p['name']} "
                     f"--exec 'runPhase {p['name']}'"),
            "evidence": [f"output of {w}: {line.strip()[:200]}" for _, w, line in shown],
            "evidence_chain": [s for s, _, _ in shown],
            "says_why": bool(_SAYS_WHY.search(words))}


def _own_line(line) -> bool:
    """A line the build said about itself: not a phase announcement (stdenv's
    own), not bash's pop_var_context complaint."""
    return announcement(line) is None and _BASH_OWN not in line


_SAYS_WHY = re.compile(r"error|fail|not found|no such|cannot|can't|bad |invalid|denied",
                       re.I)
