"""Which live process is which recorded one, while a parallel build runs.

Tree paths (style.md, "Process identity") name a process by fork order: the
builder is `1`, its third child `1.3`. A sequential build forks in the same
order on every run, so there the live path *is* the recorded path. Under
`make -j` it is not: which job make starts next depends on which one finished
first, so the live `1.3.8` may be the recorded `1.3.9`. The Follower keeps a
map live path -> recorded path and fills it in by what processes do:

- A child of any other process gets the recorded sibling with its own fork
  index, as before (a shell running commands one by one, or a pipeline).
- A child of a job runner (`parallel_from` in the index: a process that,
  when recorded, started a child after one of several running ones ended:
  make -j, `wait -n`) starts on the sibling with its fork index (or, when
  that one is taken, the first free one of the same fork kind) and is
  *unsettled* until its first successful exec (or SETTLE_AFTER events). While
  unsettled, when one of its events differs from that sibling's, or an exec's
  argv does, it moves to the first free recorded sibling whose events so far
  are the same (a sibling held by another unsettled process can be swapped),
  and its descendants move with it. When none fits, the difference is
  reported as it always was.
- The job runner itself: once its own calls differ from the recording after
  the point where it first had two children running, it is *lenient*: from
  then on its execs, forks and exit are compared in order (the n-th of them
  with the recorded n-th), and each of its other calls must be one it made
  somewhere in the recording, in any order and with any outcome (make stats
  a header before or after the job that writes it finished).

Counts stay per live process (the k of `Loc`), so once a process is matched
its k-th event is the recorded process's k-th event, and `--until N` stops in
whichever live process is matched to the recorded one.

    f = Follower(index)
    loc = f.peek(ev)                            # the Loc ev will get (recorded path)
    loc, d = f.entry(ev, loc, live_seq)         # a counted call, before it runs
    loc, d = f.emitted(ev, live_seq, compare)   # every event, after it happened
    f.hit(target, ev, loc); f.unreached()
"""

from nixrec.replayer.matcher import (STRUCTURAL, TIMING_ERRNOS, Counter, Loc, Matcher,
                                     counted, outcome, same_argv, same_path)

# A child that made this many calls like its sibling's without an exec is
# taken to be that sibling (a subshell loop): the history is not kept forever.
SETTLE_AFTER = 64


class Follower:
    def __init__(self, index):
        self.index = index
        self.matcher = Matcher(index)
        self.counter = Counter()        # per live process
        self.rec_of = {"1": "1"}        # live proc -> recorded proc
        self.owner = {"1": "1"}         # recorded proc -> live proc
        self.kids = {}                  # live proc -> its live children
        self.fork_kind = {}             # live proc -> the fork call that made it
        self.unsettled = {}             # live proc -> its counted events so far
        self.lenient = set()            # live procs compared in the loose way
        self.nstruct = {}               # live proc -> execs, forks, exit emitted
        self._entered = {}              # live proc -> (call, recorded proc) passed at entry
        self.rematched = 0              # children moved to another sibling
        self.broken = set()             # live procs SIGPIPE took off the recorded
                                        # path, and their children born since

    # --- where an event is --------------------------------------------------------
    def peek(self, ev):
        live = ev.proc
        c = self.counter
        if counted(ev):
            return Loc(self.rec_of.get(live, live), c.k.get(live, 0) + 1)
        return Loc(self.rec_of.get(live, live), c.k.get(live, 0), c.j.get(live, 0) + 1)

    def hit(self, target, ev, loc) -> bool:
        """Is this live call the target's? In a lenient process: the first call
        like the target's after as many execs/forks as the recorded one had."""
        if target is None:
            return False
        if ev.proc in self.lenient:
            return loc.proc == target.loc.proc and \
                target.hit_loose(ev, self.nstruct.get(ev.proc, 0))
        return target.hit(loc, ev)

    # --- comparing ------------------------------------------------------------------
    def entry(self, ev, loc, live_seq):
        """A counted call at its entry: -> (its Loc, a Divergence or None)."""
        live = ev.proc
        if live in self.broken:
            return loc, None
        if live in self.lenient:
            return loc, self._said(live, self._lenient_entry(ev, loc, live_seq))
        d = self.matcher.at_entry(ev, loc, live_seq)
        hist = self.unsettled.get(live)
        if hist is not None:
            if d is not None:
                if self._rematch(live, hist, ev, False):
                    loc = self.peek(ev)
                    d = self.matcher.at_entry(ev, loc, live_seq)
            elif ev.kind == "exec" and not self._same(loc.proc, loc.k, ev, False):
                # Same program, other argv: make's next job is another sibling.
                # If no sibling ran it, an argv alone stays no divergence.
                if self._rematch(live, hist, ev, False):
                    loc = self.peek(ev)
        if d is not None and self._may_loosen(loc):
            self.lenient.add(live)
            d = self._lenient_entry(ev, loc, live_seq)
        d = self._unless_pipe_broken(live, loc, d)
        if d is None:
            self._entered[live] = (ev, loc.proc)   # emitted() need not check again
        return loc, self._said(live, d)

    def emitted(self, ev, live_seq, compare=True):
        """Every live event, in emission order: -> (its Loc, a Divergence or None)."""
        live = ev.proc
        loc = self.peek(ev)
        c = self.counter
        if loc.j == 0:
            c.k[live] = loc.k
            c.j[live] = 0
        else:
            c.j[live] = loc.j
        d = None
        if ev.kind == "signal" and ev.args.get("signal") == "SIGPIPE" and live != "1":
            self.broken.add(live)
        if compare and loc.j == 0:
            d = self._compare_emitted(ev, loc, live_seq)
        if loc.j == 0:
            if ev.kind in STRUCTURAL:
                self.nstruct[live] = self.nstruct.get(live, 0) + 1
                if ev.kind == "fork":
                    self._born(ev, live)
            hist = self.unsettled.get(live)
            if hist is not None:
                hist.append(ev)
                if (ev.kind == "exec" and not ev.errno) or ev.kind == "exit" \
                        or len(hist) >= SETTLE_AFTER:
                    del self.unsettled[live]
        return loc, self._said(live, d)

    def ran(self, ev):
        """A call that ran already (the tracer's C loop shows it now), when it
        is exactly the recorded call at its place, in a process followed
        strictly: counted, and -> its Loc. Else None, and the caller goes
        through entry() and emitted(), which also tell a difference that is
        none (pids, random names, timing errnos) from a divergence. Most of
        a replay's calls are this case (GNU hello: ~170k)."""
        live = ev.proc
        if live in self.lenient or live in self.unsettled or not counted(ev) \
                or live in self.broken:
            return None
        rec = self.rec_of.get(live, live)
        k = self.counter.k.get(live, 0) + 1
        key = self.index.key_or_none(rec, k)
        if key is None or key[0] != ev.kind or key[1] != ev.syscall or key[2] != ev.path \
                or key[3] != ev.path2 or key[4] != outcome(ev):
            return None
        self.counter.k[live] = k
        self.counter.j[live] = 0
        return Loc(rec, k)

    def _compare_emitted(self, ev, loc, live_seq):
        live = ev.proc
        if live in self.broken:
            return None
        if live in self.lenient:
            return self._lenient_emitted(ev, loc, live_seq)
        entered = self._entered.pop(live, None)
        checked = entered is not None and entered[0] is ev and entered[1] == loc.proc
        d = self.matcher.emitted(ev, loc, live_seq, checked)
        if d is None:
            return None
        hist = self.unsettled.get(live)
        if hist is not None and self._rematch(live, hist, ev, True):
            loc.proc = self.rec_of[live]
            d = self.matcher.emitted(ev, loc, live_seq)
        if d is not None and self._may_loosen(loc):
            self.lenient.add(live)
            d = self._lenient_emitted(ev, loc, live_seq)
        return self._unless_pipe_broken(live, loc, d)

    # --- a pipeline's writer whose reader quit first ------------------------------------
    # `producer | sed 99q`: whether the producer is still writing when the
    # reader quits (SIGPIPE: it dies, or runs a trap, as configure's does)
    # depends on which ran faster. From the SIGPIPE on, in whichever run got
    # it, the process and the children it forks from then on (a trap's `rm`)
    # are not compared, and the recorded rest need not happen; its parent's
    # calls are compared as ever. Not the builder: its end is the build's
    # status.
    def _unless_pipe_broken(self, live, loc, d):
        """A divergence after the recorded process got SIGPIPE: excused."""
        if d is None or live == "1":
            return d
        k0 = self.index.sigpipe_at.get(loc.proc)
        if k0 is None or loc.k <= k0:
            return d
        self.broken.add(live)
        return None

    def unreached(self, each=False):
        """At the end: the first recorded event no live process got to (each:
        per recorded process, the first it never got to, for `nixrec diff`)."""
        counts, lenient = {}, {}
        for live, k in self.counter.k.items():
            rec = self.rec_of.get(live, live)
            if live in self.lenient:
                lenient[rec] = self.nstruct.get(live, 0)
            else:
                counts[rec] = k
        # A recorded writer SIGPIPE reached: what it did after, once the live
        # one got that far (it may have finished its writing instead).
        excused = {self.rec_of.get(b, b) for b in self.broken} | \
            {p for p, k0 in self.index.sigpipe_at.items() if counts.get(p, 0) >= k0}
        if each:
            return self.matcher.unreached_each(counts, lenient, excused)
        return self.matcher.unreached(counts, lenient, excused)

    def stop_following(self, live):
        """`nixrec diff` goes on past a process's first difference: from there
        on that process, and the children it forks later, are not compared
        (what they do differently follows from it); its rest need not happen."""
        self.broken.add(live)

    @staticmethod
    def _said(live, d):
        if d is not None and d.loc.proc != live:
            d.live_proc = live
        return d

    # --- a parallel parent's own calls ------------------------------------------------
    def _may_loosen(self, loc) -> bool:
        start = self.index.parallel_from.get(loc.proc)
        return start is not None and loc.k > start

    def _structural_loc(self, ev, loc):
        """The Loc of the recorded exec/fork/exit this live one stands for."""
        ks = self.index.structural(loc.proc)
        s = self.nstruct.get(ev.proc, 0)
        if s >= len(ks):
            return None
        return Loc(loc.proc, ks[s])

    def _lenient_entry(self, ev, loc, live_seq):
        if ev.kind not in STRUCTURAL:
            return self.matcher.loose(ev, loc, live_seq)
        sloc = self._structural_loc(ev, loc)
        if sloc is None:
            return self.matcher.extra(ev, loc, live_seq)
        return self.matcher.at_entry(ev, sloc, live_seq)

    def _lenient_emitted(self, ev, loc, live_seq):
        if ev.kind not in STRUCTURAL:
            return None                 # checked at entry; outcomes may differ
        sloc = self._structural_loc(ev, loc)
        if sloc is None:
            return self.matcher.extra(ev, loc, live_seq)
        return self.matcher.emitted(ev, sloc, live_seq)

    # --- children --------------------------------------------------------------------
    def _born(self, ev, parent):
        child = ev.args.get("child")
        if not child:
            return
        self.kids.setdefault(parent, []).append(child)
        self.fork_kind[child] = ev.syscall
        if parent in self.broken:
            self.broken.add(child)          # a trap's `rm`: not compared either
        rparent = self.rec_of.get(parent, parent)
        f = int(child.rpartition(".")[2])
        rec = f"{rparent}.{f}"
        if rparent in self.index.parallel_from:
            if rec in self.owner or self.index.fork_kind.get(rec) != ev.syscall:
                rec = self._free_sibling(rparent, ev.syscall, f)
            self.unsettled[child] = []
        self.rec_of[child] = rec
        self.owner.setdefault(rec, child)

    def _free_sibling(self, rparent, kind, f):
        n = self.index.nchildren.get(rparent, 0)
        for i in range(1, n + 1):
            cand = f"{rparent}.{i}"
            if cand not in self.owner and self.index.fork_kind.get(cand) == kind:
                return cand
        return f"{rparent}.{n + f}"     # more children than recorded: none of them

    def _rematch(self, live, hist, ev, with_outcome) -> bool:
        """Move an unsettled child to the recorded sibling that did what it did."""
        old = self.rec_of.get(live, live)
        rparent = old.rpartition(".")[0]
        kind = self.fork_kind.get(live)
        swap = None
        for i in range(1, self.index.nchildren.get(rparent, 0) + 1):
            cand = f"{rparent}.{i}"
            if cand == old or self.index.fork_kind.get(cand) != kind \
                    or not self._fits(cand, hist, ev, with_outcome):
                continue
            other = self.owner.get(cand)
            if other is None:
                self._remap(live, cand)
                return True
            if swap is None and other in self.unsettled and \
                    self._fits(old, self.unsettled[other]):
                swap = (cand, other)
        if swap is None:
            return False
        cand, other = swap
        self._remap(live, cand)
        self._remap(other, old)
        return True

    def _fits(self, rec, hist, ev=None, with_outcome=True) -> bool:
        n = len(hist) + (ev is not None)
        if self.index.count(rec) < n:
            return False
        if not all(self._same(rec, k, e, True) for k, e in enumerate(hist, 1)):
            return False
        return ev is None or self._same(rec, n, ev, with_outcome)

    def _same(self, rec, k, ev, with_outcome) -> bool:
        """Is ev what the recorded `rec` did as its k-th counted event?"""
        if k > self.index.count(rec):
            return False
        kind, syscall, path, path2, res, pid = self.index.key(rec, k)
        if kind != ev.kind or syscall != ev.syscall:
            return False
        if not (same_path(path, ev.path, pid, ev.pid) and same_path(path2, ev.path2, pid,
                                                                      ev.pid)):
            return False
        if kind == "exec" and not same_argv(self.index.argv(rec, k),
                                            tuple(ev.args.get("argv") or ()), pid, ev.pid):
            return False
        if with_outcome and counted(ev):
            now = outcome(ev)
            return now == res or bool(TIMING_ERRNOS & {now, res})
        return True

    def _remap(self, live, new):
        """live (and its descendants) are now recorded `new` (and its subtree)."""
        old = self.rec_of.get(live, live)
        self.rematched += 1
        todo = [live]
        while todo:
            p = todo.pop()
            todo.extend(self.kids.get(p, ()))
            r = self.rec_of.get(p, p)
            nr = new if p == live else (new + r[len(old):] if r.startswith(old + ".") else r)
            if self.owner.get(r) == p:
                del self.owner[r]
            self.rec_of[p] = nr
            self.owner[nr] = p
