"""Live event vs recorded event: where a replay is, and whether it still follows.

The key of an event is never its global seq (parallel jobs interleave
differently on every run) but its place in its own process: (proc, k), the
k-th *counted* event of the process with tree path `proc`. Tree paths are the
same in record and replay as long as each process forks in the same order
(style.md, "Process identity").

Some events are not counted, because how many there are depends on timing,
not on what the build does:
  - wait4: a shell's `wait` polls with WNOHANG, so the number of calls
    varies from run to run (seen: 7 to 17 for the same six jobs);
  - output (writes to the build log): data-dependent buffering;
  - signal: delivery depends on timing.
Such a "volatile" event is located as (proc, k, j): the j-th volatile event
after the k-th counted one. A stop at one is exact when the replay has the
same volatile events, else it happens at the next counted event.
"""

import array
import re

HOOKED = ("syscall", "exec", "output")     # kinds the tracer's `before` hook sees
VOLATILE_SYSCALLS = frozenset(("wait4",))
# Errors that say "try again", which depend on timing and not on the build.
TIMING_ERRNOS = frozenset(("EINTR", "EAGAIN", "ERESTARTSYS"))
_PROC_PID = re.compile(r"^/proc/\d+(?=/|$)")
# mktemp's XXXXXX: two random names share 3 of 6 chars with p ~ 1e-4; `libfoo`
# vs `libbar` (3 differ) must stay a divergence.
RANDOM_NAME_MIN_DIFF = 4


def counted(ev) -> bool:
    """Is this event part of its process's stable count (see module doc)?"""
    if ev.kind in ("output", "signal"):
        return False
    return not (ev.kind == "syscall" and ev.syscall in VOLATILE_SYSCALLS)


def hooked(ev) -> bool:
    """Can a replay stop right before this event (does it pass the entry hook)?"""
    return ev.kind in HOOKED


class Loc:
    """Where an event is in its process: the k-th counted event (j == 0), or
    the j-th volatile event after the k-th counted one."""

    __slots__ = ("proc", "k", "j")

    def __init__(self, proc, k, j=0):
        self.proc, self.k, self.j = proc, k, j

    def __eq__(self, other):
        return (isinstance(other, Loc) and self.proc == other.proc and self.k == other.k
                and self.j == other.j)

    def __repr__(self):
        return f"Loc({self.proc!r}, {self.k}, {self.j})"

    def describe(self) -> str:
        if self.j == 0:
            return f"process {self.proc}, its event {self.k}"
        return f"process {self.proc}, after its event {self.k}"


class Counter:
    """Per-process counts of counted and volatile events, fed in emission order."""

    def __init__(self):
        self.k = {}
        self.j = {}

    def peek(self, ev) -> Loc:
        """The Loc `ev` will get when it is emitted (used at the entry hook)."""
        k = self.k.get(ev.proc, 0)
        if counted(ev):
            return Loc(ev.proc, k + 1)
        return Loc(ev.proc, k, self.j.get(ev.proc, 0) + 1)

    def add(self, ev) -> Loc:
        loc = self.peek(ev)
        if loc.j == 0:
            self.k[ev.proc] = loc.k
            self.j[ev.proc] = 0
        else:
            self.j[ev.proc] = loc.j
        return loc


# --- what is compared ------------------------------------------------------------

def outcome(ev):
    """What an event came to: an errno name, "ok", or an exit status."""
    if ev.kind == "exit":
        sig = ev.args.get("signal")
        return f"signal {sig}" if sig else f"exit {ev.args.get('status', ev.result)}"
    return ev.errno or "ok"


def _key(ev):
    return (ev.kind, ev.syscall, ev.path, ev.path2, outcome(ev), ev.pid or 0)


def same_path(rec, live, rec_pid=0, live_pid=0) -> bool:
    """Paths that name the same thing, allowing for what legitimately differs
    between runs: pids (/proc/123, a $$ in a name) and random names (mktemp)."""
    if rec == live:
        return True
    if rec is None or live is None:
        return False
    rec, live = _PROC_PID.sub("/proc/PID", rec), _PROC_PID.sub("/proc/PID", live)
    if rec == live:
        return True
    if rec_pid and live_pid:
        if _sub_pid(rec, rec_pid) == _sub_pid(live, live_pid):
            return True
    return _random_twins(rec, live)


def _sub_pid(path, pid):
    return re.sub(rf"(?<!\d){pid}(?!\d)", "$PID", path)


def _random_twins(a, b) -> bool:
    """Same shape, differing only inside one run of >= 6 letters/digits, in
    enough places to be random (mktemp's XXXXXX, gcc's /tmp/ccXXXXXX.s)."""
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(diff) < RANDOM_NAME_MIN_DIFF:
        return False
    lo, hi = diff[0], diff[-1]
    while lo > 0 and a[lo - 1].isalnum() and b[lo - 1].isalnum():
        lo -= 1
    while hi + 1 < len(a) and a[hi + 1].isalnum() and b[hi + 1].isalnum():
        hi += 1
    run_a, run_b = a[lo:hi + 1], b[lo:hi + 1]
    return len(run_a) >= 6 and run_a.isalnum() and run_b.isalnum()


def describe(ev) -> str:
    """An event in a line, as the user reads it in a divergence report."""
    if ev.kind == "fork":
        return f"fork(child={ev.args.get('child')})"
    if ev.kind == "exit":
        return outcome(ev).replace("exit", "exited with", 1)
    if ev.kind == "exec":
        argv = ev.args.get("argv") or []
        call = f"{ev.syscall}({ev.path!r}, argv[0]={argv[0] if argv else None!r})"
    else:
        args = ", ".join(repr(p) for p in (ev.path, ev.path2) if p is not None)
        call = f"{ev.syscall or ev.kind}({args})"
    res = outcome(ev)
    return call + ("" if res == "ok" else f" = -1 {res}")


class Divergence:
    """The first point where the replay went another way (a value, not an error)."""

    def __init__(self, why, loc, rec_seq=None, live_seq=None, recorded=None, now=None):
        self.why = why                  # short reason: "different call", ...
        self.loc = loc
        self.rec_seq = rec_seq          # recorded event number, when there is one
        self.live_seq = live_seq        # how many events the replay had emitted
        self.recorded = recorded        # describe() of the recorded event
        self.now = now                  # describe() of the live event

    def as_dict(self) -> dict:
        return {"why": self.why, "proc": self.loc.proc, "k": self.loc.k,
                "recorded_seq": self.rec_seq, "live_seq": self.live_seq,
                "recorded": self.recorded, "now": self.now}


# --- the recorded side -------------------------------------------------------------

class RecordedIndex:
    """Per process, the seq and the comparable key of each counted event.

    Keys are interned and stored in arrays: a million events cost ~16 MB, not
    a million tuples.
    """

    def __init__(self):
        self.counter = Counter()
        self._seqs = {}            # proc -> array of seq, one per counted event
        self._keys = {}            # proc -> array of key ids
        self._table = {}           # key -> id
        self._by_id = []           # id -> key

    def add(self, ev) -> Loc:
        loc = self.counter.add(ev)
        if loc.j == 0:
            key = _key(ev)
            kid = self._table.get(key)
            if kid is None:
                kid = self._table[key] = len(self._by_id)
                self._by_id.append(key)
            self._seqs.setdefault(ev.proc, array.array("q")).append(ev.seq)
            self._keys.setdefault(ev.proc, array.array("l")).append(kid)
        return loc

    def count(self, proc) -> int:
        return len(self._seqs.get(proc, ()))

    def at(self, loc):
        """(seq, key) of the recorded counted event at loc, or None."""
        seqs = self._seqs.get(loc.proc)
        if seqs is None or not 1 <= loc.k <= len(seqs):
            return None
        return seqs[loc.k - 1], self._by_id[self._keys[loc.proc][loc.k - 1]]

    def missing(self, live_counts):
        """The first recorded counted event the replay never reached, as
        (seq, Loc), or None when every process got as far as recorded."""
        first = None
        for proc, seqs in self._seqs.items():
            done = live_counts.get(proc, 0)
            if done < len(seqs) and (first is None or seqs[done] < first[0]):
                first = (seqs[done], Loc(proc, done + 1))
        return first


def describe_key(key) -> str:
    kind, syscall, path, path2, res, _pid = key
    if kind == "fork":
        return "fork"
    if kind == "exit":
        return res.replace("exit", "exited with", 1)
    args = ", ".join(repr(p) for p in (path, path2) if p is not None)
    return f"{syscall or kind}({args})" + ("" if res == "ok" else f" = -1 {res}")


class Matcher:
    """Compares live events with the recording at the same (proc, k)."""

    def __init__(self, index: RecordedIndex):
        self.index = index

    def at_entry(self, ev, loc, live_seq):
        """Before a counted call runs: is it the call the recording has there?"""
        rec = self.index.at(loc)
        if rec is None:
            return self._extra(ev, loc, live_seq)
        seq, key = rec
        kind, syscall, path, path2, _res, pid = key
        if kind != ev.kind or syscall != ev.syscall:
            return Divergence("a different call", loc, seq, live_seq, describe_key(key),
                              describe(ev))
        if not (same_path(path, ev.path, pid, ev.pid)
                and same_path(path2, ev.path2, pid, ev.pid)):
            return Divergence("a different path", loc, seq, live_seq, describe_key(key),
                              describe(ev))
        return None

    def emitted(self, ev, loc, live_seq):
        """After a counted event: same call, same outcome?"""
        if ev.kind in HOOKED:
            early = self.at_entry(ev, loc, live_seq)
            if early is not None:
                return early
        rec = self.index.at(loc)
        if rec is None:
            return self._extra(ev, loc, live_seq)
        seq, key = rec
        if key[0] != ev.kind:
            return Divergence("a different event", loc, seq, live_seq, describe_key(key),
                              describe(ev))
        now = outcome(ev)
        if now != key[4] and not (TIMING_ERRNOS & {now, key[4]}):
            why = ("a different exit" if ev.kind == "exit" else
                   "a call that failed now succeeds" if now == "ok" else
                   "a call that succeeded now fails" if key[4] == "ok" else
                   "a different error")
            return Divergence(why, loc, seq, live_seq, describe_key(key), describe(ev))
        return None

    def _extra(self, ev, loc, live_seq):
        if self.index.count(loc.proc) == 0:
            why = f"process {loc.proc} does not exist in the recording"
        else:
            why = f"process {loc.proc} does more than it did when recorded"
        return Divergence(why, loc, None, live_seq, None, describe(ev))

    def unreached(self, live_counts):
        """At the end of a replay: the first recorded event that never happened."""
        miss = self.index.missing(live_counts)
        if miss is None:
            return None
        seq, loc = miss
        _, key = self.index.at(loc)
        why = (f"process {loc.proc} never ran" if loc.k == 1 and not live_counts.get(loc.proc)
               else f"process {loc.proc} stopped short of the recording")
        return Divergence(why, loc, seq, None, describe_key(key), "nothing (the build ended)")
