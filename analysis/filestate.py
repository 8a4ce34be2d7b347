"""Whether a path existed at event N, from the trace's own file state at N.

A build makes and removes files all the time (configure writes `conftest`, runs
it, `rm -f`s it, compiles the next one): that a path existed once says nothing
about event N. The answer is the last thing the trace saw of that path before
N: a create, an unlink or rename away, a successful access, or a failed lookup
(ENOENT, ENOTDIR). An exec that failed with ENOENT is no observation: the
kernel says ENOENT for a missing #! or ELF interpreter too.

Only paths where the build can make and remove files have a history
(PathClassifier.writable: /build, /tmp, an output): the rest of the sandbox does
not change while the build runs, so there "seen once" is the answer (Facts).
Memory follows the paths that existed at some point, not the failed lookups: a
path gets a history at its first success, create or delete, and the history
keeps only the changes (present -> absent -> present), each with the seq and
how it happened. A path never seen to exist has no history (unknown: the
callers treat it as absent, as before).
"""

import bisect

# How the trace saw a path: each change is one of these at one seq.
ABSENT, PRESENT, MADE, GONE = 0, 1, 2, 3
_EXISTS = (False, True, True, False)
_LOOKUP_ERRNO = frozenset(("ENOENT", "ENOTDIR"))
# symlink(target, link): the target need not exist; link() and rename() need
# their source.
_SYMLINK = frozenset(("symlink", "symlinkat"))


class FileState:
    """path -> [(seq, how)], the changes of the path's existence in seq order."""

    __slots__ = ("history", "tracked")

    def __init__(self, tracked=("/",)):
        self.history = {}
        self.tracked = tuple(tracked)       # path prefixes that can change

    # -- feeding (events in seq order) -------------------------------------------

    def missing(self, path, seq):
        """A failed lookup (ENOENT/ENOTDIR) of `path`: absent at `seq`."""
        h = self.history.get(path)
        if h is not None and _EXISTS[h[-1][1]]:
            h.append((seq, ABSENT))

    def observe(self, ev, access, made, gone):
        """A successful call: what it saw exist, made (deps.creates) or
        removed (deps.deletes)."""
        path, seq = ev.path, ev.seq
        if path and not path.startswith(self.tracked):
            path = None                     # it cannot change: nothing to follow
        if made and not made.startswith(self.tracked):
            made = None
        if gone and not gone.startswith(self.tracked):
            gone = None
        if path and path != made and access in ("read", "stat", "exec", "write") \
                and ev.syscall not in _SYMLINK:
            self._change(path, seq, PRESENT)
        if made:
            self._change(made, seq, MADE)
        if gone:
            self._change(gone, seq, GONE)

    def failed(self, ev):
        """A failed call: a lookup that found nothing says the path is absent."""
        if ev.errno in _LOOKUP_ERRNO and ev.path and ev.kind != "exec":
            self.missing(ev.path, ev.seq)

    def _change(self, path, seq, how):
        h = self.history.get(path)
        if h is None:
            self.history[path] = [(seq, how)]
        elif _EXISTS[h[-1][1]] != _EXISTS[how]:
            h.append((seq, how))

    # -- questions ------------------------------------------------------------------

    def exists_at(self, path, seq):
        """True / False / None (the trace never saw it exist): was `path` there
        just before event `seq`? The last change before it says; with none
        before, the first after it: made there means it was not there yet,
        seen or removed there means it was (nothing made it in between)."""
        last = self.last_before(path, seq)
        if last is not None:
            return _EXISTS[last[1]]
        h = self.history.get(path)
        if not h:
            return None
        return h[0][1] != MADE

    def last_before(self, path, seq):
        """(seq, how) of the last change of `path` before `seq`, or None."""
        h = self.history.get(path)
        if not h:
            return None
        i = bisect.bisect_left(h, (seq, -1))
        return h[i - 1] if i else None

    def removed_before(self, path, seq):
        """(seq, how) of the change that made `path` absent before `seq` (GONE:
        an unlink or a rename away; ABSENT: a failed lookup after it existed),
        or None if it was there (or never seen). Changes alternate, so the last
        one before `seq` is that change."""
        last = self.last_before(path, seq)
        return None if last is None or _EXISTS[last[1]] else last
