"""Races between concurrently running processes (make -j, `a & b & wait`).

A race here is: process A found a file missing (or read it) at seq m, and a
process B that was already running at m created it later. B "was running"
means the subtree that B belongs to, below the nearest common ancestor of A
and B, had been forked before m: that is how `make -j` runs two recipes.
"""

from nixrec.analysis.deps import access_of
from nixrec.analysis.facts import is_ancestor


def _branch_root(facts, a: str, b: str) -> str:
    """The ancestor of b (or b) just below the nearest common ancestor of a and b."""
    parts_a, parts_b = a.split("."), b.split(".")
    i = 0
    while i < min(len(parts_a), len(parts_b)) and parts_a[i] == parts_b[i]:
        i += 1
    return ".".join(parts_b[:i + 1])


def _program(facts, proc: str) -> str:
    """The process a thread belongs to: up the tree while it was started as
    a thread (clone with CLONE_THREAD)."""
    threads = getattr(facts, "threads", ())
    while proc in threads and "." in proc:
        proc = proc.rsplit(".", 1)[0]
    return proc


def _concurrent(facts, a: str, b: str, seq: int) -> bool:
    if a == b or is_ancestor(b, a) or is_ancestor(a, b):
        return False
    if _program(facts, a) == _program(facts, b):
        return False     # threads of one program (Go's build cache): not build steps
    root = facts.procs.get(_branch_root(facts, a, b))
    return root is not None and 0 < root.first_seq <= seq


def _rename_sources(facts):
    """seq -> the path a rename at that seq moved away (deletes() records the
    source of a rename as a write of it at the rename's seq)."""
    out = {}
    for path, ws in facts.writers.items():
        for seq, _ in ws:
            out.setdefault(seq, []).append(path)
    return out


def find_races(facts):
    """Yield dicts {seq, proc, path, creator, created_seq, missing} best first."""
    out = []
    facts_sources = None      # made on the first need: most builds have no race
    for ev in facts.failures:
        if ev.errno != "ENOENT" or not ev.path or access_of(ev) not in ("read", "stat",
                                                                         "exec"):
            continue
        race = _first_concurrent_create(facts, ev.proc, ev.path, ev.seq)
        if race is None and ev.path in facts.created:
            if facts_sources is None:
                facts_sources = _rename_sources(facts)
            race = _renamed_in(facts, ev.proc, ev.path, ev.seq, facts_sources)
        if race:
            out.append(dict(race, seq=ev.seq, proc=ev.proc, path=ev.path,
                            missing=True, event=ev))
    for path, reads in facts.reads.items():
        for seq, proc in reads:
            race = _first_concurrent_create(facts, proc, path, seq)
            if race:
                out.append(dict(race, seq=seq, proc=proc, path=path, missing=False,
                                event=None))
                break
    return out


def _first_concurrent_create(facts, proc, path, seq):
    for cseq, cproc in facts.created.get(path, ()):
        if cseq > seq and _concurrent(facts, proc, cproc, seq):
            return {"creator": cproc, "created_seq": cseq}
    return None


def _renamed_in(facts, proc, path, seq, sources):
    """`path` appeared after `seq` by a rename of a file that a process already
    running at `seq`, and still alive then, had made (`gen > x.tmp && mv x.tmp
    x`, make's recipe for a generated header): that process made it, whoever
    ran the mv. The file renamed is the source's latest making before the
    rename (git's config.lock, made and renamed by the reader itself, is no
    race)."""
    for cseq, _ in facts.created.get(path, ()):
        if cseq <= seq:
            continue
        for src in sources.get(cseq, ()):
            if src == path:
                continue
            made = [(s, p) for s, p in facts.created.get(src, ()) if s < cseq]
            if not made:
                continue
            sseq, sproc = made[-1]
            q = facts.procs.get(sproc)
            alive = q is not None and (q.exit_seq is None or q.exit_seq > seq)
            if alive and _concurrent(facts, proc, sproc, seq):
                return {"creator": sproc, "created_seq": cseq}
    return None
