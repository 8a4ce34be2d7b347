"""Live event vs recorded event: where a replay is, and whether it still follows.

The key of an event is never its global seq (parallel jobs interleave
differently on every run) but its place in its own process: (proc, k), the
k-th *counted* event of the process with tree path `proc`. Here `proc` is
always the recorded tree path; which live process stands for it (the same
path unless a parallel parent forked its children in another order) is
procmap.py's business.

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

from nixrec.recorder.trace.syscalls import FD_CALLS

HOOKED = ("syscall", "exec", "output")     # kinds the tracer's `before` hook sees
# Descriptor calls (pipe, dup2...: data flow, analysis/fdflow.py) too: a job
# runner's dups follow its jobs' order, and no replay stop is asked at one.
VOLATILE_SYSCALLS = frozenset(("wait4",)) | FD_CALLS
# What a process does in the same order even when it runs jobs in parallel.
STRUCTURAL = frozenset(("exec", "fork", "exit"))
# Errors that say "try again", which depend on timing and not on the build.
TIMING_ERRNOS = frozenset(("EINTR", "EAGAIN", "ERESTARTSYS"))
_PROC_PID = re.compile(r"^/proc/\d+(?=/|$)")
# The build log is a pty nixrec opens on the host: its number is whatever was
# free then (make's ttyname() stats /dev/pts/N inside the sandbox).
_PTS = re.compile(r"^/dev/pts/\d+$")
# mktemp's XXXXXX: two random names share 3 of 6 chars with p ~ 1e-4, and a
# GNU hello build makes ~400 of gcc's ccXXXXXX names: requiring 4 differing
# places makes ~1 replay in 30 diverge (seen: `ccxB16xH` vs `ccxJ1AxB`). So 3
# are enough when both runs hold a capital or a digit (a random run of 6 in 62
# symbols is all lowercase with p ~ 0.005); `libfoo` vs `libbar` (3 differ,
# words) must stay a divergence.
RANDOM_NAME_MIN_DIFF = 4
RANDOM_NAME_MIN_DIFF_MIXED = 3


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


def within(proc, procs) -> bool:
    """Is `proc` one of `procs` or a descendant of one (tree paths)?"""
    return any(proc == p or proc.startswith(p + ".") for p in procs)


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
    if rec == live or (_PTS.match(rec) and _PTS.match(live)):
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
    if len(diff) < RANDOM_NAME_MIN_DIFF_MIXED:
        return False
    lo, hi = diff[0], diff[-1]
    while lo > 0 and a[lo - 1].isalnum() and b[lo - 1].isalnum():
        lo -= 1
    while hi + 1 < len(a) and a[hi + 1].isalnum() and b[hi + 1].isalnum():
        hi += 1
    run_a, run_b = a[lo:hi + 1], b[lo:hi + 1]
    if not (len(run_a) >= 6 and run_a.isalnum() and run_b.isalnum()):
        return False
    return len(diff) >= RANDOM_NAME_MIN_DIFF or (_not_a_word(run_a) and _not_a_word(run_b))


def _not_a_word(chars) -> bool:
    return any(c.isdigit() or c.isupper() for c in chars)


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
        self.live_proc = None           # the live tree path, when not loc.proc

    def as_dict(self) -> dict:
        return {"why": self.why, "proc": self.loc.proc, "live_proc": self.live_proc,
                "k": self.loc.k,
                "recorded_seq": self.rec_seq, "live_seq": self.live_seq,
                "recorded": self.recorded, "now": self.now}


# --- the recorded side -------------------------------------------------------------

class RecordedIndex:
    """Per process, the seq and the comparable key of each counted event.

    Keys are interned and stored in arrays: a million events cost ~16 MB, not
    a million tuples. Besides, for following a parallel build (procmap.py):
    the argv of each exec, the kind of fork that made each process, how many
    children each process made, and, for a process that ran jobs in parallel,
    from which of its events it had two children running at once (from then
    on the order of its own calls may depend on which child finished first).
    """

    def __init__(self):
        self.counter = Counter()
        self._seqs = {}            # proc -> array of seq, one per counted event
        self._keys = {}            # proc -> array of key ids
        self._table = {}           # key -> id
        self._by_id = []           # id -> key
        self._argv = {}            # (proc, k) -> argv of the exec there
        self.fork_kind = {}        # child proc -> "fork" / "vfork" / "clone"
        self.nchildren = {}        # proc -> children it made
        self.parallel_from = {}    # proc -> k from which it ran jobs in parallel
        self._busy = {}            # while indexing: see _fork_while_running
        self._overlap = {}
        self.sigpipe_at = {}       # proc -> its count when SIGPIPE reached it (not "1")
        self._structural = {}      # proc -> ks of its exec/fork/exit (lazily)
        self._loose = {}           # proc -> set of loose keys (lazily)

    def add(self, ev) -> Loc:
        loc = self.counter.add(ev)
        if ev.kind == "signal" and ev.args.get("signal") == "SIGPIPE" and ev.proc != "1":
            self.sigpipe_at.setdefault(ev.proc, loc.k)
        if loc.j == 0:
            key = _key(ev)
            kid = self._table.get(key)
            if kid is None:
                kid = self._table[key] = len(self._by_id)
                self._by_id.append(key)
            seqs = self._seqs.get(ev.proc)
            if seqs is None:       # (setdefault would build an array per event)
                seqs = self._seqs[ev.proc] = array.array("q")
                self._keys[ev.proc] = array.array("l")
            seqs.append(ev.seq)
            self._keys[ev.proc].append(kid)
            if ev.kind in STRUCTURAL:
                self._add_structural(ev, loc)
        return loc

    def _add_structural(self, ev, loc):
        proc = ev.proc
        if ev.kind == "exec":
            self._argv[(proc, loc.k)] = tuple(ev.args.get("argv") or ())
        elif ev.kind == "fork":
            child = ev.args.get("child") or f"{proc}.{self.nchildren.get(proc, 0) + 1}"
            self.fork_kind[child] = ev.syscall
            self.nchildren[proc] = self.nchildren.get(proc, 0) + 1
            self._fork_while_running(proc, loc.k)
        else:
            self._exited(proc.rpartition(".")[0])

    # A job runner (make -j, `wait -n`) starts a child when one of several
    # running ones has finished: which one finished first decides what it
    # does next. A pipeline (`a | b`) also runs children at once, but starts
    # none because one ended; it stays strict. A job runner is lenient from
    # its first fork while another child ran, in any episode: before that it
    # ran children one at a time, the same on every run, but from there on
    # another run may refill a slot where this one did not (make's first two
    # .dirstamp jobs, then the compiles). _busy: proc -> [children running,
    # one ended while another ran]; _overlap: proc -> k of that first fork.
    def _fork_while_running(self, proc, k):
        busy = self._busy.get(proc)
        if busy is None:
            busy = self._busy[proc] = [0, False]
        if busy[0]:
            first = self._overlap.setdefault(proc, k)
            if busy[1] and proc not in self.parallel_from:
                self.parallel_from[proc] = first
        busy[0] += 1

    def _exited(self, parent):
        busy = self._busy.get(parent)
        if not busy or not busy[0]:
            return
        busy[0] -= 1
        busy[1] = busy[0] > 0

    def count(self, proc) -> int:
        return len(self._seqs.get(proc, ()))

    def at(self, loc):
        """(seq, key) of the recorded counted event at loc, or None."""
        seqs = self._seqs.get(loc.proc)
        if seqs is None or not 1 <= loc.k <= len(seqs):
            return None
        return seqs[loc.k - 1], self._by_id[self._keys[loc.proc][loc.k - 1]]

    def key(self, proc, k):
        """The key of the k-th counted event of proc (1-based; must exist)."""
        return self._by_id[self._keys[proc][k - 1]]

    def key_or_none(self, proc, k):
        """The key of the k-th counted event of proc, or None past its last."""
        keys = self._keys.get(proc)
        return self._by_id[keys[k - 1]] if keys is not None and 0 < k <= len(keys) else None

    def argv(self, proc, k):
        return self._argv.get((proc, k))

    def structural(self, proc):
        """The ks of proc's execs, forks and exit: the order a parallel process
        keeps even when its other calls move around (procmap.py)."""
        ks = self._structural.get(proc)
        if ks is None:
            by_id = self._by_id
            ks = [k for k, kid in enumerate(self._keys.get(proc, ()), 1)
                  if by_id[kid][0] in STRUCTURAL]
            self._structural[proc] = ks
        return ks

    def segment(self, loc) -> int:
        """How many structural events of loc.proc come before loc."""
        upto = loc.k - 1 if loc.j == 0 else loc.k
        return sum(1 for k in self.structural(loc.proc) if k <= upto)

    def made_call(self, proc, ev) -> bool:
        """Did proc make this call (same syscall and paths) anywhere in the recording?"""
        loose = self._loose.get(proc)
        if loose is None:
            by_id = self._by_id
            loose = self._loose[proc] = {_loose_key(by_id[kid]) for kid in
                                         set(self._keys.get(proc, ()))}
        if (ev.kind, ev.syscall, _norm(ev.path), _norm(ev.path2)) in loose:
            return True
        return any(k[0] == ev.kind and k[1] == ev.syscall and same_path(k[2], ev.path)
                   and same_path(k[3], ev.path2) for k in self._keys_of(proc))

    def _keys_of(self, proc):
        by_id = self._by_id
        return (by_id[kid] for kid in set(self._keys.get(proc, ())))

    def missing(self, live_counts, lenient=None, excused=()):
        """The first recorded counted event the replay never reached, as
        (seq, Loc), or None when every process got as far as recorded.
        `lenient`: proc -> how many structural events it made (procmap.py);
        `excused`: procs whose rest, descendants too, need not have happened."""
        return min(self.missing_each(live_counts, lenient, excused),
                   key=lambda m: m[0], default=None)

    def missing_each(self, live_counts, lenient=None, excused=()):
        """Per process, the first recorded counted event never reached, as
        (seq, Loc) (`nixrec diff` names every process that stopped short)."""
        lenient = lenient or {}
        for proc, seqs in self._seqs.items():
            if excused and within(proc, excused):
                continue
            if proc in lenient:
                ks, done = self.structural(proc), lenient[proc]
                if done >= len(ks):
                    continue
                k = ks[done]
            else:
                done = live_counts.get(proc, 0)
                if done >= len(seqs):
                    continue
                k = done + 1
            yield seqs[k - 1], Loc(proc, k)


def _norm(path):
    if path is None:
        return None
    path = _PROC_PID.sub("/proc/PID", path)
    return "/dev/pts/N" if _PTS.match(path) else path


def _loose_key(key):
    return (key[0], key[1], _norm(key[2]), _norm(key[3]))


# The tracer reads an argv word a page at a time up to 4096 bytes
# (recorder/linux.read_cstr), so a longer one (make's recipe for lib/unistd.h
# is 5,777) is cut at the first page end past 4096: where depends on the
# stack's address, which differs from run to run.
ARGV_WORD_READ = 4096


def same_argv(rec, live, rec_pid=0, live_pid=0) -> bool:
    """Two exec argv that run the same command (same_path on each word; a
    word the tracer cut is compared as far as both go)."""
    if rec is None or live is None:
        return rec is live
    return len(rec) == len(live) and all(
        a == b or _cut_twins(a, b) or same_path(a, b, rec_pid, live_pid)
        for a, b in zip(rec, live))


def _cut_twins(a, b) -> bool:
    n = min(len(a), len(b))
    return n >= ARGV_WORD_READ and a[:n] == b[:n]


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
            return self.extra(ev, loc, live_seq)
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

    def emitted(self, ev, loc, live_seq, entry_checked=False):
        """After a counted event: same call, same outcome? (`entry_checked`:
        at_entry already passed for this very call at this loc)."""
        if ev.kind in HOOKED and not entry_checked:
            early = self.at_entry(ev, loc, live_seq)
            if early is not None:
                return early
        rec = self.index.at(loc)
        if rec is None:
            return self.extra(ev, loc, live_seq)
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

    def extra(self, ev, loc, live_seq):
        if self.index.count(loc.proc) == 0:
            why = f"process {loc.proc} does not exist in the recording"
        else:
            why = f"process {loc.proc} does more than it did when recorded"
        return Divergence(why, loc, None, live_seq, None, describe(ev))

    def loose(self, ev, loc, live_seq):
        """A call of a process that runs jobs in parallel, after its own calls
        went another order (procmap.py): one it made somewhere when recorded?"""
        if self.index.made_call(loc.proc, ev):
            return None
        return Divergence("a call the process never made when recorded", loc, None,
                          live_seq, None, describe(ev))

    def unreached(self, live_counts, lenient=None, excused=()):
        """At the end of a replay: the first recorded event that never happened."""
        miss = self.index.missing(live_counts, lenient, excused)
        return None if miss is None else self._short(miss, live_counts, lenient)

    def unreached_each(self, live_counts, lenient=None, excused=()):
        """At the end: each process's first recorded event that never happened."""
        return [self._short(m, live_counts, lenient)
                for m in sorted(self.index.missing_each(live_counts, lenient, excused),
                                key=lambda m: m[0])]

    def _short(self, miss, live_counts, lenient):
        seq, loc = miss
        _, key = self.index.at(loc)
        ran = live_counts.get(loc.proc) or loc.proc in (lenient or ())
        why = (f"process {loc.proc} never ran" if loc.k == 1 and not ran
               else f"process {loc.proc} stopped short of the recording")
        return Divergence(why, loc, seq, None, describe_key(key), "nothing (the build ended)")
