"""The producer chain: a file that is missing because the step that makes it failed.

configure compiles `conftest` and runs it; when the compile failed (cc1 could
not open stdio.h), the run fails with "No such file" and the log says "cannot
run C compiled programs". The missing file is the symptom. A cause about a
path in a place the build writes (/build, /tmp, an output), absent at that
point by the trace's file state (filestate.py), leads to the process that was
to make it after it last went away and failed before the consumer looked: one
that tried to create or write it (the data-flow graph, and its failed writes),
a writer of a pipe such a process read (`gen | sort > x`: fdflow.py),
or one whose command line names it as an output (`gcc -o conftest`,
`--out=version.h`, `> x`; graph.asked_to_make). rootcause.py then ranks that
process's own causes and puts them first.
"""

from nixrec.analysis.deps import access_of
from nixrec.analysis.facts import is_ancestor
from nixrec.analysis.graph import asked_to_make, makers

# Kinds whose path is no product of the build the cause failed on: a race has
# its creator already, the others name no missing file.
_NOT_PRODUCTS = frozenset(("race", "limit", "signal", "output-check", "process",
                           "network", "dns", "seccomp", "home"))
# How sure each sign is that a process was to make the file.
TRIED_WRITE, ASKED_OUTPUT, ASKED_ARG = 3, 2, 1


def missing_product(c, facts, cls):
    """The path cause `c` found missing that the build itself makes, or None:
    ENOENT on a path in the build's own places, not there at that point."""
    path = c.get("path")
    if c["kind"] in _NOT_PRODUCTS or not path or c.get("errno") != "ENOENT":
        return None
    if not cls.writable(path):
        return None
    if facts.exists_at(path, c["seq"]):
        return None           # it was there: the problem is elsewhere
    return path


def find_producer(facts, path, before, chain):
    """(proc, removed_seq) of the failed process that was to make `path` after
    it last went away (removed_seq, or 0) and ended before event `before`; None
    if there is none. Not a process of `chain` (the consumer's) nor an ancestor
    of one: their failure is the consumer's."""
    gone = facts.files.removed_before(path, before)
    after = gone[0] if gone else 0
    signs = {}
    for proc, _kind, _seq, _ok in makers(facts.flow.g, path, after, before, facts.flow.fd):
        signs[proc] = TRIED_WRITE
    for f in facts.failures:
        if f.path == path and after < f.seq < before and access_of(f) == "write":
            signs[f.proc] = TRIED_WRITE      # it tried and was refused
    for proc, strength in asked_to_make(facts.flow.g, path).items():
        signs[proc] = max(signs.get(proc, 0), ASKED_OUTPUT if strength == 2 else ASKED_ARG)
    best = None
    for proc, strength in signs.items():
        q = facts.procs.get(proc)
        if q is None or not q.failed or proc in chain \
                or any(is_ancestor(proc, p) for p in chain):
            continue
        end = q.exit_seq or q.last_seq
        if not after < end < before:
            continue          # it ended before the file went away, or after the look
        key = (strength, end)
        if best is None or key > best[0]:
            best = (key, proc)
    return (best[1], after) if best else None
