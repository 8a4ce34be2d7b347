"""The values a trace holds: events and processes. Plain data, no I/O.

These are what the tracer produces, what the writer stores and what the reader
gives back; analysis and replay see nothing else of the file.
"""

# What an event is about. A syscall that starts a program is an "exec" event,
# one that makes a process a "fork" event; the rest of the calls are "syscall".
KINDS = ("syscall", "exec", "fork", "exit", "signal", "output")


class Event:
    """One recorded thing a process did, numbered by `seq` (1-based, global).

    proc     tree path of the process: builder "1", its children "1.1", "1.2"...
    pid      the pid the tracer saw while recording (rec_pid; never a key)
    syscall  the call's name ("openat", "connect", ...), or None for exit/signal
    path     the path the call names, absolute, resolved against the process's
             cwd or dirfd; None when the call names no path
    path2    the second path of rename/link/symlink (the new name)
    flags    open flags, access mode, chmod mode... as an int, when the call has them
    result   the return value (>= 0), or -1 with errno set
    errno    the errno name ("ENOENT") of a failed call, else None
    args     small dict of the rest, by kind (docs/trace-format.md, "Event args"):
             exec: argv, env (builder only); fork: child, child_pid;
             exit: status, signal; output: fd, data (bytes); socket calls:
             address, family, dns; wait: child; fd-based calls: fd
    time     microseconds since the recording started
    """

    __slots__ = ("seq", "kind", "proc", "pid", "syscall", "path", "path2",
                 "flags", "result", "errno", "args", "time")

    def __init__(self, kind, proc, pid=0, syscall=None, path=None, path2=None,
                 flags=None, result=None, errno=None, args=None, time=0, seq=0):
        self.seq = seq
        self.kind = kind
        self.proc = proc
        self.pid = pid
        self.syscall = syscall
        self.path = path
        self.path2 = path2
        self.flags = flags
        self.result = result
        self.errno = errno
        self.args = args if args is not None else {}
        self.time = time

    @property
    def failed(self) -> bool:
        return self.errno is not None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other):
        return isinstance(other, Event) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return (f"Event(seq={self.seq}, kind={self.kind!r}, proc={self.proc!r}, "
                f"syscall={self.syscall!r}, path={self.path!r}, result={self.result!r}, "
                f"errno={self.errno!r})")


class Process:
    """One process of the build, by tree path (style.md, "Process identity")."""

    __slots__ = ("proc", "pid", "parent", "argv", "exe", "first_seq", "last_seq",
                 "exit_status", "exit_signal")

    def __init__(self, proc, pid=0, parent=None, argv=None, exe=None, first_seq=0,
                 last_seq=0, exit_status=None, exit_signal=None):
        self.proc = proc
        self.pid = pid
        self.parent = parent
        self.argv = argv if argv is not None else []
        self.exe = exe
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.exit_status = exit_status
        self.exit_signal = exit_signal

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other):
        return isinstance(other, Process) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return f"Process({self.proc!r}, pid={self.pid}, argv={self.argv[:3]!r})"
