"""Data flow through descriptors: pipes, socketpairs and the fds a process inherits.

The trace records each pipe/pipe2/socketpair with its two fds and what they
are (`pipe:[ino]`: one inode for both ends of a pipe; a socketpair's two
sockets are one channel here), each dup/dup2/dup3 with the fd it copied and
the one it made, and every fork and exec (recorder/trace/syscalls.py). From
those this keeps, per process, which fd is which end of which channel, and
which files it holds open for writing (opens in the places the build writes),
so that:

- the writer of a pipe produces what its reader writes: `a | b > f` makes
  a's reads sources of f (`upstream`);
- a shell's redirection written by its child is the child's write: a child
  that inherited (or dup'd) a write fd on f is one of f's writers
  (`file_writers`).

close() is not recorded (every process makes thousands): an fd holds what
was last put there (a later open, pipe or dup onto its number replaces it).
A process may copy what it read from a channel into what it writes then or
later (through its memory: `x=$(date); echo "$x" > f`), never into what it
wrote before, and what a forked child inherits above fd 2 is the parent's
leftover until the child dups it. The shell that makes a pipe for `a | b`
holds both ends; once a child of its takes the read end as its own (b's
`dup2(3, 0)`), the shell is no reader of it.
"""

from nixrec.recorder.trace.syscalls import FD_PAIR_CALLS, O_CLOEXEC

FILE = "file:"
# How far `upstream` follows pipes into pipes (a | b | c | d).
MAX_HOPS = 8
# The channels a process read that may reach what it writes later: the last
# few (a configure's shell reads ~2,000 `$(...)` and writes a few dozen files;
# every pair kept was 54k links on GNU hello).
KEEP_READ = 64


def _is_ancestor(a, b):
    return b.startswith(a + ".")


class FdFlow:
    """One pass over a trace's forks, execs, write opens and fd calls."""

    def __init__(self):
        # proc -> {fd: (object, mode "r"/"w"/"rw", cloexec, its own)}
        self.fds = {}
        self.holders = {}      # object -> {proc: [modes, first seq]}
        # object written -> {(channel read, proc)}: proc held the channel's read
        # end and a write fd on the object at one moment.
        self.feeds = {}
        self.ever_read = {}    # proc -> the last KEEP_READ channels it read, as its own
        self.creator = {}      # channel -> the process that made it
        self.passed = set()    # channels whose read end a child of their maker took

    # -- events ----------------------------------------------------------------

    def fork(self, parent, child, seq):
        """The child gets the parent's table. It holds, as its own, what is
        on its fds 0-2 (where a command reads and writes); an fd above is
        the shell's leftover (a real shell closes it) until the child dups
        it (`exec >&5`, a pipeline's `dup2(4, 1)`)."""
        table = self.fds.get(parent)
        if table:
            mine = self.fds[child] = {fd: (e[0], e[1], e[2], fd <= 2)
                                      for fd, e in table.items()}
            for e in mine.values():
                if e[3]:
                    self._hold(e[0], child, e[1], seq)
                    self._link(child, e)

    def exec(self, proc):
        table = self.fds.get(proc)
        if table:
            for fd in [fd for fd, e in table.items() if e[2]]:
                del table[fd]

    def opened(self, ev):
        """A successful open for writing (the caller says so): its fd is the file."""
        if isinstance(ev.result, int) and ev.result >= 0 and ev.path:
            self._set(ev.proc, ev.result, (FILE + ev.path, "w",
                                           bool((ev.flags or 0) & O_CLOEXEC), True), ev.seq)

    def add(self, ev):
        """A successful call of FD_CALLS."""
        name = ev.syscall
        if name in FD_PAIR_CALLS:
            fds, ends = ev.args.get("fds"), ev.args.get("ends")
            if not fds or not ends or len(fds) != 2 or len(ends) != 2:
                return
            cloexec = bool((ev.flags or 0) & O_CLOEXEC)
            if name == "socketpair":
                chan, modes = "socketpair:" + "+".join(sorted(ends)), ("rw", "rw")
            else:
                chan, modes = ends[0], ("r", "w")
            self.creator.setdefault(chan, ev.proc)
            for fd, mode in zip(fds, modes):
                self._set(ev.proc, fd, (chan, mode, cloexec, True), ev.seq)
            return
        old, new = ev.args.get("fd"), ev.result
        if not isinstance(new, int) or new < 0:
            return
        table = self.fds.setdefault(ev.proc, {})
        entry = table.get(old)
        if entry is None:
            table.pop(new, None)      # a copy of an fd this pass does not follow
            return
        # dup and dup2 clear FD_CLOEXEC on the new fd; dup3 sets what it is told.
        cloexec = name == "dup3" and bool((ev.flags or 0) & O_CLOEXEC)
        self._set(ev.proc, new, (entry[0], entry[1], cloexec, True), ev.seq)

    def _set(self, proc, fd, entry, seq):
        self.fds.setdefault(proc, {})[fd] = entry
        self._hold(entry[0], proc, entry[1], seq)
        self._link(proc, entry)

    def _link(self, proc, entry):
        """What `proc` may now copy from a channel it reads into an object it
        writes, with `entry` newly its own."""
        obj, mode = entry[0], entry[1]
        if "r" in mode and not obj.startswith(FILE):
            read = self.ever_read.setdefault(proc, {})
            read[obj] = None
            if len(read) > KEEP_READ:
                del read[next(iter(read))]
            maker = self.creator.get(obj)
            if maker is not None and maker != proc and _is_ancestor(maker, proc):
                self.passed.add(obj)          # a child reads it: its maker does not
            for other, omode, _, active in self.fds[proc].values():
                if active and other != obj and "w" in omode:
                    self.feeds.setdefault(other, set()).add((obj, proc))
        if "w" in mode:
            for chan in self.ever_read.get(proc, ()):
                if chan != obj:
                    self.feeds.setdefault(obj, set()).add((chan, proc))

    def _hold(self, obj, proc, mode, seq):
        procs = self.holders.setdefault(obj, {})
        h = procs.get(proc)
        if h is None:
            procs[proc] = [mode, seq]
        elif mode not in h[0]:
            h[0] += mode

    # -- questions ---------------------------------------------------------------

    def file_writers(self, path):
        """[(proc, seq)]: the processes that held a write fd on `path`, by
        their own open or inherited (a shell's `cmd > path`)."""
        return [(p, h[1]) for p, h in (self.holders.get(FILE + path) or {}).items()
                if "w" in h[0]]

    def upstream(self, path):
        """[(writer, channel, seq)]: the processes whose writes reached `path`
        through a pipe or socketpair (a process read it while it could write
        the file), and theirs, MAX_HOPS deep. Not the process that read it,
        nor its ancestors (the shell that made the pipe)."""
        out, seen, todo = [], set(), [(FILE + path, 0)]
        done = {FILE + path}
        while todo:
            obj, hops = todo.pop(0)
            if hops >= MAX_HOPS:
                continue
            for chan, reader in sorted(self.feeds.get(obj, ())):
                if chan in self.passed and self.creator.get(chan) == reader:
                    continue
                for p, h in sorted(self.holders.get(chan, {}).items()):
                    if "w" not in h[0] or p == reader or _is_ancestor(p, reader) \
                            or p in seen:
                        continue
                    seen.add(p)
                    out.append((p, chan, h[1]))
                if chan not in done:
                    done.add(chan)
                    todo.append((chan, hops + 1))
        return out
