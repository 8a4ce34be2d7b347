"""TraceBuilder: small synthetic traces for unit tests (ReproZip's style).

    t = TraceBuilder()
    sh = t.builder(argv=["sh", "-c", "make"])
    cc = t.fork(sh, argv=["cc1", "x.c"], path="/bin/cc1")
    t.open(cc, "/usr/include/zlib.h", errno="ENOENT")
    t.connect(cc, "1.1.1.1:80", errno="ENETUNREACH")
    t.write(cc, 2, b"fatal error\\n")
    t.exit(cc, 1)
    t.wait(sh, cc)
    t.exit(sh, 2)
    t.events, t.processes                 # plain lists, for pure-function tests
    path = t.save(tmp_path / "t.nixrec")   # a real trace file, via TraceWriter

Events follow the tracer's conventions (docs/trace-format.md, "Event kinds"):
seqs are 1-based and consecutive, time advances by `step` microseconds per
event, every process gets a distinct fake pid, relative paths are resolved
against the process's cwd ("/build", as in the Nix sandbox).
"""

import os
import posixpath

from nixrec.recorder.tracefile import Event, TraceWriter
from nixrec.recorder.tracefile.procs import ProcessTracker

DEFAULT_HEADER = {"nixrec": "test", "drv": "", "sandbox": {}, "inputs": {},
                  "host": {"kernel": "test", "arch": "x86_64"}, "start": 0}


def _family(address: str) -> str:
    if address.startswith("/") or address.startswith("@"):
        return "AF_UNIX"
    return "AF_INET6" if address.startswith("[") or address.count(":") > 1 else "AF_INET"


class TraceBuilder:
    """Appends events in order; each helper returns the Event (fork/builder: the tree path)."""

    def __init__(self, start_time: int = 0, step: int = 10, first_pid: int = 100):
        self.events = []
        self.time = start_time
        self.step = step
        self._next_pid = first_pid
        self._pids, self._cwd, self._fds, self._children = {}, {}, {}, {}
        self._status = {}

    # -- generic -------------------------------------------------------------

    def emit(self, proc, kind, syscall=None, path=None, path2=None, flags=None,
             result=0, errno=None, args=None, time=None) -> Event:
        """Append one event; a failed call (errno set) gets result -1."""
        if errno is not None:
            result = -1
        self.time = self.time + self.step if time is None else time
        ev = Event(kind, proc, pid=self._pid(proc), syscall=syscall,
                   path=self._abs(proc, path), path2=self._abs(proc, path2), flags=flags,
                   result=result, errno=errno, args=dict(args or {}), time=self.time,
                   seq=len(self.events) + 1)
        self.events.append(ev)
        return ev

    def syscall(self, proc, name, path=None, path2=None, flags=None, result=0,
                errno=None, **args) -> Event:
        return self.emit(proc, "syscall", name, path, path2, flags, result, errno, args)

    # -- processes -----------------------------------------------------------

    def builder(self, argv=("sh", "-c", "true"), path="/bin/sh", env=None) -> str:
        """The builder process "1", started by its execve (with env, as recorded)."""
        env = dict(env) if env is not None else {"out": "/nix/store/x-out", "PATH": "/bin"}
        self.emit("1", "exec", "execve", path,
                  args={"argv": list(argv), "env": env})
        return "1"

    def fork(self, parent, argv=None, path=None, thread=False, syscall="clone",
             errno=None) -> str:
        """A new child of `parent` (next tree path); execs `argv` if given."""
        n = self._children.get(parent, 0) + 1
        child = f"{parent}.{n}"
        if errno is not None:
            self.emit(parent, "fork", syscall, errno=errno, args={"thread": thread})
            return None
        self._children[parent] = n
        self._cwd[child] = self._cwd.get(parent, "/build")
        pid = self._pid(child)
        self.emit(parent, "fork", syscall, result=pid, args={"child": child, "thread": thread})
        if argv is not None:
            self.exec(child, argv, path)
        return child

    def exec(self, proc, argv, path=None, errno=None) -> Event:
        path = path or (argv[0] if argv[0].startswith("/") else f"/bin/{argv[0]}")
        return self.emit(proc, "exec", "execve", path, errno=errno,
                         args={"argv": list(argv)})

    def exit(self, proc, status=0, signal=None) -> Event:
        status = None if signal else status
        self._status[proc] = status
        return self.emit(proc, "exit", result=status,
                         args={"status": status, "signal": signal})

    def wait(self, parent, child, status=None) -> Event:
        status = self._status.get(child, 0) if status is None else status
        return self.syscall(parent, "wait4", result=self._pids.get(child, 0),
                            child=child, status=status)

    def signal(self, proc, signame="SIGSEGV") -> Event:
        return self.emit(proc, "signal", args={"signal": signame})

    def chdir(self, proc, path, errno=None) -> Event:
        ev = self.syscall(proc, "chdir", path, errno=errno)
        if errno is None:
            self._cwd[proc] = ev.path
        return ev

    # -- files -----------------------------------------------------------------

    def open(self, proc, path, flags=os.O_RDONLY, errno=None, syscall="openat") -> Event:
        fd = None if errno else self._new_fd(proc)
        return self.emit(proc, "syscall", syscall, path, flags=flags,
                         result=fd if fd is not None else 0, errno=errno)

    def stat(self, proc, path, errno=None, syscall="newfstatat") -> Event:
        return self.syscall(proc, syscall, path, errno=errno)

    def access(self, proc, path, mode=os.R_OK, errno=None) -> Event:
        return self.syscall(proc, "access", path, flags=mode, errno=errno)

    def unlink(self, proc, path, errno=None) -> Event:
        return self.syscall(proc, "unlink", path, errno=errno)

    def mkdir(self, proc, path, mode=0o755, errno=None) -> Event:
        return self.syscall(proc, "mkdir", path, flags=mode, errno=errno)

    def rename(self, proc, old, new, errno=None) -> Event:
        return self.syscall(proc, "rename", old, new, errno=errno)

    def read(self, proc, fd, n=4096) -> Event:
        return self.syscall(proc, "read", result=n, fd=fd)

    def write(self, proc, fd, data: bytes) -> Event:
        """What the process wrote to stdout (1) or stderr (2): an "output" event."""
        data = data.encode() if isinstance(data, str) else bytes(data)
        return self.emit(proc, "output", "write", result=len(data),
                         args={"fd": fd, "data": data})

    # -- network -----------------------------------------------------------------

    def socket(self, proc, family="AF_INET", errno=None) -> Event:
        fd = None if errno else self._new_fd(proc)
        return self.syscall(proc, "socket", result=fd if fd is not None else 0,
                            errno=errno, family=family)

    def connect(self, proc, address, errno=None, fd=None) -> Event:
        return self._net(proc, "connect", address, errno, fd)

    def bind(self, proc, address, errno=None, fd=None) -> Event:
        return self._net(proc, "bind", address, errno, fd)

    def sendto(self, proc, address, errno=None, fd=None, dns=None) -> Event:
        return self._net(proc, "sendto", address, errno, fd, dns)

    def dns(self, proc, name, server="10.0.2.3:53", errno=None) -> Event:
        """A DNS query for `name` (a sendto to port 53 carrying the question)."""
        return self._net(proc, "sendto", server, errno, None, name)

    def _net(self, proc, call, address, errno, fd, dns=None) -> Event:
        args = {"address": address, "family": _family(address),
                "fd": fd if fd is not None else self._fds.get(proc, 3)}
        if dns is not None:
            args["dns"] = dns
        return self.emit(proc, "syscall", call, errno=errno, args=args)

    # -- results -----------------------------------------------------------------

    @property
    def processes(self) -> list:
        """The process table these events make (as a reader rebuilds it)."""
        tracker = ProcessTracker()
        for ev in self.events:
            tracker.see(ev)
        return list(tracker.procs.values())

    def save(self, path, header=None, summary=None, chunk_events=8192,
             processes=None, proc_block=4096):
        """Write the events to a real trace file through TraceWriter; returns `path`."""
        with TraceWriter(path, header if header is not None else dict(DEFAULT_HEADER),
                         chunk_events=chunk_events, proc_block=proc_block) as w:
            for ev in self.events:
                w.append(_copy(ev))
            w.close(summary if summary is not None else {"events": len(self.events)},
                    processes)
        return path

    # -- helpers -----------------------------------------------------------------

    def _pid(self, proc) -> int:
        if proc not in self._pids:
            self._pids[proc] = self._next_pid
            self._next_pid += 1
        return self._pids[proc]

    def _new_fd(self, proc) -> int:
        fd = self._fds[proc] = self._fds.get(proc, 2) + 1
        return fd

    def _abs(self, proc, path):
        if path is None or path.startswith("/"):
            return path
        return posixpath.normpath(posixpath.join(self._cwd.get(proc, "/build"), path))


def _copy(ev: Event) -> Event:
    # The writer must not see (or change) the builder's own objects.
    return Event(**ev.as_dict())
