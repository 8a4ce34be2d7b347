"""One streaming pass over a trace that keeps what the rules need (`why`).

Memory grows with processes and distinct paths, not with events or failed calls:
successes are kept as "last seq per path/basename", stderr as a bounded tail, and
the failed calls of each process as a bounded window (FailLog) that shrinks when
the process exits 0 (docs/analysis.md, "Scale").
"""

import collections
import contextlib
import gc
import sys
import types

from nixrec.analysis.deps import PathClassifier, access_of, basename, creates, deletes
from nixrec.analysis.filestate import FileState
from nixrec.analysis.graph import GraphBuilder, parent_of
from nixrec.analysis.idioms import operation
from nixrec.analysis.includes import is_include_dir
from nixrec.analysis.loglines import LineSplitter
from nixrec.analysis.noise import path_noise
from nixrec.analysis.searches import hidden_lookups
from nixrec.recorder.trace.syscalls import FD_CALLS
from nixrec.recorder.tracefile.hostview import HostView
from nixrec.recorder.tracefile.model import Event

STDERR_LINES = 200      # per process; a build that prints more is rarely helped by more
# After a process exits 0 it is rarely the one to blame: keep this much of its log.
STDERR_LINES_OK = 20
# Per path, the (seq, proc) of creations and writes kept: the first ones (races,
# producers) and, in the last slot, the latest (check-before-create).
PER_PATH = 16

# Every wait call (wait4 is the one the tracer records): an answer, never a failure.
_WAIT_CALLS = frozenset(("wait4", "waitid", "waitpid", "wait3", "wait"))


def not_a_failure(ev) -> bool:
    """A failed call that is a question, not a problem: readlink EINVAL means "not
    a symlink" (realpath asks it of every component), mkdir EEXIST is `mkdir -p`
    walking down to the directory it makes."""
    name = ev.syscall or ""
    if ev.errno == "EINVAL" and name.startswith("readlink"):
        return True
    return ev.errno == "EEXIST" and name.startswith("mkdir")


class FailLog:
    """The failed calls of one process, bounded: the last RECENT in full, plus
    those evicted from that window that are not plain lookups (notable()): a
    failed connect, exec, write or include-directory stat early in a long
    process still counts. A process that exits 0 keeps only KEEP_OK of its
    recent window (trim()): the last failure per path, noise dropped.

    The bounds matter only at scale: a cc1 misses a header in every include
    directory before the one holding it, ~300 failed calls per compile, 5
    million in a 10-million-event build (docs/analysis.md, "Scale")."""

    RECENT = 256        # a failed process's last calls: the ones that explain it
    NOTABLE = 128       # evicted from RECENT but not a plain lookup
    HIDDEN = 64         # evicted plain lookups in a directory the sandbox hides
    KEEP_OK = 16        # a process that exited 0: the last distinct paths

    __slots__ = ("recent", "kept", "count", "hidden", "in_hidden")

    def __init__(self, in_hidden=None):
        self.recent = collections.deque(maxlen=self.RECENT)
        self.kept = []
        self.count = 0
        # A search's probes in a hidden distribution directory (searches.py)
        # outlive the window: cmake's find_path of zlib.h is followed by
        # hundreds of find_library probes before cmake gives up.
        self.hidden = []
        self.in_hidden = in_hidden

    def add(self, ev):
        self.count += 1
        recent = self.recent
        if recent.__class__ is list:        # trimmed, yet the process goes on
            recent = self.recent = collections.deque(recent, maxlen=self.RECENT)
        if len(recent) == self.RECENT:
            old = recent[0]
            if notable(old):
                if len(self.kept) < self.NOTABLE:
                    self.kept.append(_compact(old))
            elif len(self.hidden) < self.HIDDEN and self.in_hidden is not None \
                    and old.path and self.in_hidden(old.path):
                self.hidden.append(_compact(old))
        recent.append(ev)

    def trim(self):
        """The process exited 0: keep its notable calls and its last distinct
        paths (all its calls if it made few), as a plain list."""
        self.hidden = []        # a search that ended well is no cause
        if self.count <= self.KEEP_OK and not self.kept:
            self.recent = [_compact(ev) for ev in self.recent]
            return
        last, seen = [], set()
        for ev in reversed(self.recent):
            if len(last) >= self.KEEP_OK:
                break
            if ev.path in seen or (ev.path and path_noise(ev.path) is True):
                continue
            seen.add(ev.path)
            last.append(_compact(ev))
        last.reverse()
        self.recent = last

    def events(self):
        """Kept failures in seq order."""
        if not self.kept and not self.hidden:
            return list(self.recent)
        return sorted(self.kept + self.hidden + list(self.recent), key=lambda e: e.seq)


_NO_ARGS = types.MappingProxyType({})
_intern = sys.intern


def _compact(ev):
    """A copy of a failed call that outlives its chunk, made of shared strings:
    each chunk of the trace decodes its own copies of "openat", "ENOENT", the
    process and the path, which an event kept past its chunk would hold."""
    return Event(_intern(ev.kind), _intern(ev.proc), ev.pid,
                 ev.syscall and _intern(ev.syscall), ev.path and _intern(ev.path),
                 ev.path2 and _intern(ev.path2), ev.flags, ev.result,
                 ev.errno and _intern(ev.errno), ev.args or _NO_ARGS, ev.time, ev.seq)


_LOOKUP_ERRNO = frozenset(("ENOENT", "ENOTDIR"))


def notable(ev) -> bool:
    """Not a plain lookup (a failed open or stat of a path that is not there):
    those are the bulk of a big trace and only the last ones explain a failure.
    An include directory's stat is kept: includes.py reads it at the end."""
    if ev.kind != "syscall" or ev.errno not in _LOOKUP_ERRNO or ev.args:
        return True
    access = access_of(ev)
    if access == "stat":
        return bool(ev.path) and is_include_dir(ev.path)
    return access != "read"


class Proc:
    """What `why` knows of one process (merged from the process table and events)."""

    __slots__ = ("proc", "pid", "parent", "argv", "exe", "first_seq", "last_seq",
                 "exit_status", "exit_signal", "exit_seq", "children", "exec_seq",
                 "active_seq")

    def __init__(self, proc):
        self.proc = proc
        self.pid = 0
        self.parent = parent_of(proc)
        self.argv = []
        self.exe = None
        self.first_seq = 0
        self.last_seq = 0
        self.exit_status = None
        self.exit_signal = None
        self.exit_seq = None
        self.children = []
        self.exec_seq = 0        # seq of the last successful exec (start of this image)
        self.active_seq = 0      # seq of its last event other than its death

    @property
    def failed(self) -> bool:
        return bool(self.exit_signal) or (self.exit_status not in (None, 0))

    def argv0(self) -> str:
        return basename(self.argv[0]) if self.argv else (basename(self.exe) or "?")


def is_ancestor(a: str, b: str) -> bool:
    """a is a strict ancestor of b in the process tree."""
    return b.startswith(a + ".")


class Facts:
    """Collects per-trace facts; feed events with add(), in seq order."""

    def __init__(self, header: dict, processes: dict = None):
        self.header = header or {}
        self.plan = self.header.get("plan") or {}
        self.procs = {}
        self.fails = {}                         # proc -> FailLog of failed calls
        self.network = []                       # resolver queries that did not fail
        self.home_writes = []                   # successful writes under HOME
        self.last_ok = {}                       # path -> seq of last success
        self.last_ok_base = {}                  # basename -> seq of last success
        self.op_ok = {}                         # (path, operation) -> seq of last success
        self.created = collections.defaultdict(list)   # path -> [(seq, proc)]
        self.writers = collections.defaultdict(list)   # path -> [(seq, proc)]
        self.reads = collections.defaultdict(list)     # path -> [(seq, proc)] first few
        self.symlinks = {}                      # link path -> target
        self.threads = set()                    # procs started as a thread (clone)
        self.cls = PathClassifier(self.plan)
        self.host = HostView(None)              # the host's view: set from the summary
        # Is path there at seq N: only where files come and go (filestate.py).
        self.files = FileState(self.cls.writable_prefixes)
        self._history = self.files.history
        self._tracked = self.files.tracked
        # Who made, wrote or removed what, and argv/cwd (graph.py, flow_only).
        self.flow = GraphBuilder(header, processes, flow_only=True)
        self.waits = collections.defaultdict(list)     # proc -> [(seq, child, status)]
        self.last_fork = None                   # the fork event seen last
        self.killed = None                      # the limit the recorder killed it for
        self.stderr = collections.defaultdict(
            lambda: collections.deque(maxlen=STDERR_LINES))  # proc -> (seq, line)
        self._lines = LineSplitter(STDERR_LINES)    # linear in the log (loglines.py)
        self._q = None                          # the Proc of the last event
        self._failures = None                   # all FailLogs merged (failures)
        self._queries = {}                      # (proc, address, question) -> event
        self._home_writes = {}                  # (proc, path) -> event
        self._home = self.plan.get("home") or "/homeless-shelter"
        self._in_hidden = hidden_lookups(self.cls)
        self._home_dir = self._home + "/"
        # proc -> seq of its first successful access under the build directory:
        # where a program's own work starts, after its start-up probes.
        self.first_build = {}
        self._build_dir = (self.plan.get("build_dir") or "/build").rstrip("/") + "/"
        self.last_seq = 0
        for path, p in (processes or {}).items():
            self._merge_proc(path, p)
        root = self.proc("1")
        if not root.argv and self.plan.get("argv"):
            # A builder whose exec failed never ran a program: name the one it meant to.
            root.argv = list(self.plan["argv"])
            root.exe = self.plan.get("builder")

    def _merge_proc(self, path, p):
        q = self.proc(path)
        q.pid = p.pid or q.pid
        q.parent = p.parent or q.parent
        q.argv = list(p.argv or q.argv)
        q.exe = p.exe or q.exe
        q.first_seq = p.first_seq or q.first_seq
        q.last_seq = p.last_seq or q.last_seq
        q.exit_status = p.exit_status
        q.exit_signal = p.exit_signal

    def proc(self, path) -> Proc:
        q = self.procs.get(path)
        if q is None:
            q = self.procs[path] = Proc(path)
            par = q.parent
            if par is not None:
                self.proc(par).children.append(path)
        return q

    # -- streaming --------------------------------------------------------------

    def add(self, ev) -> None:
        # The hot path: every event of the trace comes through here, so the
        # common cases (a failed lookup, a syscall) are handled inline.
        seq = ev.seq
        if seq > self.last_seq:
            self.last_seq = seq
        name = ev.proc
        q = self._q
        if q is None or q.proc != name:     # events come in runs of one process
            q = self._q = self.procs.get(name) or self.proc(name)
        if not q.first_seq:
            q.first_seq = seq
        if seq > q.last_seq:
            q.last_seq = seq
        kind = ev.kind
        if kind == "syscall":
            q.active_seq = seq
            errno = ev.errno
            if errno is not None and not ev.args and ev.syscall not in _WAIT_CALLS:
                if (errno != "EINVAL" and errno != "EEXIST") or not not_a_failure(ev):
                    log = self.fails.get(name)
                    if log is None:
                        log = self.fails[name] = FailLog(self._in_hidden)
                    log.add(ev)
                    if errno == "ENOENT" or errno == "ENOTDIR":
                        # FileState.missing, inline: most failed lookups are
                        # of paths that never existed, which have no history.
                        h = self._history.get(ev.path)
                        if h is not None:
                            self.files.missing(ev.path, seq)
                return
            self._on_syscall(ev, q)
            return
        if kind != "exit" and kind != "signal":
            q.active_seq = seq
        handler = _HANDLERS.get(kind)
        if handler:
            handler(self, ev, q)

    def _on_fork(self, ev, q):
        self.flow.add_process(ev)
        child = ev.args.get("child")
        if child:
            self.last_fork = ev
            if ev.args.get("thread"):
                self.threads.add(child)
            c = self.proc(child)
            c.parent = ev.proc
            c.first_seq = c.first_seq or ev.seq
            if not c.argv:
                c.argv = list(q.argv)      # a fork runs the parent's program
                c.exe = q.exe

    def _on_exec(self, ev, q):
        if ev.failed:
            self._failed(ev)        # not a lookup: ENOENT may be the interpreter
            return
        q.argv = list(ev.args.get("argv") or [ev.path])
        q.exe = ev.path
        q.exec_seq = ev.seq
        self._ok(ev.path, ev.seq)
        self.files.observe(ev, "exec", None, None)
        self.flow.add_process(ev)

    def _on_exit(self, ev, q):
        q.exit_seq = ev.seq
        if "status" in ev.args:
            q.exit_status = ev.args.get("status")
        if ev.args.get("signal"):
            q.exit_signal = ev.args.get("signal")
        if not q.failed and ev.proc not in self.threads:
            # Exited 0: rarely the one to blame, so keep less of it (not a
            # thread: its status is not its program's, which may fail yet).
            log = self.fails.get(ev.proc)
            if log is not None:
                log.trim()
            lines = self.stderr.get(ev.proc)
            if lines is not None and len(lines) > STDERR_LINES_OK:
                self.stderr[ev.proc] = collections.deque(
                    list(lines)[-STDERR_LINES_OK:], maxlen=STDERR_LINES)

    def _on_output(self, ev, q):
        lines = self._lines.feed(ev.proc, ev.args.get("data"))
        if lines:
            kept = self.stderr[ev.proc]
            for line in lines:
                kept.append((ev.seq, line))

    def _on_syscall(self, ev, q):
        args = ev.args
        if ev.syscall in _WAIT_CALLS:
            if args.get("child"):
                self.waits[ev.proc].append((ev.seq, args["child"], args.get("status")))
            return
        if ev.syscall in FD_CALLS:        # data flow only (fdflow.py), never a cause
            if ev.errno is None:
                self.flow.add_fd(ev)
            return
        if args:
            if (args.get("dns") or (args.get("address") or "").endswith(":53")) \
                    and not ev.failed:
                self._resolver_query(ev)
        if ev.errno is not None:
            if not not_a_failure(ev):
                self._failed(ev)
                self.files.failed(ev)
            return
        if ev.path is not None or ev.path2 is not None:
            self._on_success(ev, q)

    def _failed(self, ev):
        log = self.fails.get(ev.proc)
        if log is None:
            log = self.fails[ev.proc] = FailLog(self._in_hidden)
        log.add(ev)

    def _resolver_query(self, ev):
        """A UDP connect to a resolver succeeds; only the query after it fails.
        One per (process, address, question): a client retries the same query."""
        key = (ev.proc, ev.args.get("address"), ev.args.get("dns"))
        self._queries.pop(key, None)      # the latest of a repeated query
        self._queries[key] = ev

    def _on_success(self, ev, q):
        access = access_of(ev)
        path = ev.path
        if path and path.startswith(self._build_dir) and ev.proc not in self.first_build \
                and ev.kind == "syscall":
            self.first_build[ev.proc] = ev.seq
        made, gone = creates(ev), deletes(ev)
        if made or gone or (path and path.startswith(self._tracked)):
            self.files.observe(ev, access, made, gone)    # it can change
        # The data flow `why` follows is in the places the build writes (a
        # write to /dev/null, configure's every `>/dev/null`, makes nothing).
        if (access != "read" and access != "stat" and self.cls.writable(path or ""))\
                or ev.syscall == "chdir" or (made and self.cls.writable(made)):
            self.flow.add_flow(ev, made, gone)
        if path and access in ("read", "stat", "exec", "write"):
            self._ok(path, ev.seq)
        op = _CHANGE_OPS.get(ev.syscall)
        if op and path:
            self.op_ok[(path, op)] = ev.seq     # tolerated failures (op_succeeded_later)
        if access == "read" and path and len(self.reads[path]) < 4:
            self.reads[path].append((ev.seq, ev.proc))
        if made:
            _keep(self.created[made], (ev.seq, ev.proc))
            self._ok(made, ev.seq)
        if access == "write" and path:
            _keep(self.writers[path], (ev.seq, ev.proc))
        if ev.syscall in ("symlink", "symlinkat") and ev.path2:
            self.symlinks[ev.path2] = ev.args.get("target") or path
        elif ev.syscall in ("readlink", "readlinkat") and path:
            target = ev.args.get("target") or ev.path2
            if target:
                self.symlinks[path] = target
        if gone:
            _keep(self.writers[gone], (ev.seq, ev.proc))
        if access == "write" and path and (path == self._home
                                           or path.startswith(self._home_dir)):
            key = (ev.proc, path)       # the latest write of each path
            self._home_writes.pop(key, None)
            self._home_writes[key] = ev

    def _ok(self, path, seq):
        self.last_ok[path] = seq
        self.last_ok_base[basename(path)] = seq

    def finish(self) -> None:
        self._failures = None
        self.network = sorted(self._queries.values(), key=lambda e: e.seq)
        self.home_writes = sorted(self._home_writes.values(), key=lambda e: e.seq)
        for proc, text in self._lines.flush().items():
            self.stderr[proc].append((self.last_seq, text))

    # -- queries ----------------------------------------------------------------

    def failures_of(self, proc) -> list:
        """The failed calls kept for `proc`, in seq order (FailLog)."""
        log = self.fails.get(proc)
        return log.events() if log is not None else []

    @property
    def failures(self) -> list:
        """Every failed call kept, in seq order (made once, after finish())."""
        if self._failures is None:
            out = []
            for log in self.fails.values():
                out.extend(log.events())
            out.sort(key=lambda e: e.seq)
            self._failures = out
        return self._failures

    def succeeded_later(self, path, seq) -> bool:
        return self.last_ok.get(path, 0) > seq

    def op_succeeded_later(self, path, syscall, seq):
        """The seq of a later success of the same operation (idioms.operation)
        on the same path, or None: install's fsetxattr ENOTSUP (no ACLs here)
        followed by its fchmod, which set the mode anyway, was tolerated."""
        op = operation(syscall)
        later = self.op_ok.get((path, op)) if op else None
        return later if later and later > seq else None

    def base_succeeded_later(self, path, seq) -> bool:
        return self.last_ok_base.get(basename(path), 0) > seq

    def exists_at(self, path, seq):
        """True / False / None: was `path` there just before event `seq`? Where
        files come and go, by the trace's own file state at that point
        (filestate.py), never by an earlier success; elsewhere nothing changes
        while the build runs, so a success at any time says it was."""
        if self.cls.writable(path):
            return self.files.exists_at(path, seq)
        return True if path in self.last_ok else None

    def stderr_text(self, procs) -> str:
        return "\n".join(line for p in procs for _, line in self.stderr.get(p, ()))

    def stderr_of(self, proc, before=None, limit=5):
        lines = [l for s, l in self.stderr.get(proc, ()) if before is None or s <= before]
        return lines[-limit:]

    def subtree(self, proc):
        out, todo = [], [proc]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(self.procs[p].children if p in self.procs else ())
        return out


# Operations that change a file (idioms.OPERATIONS) whose successes are kept
# per path: a failed lookup found later is a probe (last_ok); a failed change
# done later by another call of the same operation was tolerated.
_CHANGE_OPS = {call: operation(call) for call in (
    "chown", "fchown", "lchown", "fchownat", "chmod", "fchmod", "fchmodat", "fchmodat2",
    "setxattr", "fsetxattr", "lsetxattr", "utime", "utimes", "utimensat", "futimesat")}


_HANDLERS = {
    "fork": Facts._on_fork, "exec": Facts._on_exec, "exit": Facts._on_exit,
    "output": Facts._on_output, "syscall": Facts._on_syscall,
}


def _keep(seen, item):
    """Append to a per-path list of (seq, proc), bounded: the first PER_PATH - 1
    and, in the last slot, the latest."""
    if len(seen) < PER_PATH:
        seen.append(item)
    else:
        seen[-1] = item


def collect(header, processes, events) -> Facts:
    facts = Facts(header, processes)
    with no_cycle_gc():
        for ev in events:
            facts.add(ev)
    facts.finish()
    return facts


@contextlib.contextmanager
def no_cycle_gc():
    """Pause the cycle collector. Events, and what Facts and the rules make of
    them, hold no reference cycles, so it has nothing to find; left on, it walks
    every live object again and again while millions of events are made and
    dropped (about a third of the time of `why` on 10 million events)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
