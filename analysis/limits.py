"""A build the recorder killed for a limit (`why`, kind `limit`).

The trace summary's `killed` says which limit, in the recorder's words
(recorder/session.py): "timed out after 2 seconds", "timed out after 1 seconds
of silence", "killed after writing more than N bytes of log output", "killed
after running more than N processes at once", "killed when it closed its
standard output and error (as Nix does)". Every process then dies of SIGKILL at
once and nobody waits for anybody, so the usual chain (a parent that waited for
a failed child) has nothing to follow: the chain is the process that was
running when the limit hit, and its ancestors.
"""

# (words in the reason, Nix's setting or None, short name), checked in order:
# "of silence" before the plain timeout, which it also matches.
_SETTINGS = (
    ("of silence", "max-silent-time", "silence"),
    ("timed out", "timeout", "timeout"),
    ("bytes of log output", "max-build-log-size", "log-size"),
    ("processes at once", None, "processes"),
    ("closed its standard output and error", None, "closed-output"),
)


def which(reason: str):
    """(Nix setting or None, short name) of the recorder's kill reason."""
    for words, setting, short in _SETTINGS:
        if words in reason:
            return setting, short
    return None, "other"


def limit_origin(facts):
    """The process that was running when the limit hit, or None.

    Too many processes: the one that forked last (it crossed the limit).
    Otherwise: the process with the latest event other than its death, among
    those the kill found alive (no exit status of their own)."""
    _, short = which(facts.killed or "")
    if short == "processes" and facts.last_fork is not None:
        return facts.last_fork.proc
    alive = [q for q in facts.procs.values() if q.active_seq and
             (q.exit_signal or q.exit_status is None)]
    if not alive:
        return None
    return max(alive, key=lambda q: q.active_seq).proc


def limit_chain(facts):
    """[builder, ..., the running process] by tree path, or None."""
    origin = limit_origin(facts)
    if origin is None:
        return None
    parts = origin.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [p for p in chain if p in facts.procs]


def limit_cause(facts, chain):
    """The `limit` cause: what was killed, for which limit, in Nix's terms."""
    origin = chain[-1]
    q = facts.procs[origin]
    setting, short = which(facts.killed)
    seq = q.exit_seq or q.active_seq or q.last_seq
    return {"kind": "limit", "seq": seq, "proc": origin, "argv": list(q.argv),
            "syscall": None, "errno": None, "limit": facts.killed,
            "setting": setting, "limit_kind": short,
            "signal": q.exit_signal or "SIGKILL"}
