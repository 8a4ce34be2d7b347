"""One streaming pass over a trace that keeps what the rules need (`why`).

Memory grows with processes, distinct paths and failed calls, not with events:
successes are kept as "last seq per path/basename", stderr as a bounded tail.
"""

import collections
import re

from nixrec.analysis.deps import access_of, basename, creates, deletes

STDERR_LINES = 200      # per process; a build that prints more is rarely helped by more

# Nix gives the builder a pseudo-terminal, so gcc, make and friends colour their
# messages; the rules read the words ("fatal error: zlib.h: ..."), not the colours.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def not_a_failure(ev) -> bool:
    """A failed call that is a question, not a problem: readlink EINVAL means "not
    a symlink" (realpath asks it of every component), mkdir EEXIST is `mkdir -p`
    walking down to the directory it makes."""
    name = ev.syscall or ""
    if ev.errno == "EINVAL" and name.startswith("readlink"):
        return True
    return ev.errno == "EEXIST" and name.startswith("mkdir")


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


def parent_of(proc: str):
    return proc.rsplit(".", 1)[0] if "." in proc else None


def is_ancestor(a: str, b: str) -> bool:
    """a is a strict ancestor of b in the process tree."""
    return b.startswith(a + ".")


class Facts:
    """Collects per-trace facts; feed events with add(), in seq order."""

    def __init__(self, header: dict, processes: dict = None):
        self.header = header or {}
        self.plan = self.header.get("plan") or {}
        self.procs = {}
        self.failures = []                      # failed syscall/exec events
        self.network = []                       # every socket call with an address
        self.home_writes = []                   # successful writes under HOME
        self.signals = []                       # kind "signal" events
        self.exits = {}                         # proc -> exit event
        self.last_ok = {}                       # path -> seq of last success
        self.last_ok_base = {}                  # basename -> seq of last success
        self.created = collections.defaultdict(list)   # path -> [(seq, proc)]
        self.writers = collections.defaultdict(list)   # path -> [(seq, proc)]
        self.reads = collections.defaultdict(list)     # path -> [(seq, proc)] first few
        self.symlinks = {}                      # link path -> target
        self.waits = collections.defaultdict(list)     # proc -> [(seq, child, status)]
        self.last_fork = None                   # the fork event seen last
        self.killed = None                      # the limit the recorder killed it for
        self.stderr = collections.defaultdict(
            lambda: collections.deque(maxlen=STDERR_LINES))  # proc -> (seq, line)
        self._partial = {}
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
        self.last_seq = max(self.last_seq, ev.seq)
        q = self.proc(ev.proc)
        if not q.first_seq:
            q.first_seq = ev.seq
        q.last_seq = max(q.last_seq, ev.seq)
        if ev.kind not in ("exit", "signal"):
            q.active_seq = ev.seq
        handler = _HANDLERS.get(ev.kind)
        if handler:
            handler(self, ev, q)

    def _on_fork(self, ev, q):
        child = ev.args.get("child")
        if child:
            self.last_fork = ev
            c = self.proc(child)
            c.parent = ev.proc
            c.first_seq = c.first_seq or ev.seq
            if not c.argv:
                c.argv = list(q.argv)      # a fork runs the parent's program
                c.exe = q.exe

    def _on_exec(self, ev, q):
        if ev.failed:
            self.failures.append(ev)
            return
        q.argv = list(ev.args.get("argv") or [ev.path])
        q.exe = ev.path
        q.exec_seq = ev.seq
        self._ok(ev.path, ev.seq)

    def _on_exit(self, ev, q):
        self.exits[ev.proc] = ev
        q.exit_seq = ev.seq
        if "status" in ev.args:
            q.exit_status = ev.args.get("status")
        if ev.args.get("signal"):
            q.exit_signal = ev.args.get("signal")

    def _on_signal(self, ev, q):
        self.signals.append(ev)

    def _on_output(self, ev, q):
        data = ev.args.get("data") or b""
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        text = self._partial.pop(ev.proc, "") + _ANSI.sub("", data)
        lines = text.split("\n")
        if lines[-1]:
            self._partial[ev.proc] = lines[-1]
        for line in lines[:-1]:
            if line.strip():
                self.stderr[ev.proc].append((ev.seq, line))

    def _on_syscall(self, ev, q):
        name = ev.syscall or ""
        if name.startswith("wait"):
            child = ev.args.get("child")
            if child:
                self.waits[ev.proc].append((ev.seq, child, ev.args.get("status")))
            return
        if ev.args.get("address") or ev.args.get("dns"):
            self.network.append(ev)
        if ev.failed:
            if not not_a_failure(ev):
                self.failures.append(ev)
            return
        self._on_success(ev, q)

    def _on_success(self, ev, q):
        access = access_of(ev)
        if ev.path and access in ("read", "stat", "exec", "write"):
            self._ok(ev.path, ev.seq)
        if access == "read" and ev.path and len(self.reads[ev.path]) < 4:
            self.reads[ev.path].append((ev.seq, ev.proc))
        made = creates(ev)
        if made:
            self.created[made].append((ev.seq, ev.proc))
            self._ok(made, ev.seq)
        if access == "write" and ev.path:
            self.writers[ev.path].append((ev.seq, ev.proc))
        if ev.syscall in ("symlink", "symlinkat") and ev.path2:
            self.symlinks[ev.path2] = ev.args.get("target") or ev.path
        elif ev.syscall in ("readlink", "readlinkat") and ev.path:
            target = ev.args.get("target") or ev.path2
            if target:
                self.symlinks[ev.path] = target
        gone = deletes(ev)
        if gone:
            self.writers[gone].append((ev.seq, ev.proc))
        home = self.plan.get("home") or "/homeless-shelter"
        if access == "write" and ev.path and (ev.path == home
                                              or ev.path.startswith(home + "/")):
            self.home_writes.append(ev)

    def _ok(self, path, seq):
        self.last_ok[path] = seq
        self.last_ok_base[basename(path)] = seq

    def finish(self) -> None:
        for proc, text in self._partial.items():
            if text.strip():
                self.stderr[proc].append((self.last_seq, text))
        self._partial = {}

    # -- queries ----------------------------------------------------------------

    def succeeded_later(self, path, seq) -> bool:
        return self.last_ok.get(path, 0) > seq

    def base_succeeded_later(self, path, seq) -> bool:
        return self.last_ok_base.get(basename(path), 0) > seq

    def exists_evidence(self, path) -> bool:
        """The trace shows `path` existed at some point (opened, stat'ed, created)."""
        return path in self.last_ok or path in self.created

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


_HANDLERS = {
    "fork": Facts._on_fork, "exec": Facts._on_exec, "exit": Facts._on_exit,
    "signal": Facts._on_signal, "output": Facts._on_output,
    "syscall": Facts._on_syscall,
}


def collect(header, processes, events) -> Facts:
    facts = Facts(header, processes)
    for ev in events:
        facts.add(ev)
    facts.finish()
    return facts
