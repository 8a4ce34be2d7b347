"""A stopped call -> its Event: the tracer's decoder (tracer.py drives the
stops, this reads what a call names).

At the entry stop of a call in the table (syscalls.py), `Decoder.entry` reads
its path (resolved against the process's cwd or dirfd, decoded once per raw
path), flags, exec vectors, socket address, written data..., as the table's
argument roles say; the result is filled in at the exit stop (set_result).
For a C loop record (fastpath.py) the path's bytes and the entry's time come
with the record, read while the process was stopped.
"""

import os
import signal
import sys
import time

from ptrace.signames import SIGNAMES

from nixrec.recorder.trace import decode, syscalls
from nixrec.recorder.sandbox import linux
from nixrec.recorder.tracefile.model import Event

OUTPUT_LIMIT = 1 << 16          # bytes of one write kept in the trace
ARG_MAX_WORD = 128 * 1024        # MAX_ARG_STRLEN: no argv or env word is longer

_intern = sys.intern


class Decoder:
    """One recording's decoder: the clock, the build log's device, and the
    paths already decoded."""

    def __init__(self, t0, output_rdev=None, builder_env=True):
        self.t0 = t0                        # time.monotonic() of the recording's start
        self.output_rdev = output_rdev      # st_rdev of the pty slave: the build log
        self.builder_env = builder_env      # record the builder's environment at its exec
        self.raw = None                     # the raw bytes of the last path read
        self._paths = {}                    # (base dir, raw path) -> decoded path

    def _read(self, pid):
        return lambda addr, size: linux.read_mem(pid, addr, size)

    def _path_arg(self, t, args, i, j, raw=False):
        """The path in argument i, resolved against dirfd argument j (or cwd);
        `raw`: its bytes, when the C loop read them already."""
        if raw is False:
            raw = linux.read_cstr(t.pid, args[i])
        self.raw = raw
        if raw is None:
            return None
        if raw[:1] == b"/":
            base = key = "/"
        else:
            base = t.cwd
            if j is not None:
                dirfd = s32(args[j])
                if dirfd != syscalls.AT_FDCWD:
                    base = self.fd_path(t, dirfd)
                    if not raw:
                        return base
            if not raw:
                return ""
            key = base
        # Builds probe the same paths over and over: each is decoded once.
        path = self._paths.get((key, raw))
        if path is None:
            if len(self._paths) >= 100_000:
                self._paths.clear()
            path = self._paths[key, raw] = decode.resolve(base, decode.fsdecode(raw))
        return path

    def fd_path(self, t, fd):
        try:
            return decode.fsdecode(os.readlink(f"/proc/{t.pid}/fd/{fd}").encode(
                "utf-8", "surrogateescape"))
        except OSError:
            return f"<fd {fd}>"

    def entry(self, t, sc, args, raw=False, at=None):
        """-> the Event for a call at its entry (result filled in at exit).
        From a C record: `raw` is the path's bytes and `at` the entry's
        time.monotonic(), both read at the stop.

        The hot path of the recorder: argument indices come precomputed from
        the table, and only what the call has is decoded.
        """
        ev = Event("exec" if sc.cls == syscalls.EXEC else "syscall", t.proc, t.nspid,
                   sc.name, time=int(((time.monotonic() if at is None else at) - self.t0)
                                     * 1_000_000))
        if sc.cls == syscalls.OUT:
            return self._output(t, sc, args, ev)
        if sc.i_path is not None:
            ev.path = self._path_arg(t, args, sc.i_path, sc.i_dirfd, raw)
        if sc.i_path2 is not None:
            ev.path2 = self._path_arg(t, args, sc.i_path2, sc.i_dirfd2)
        if sc.i_flags is not None:
            ev.flags = args[sc.i_flags] & 0xFFFFFFFF
        if sc.only_path and ev.path:
            return ev                 # nothing else to read: most calls end here
        i = sc.i_atflags
        if i is not None and not ev.path and args[i] & syscalls.AT_EMPTY_PATH:
            j = sc.i_dirfd
            ev.path = self.fd_path(t, s32(args[j])) if j is not None else None
        i = sc.i_fd
        if i is not None:
            ev.args["fd"] = s32(args[i])
            if sc.cls == syscalls.FILE and ev.path is None:
                ev.path = self.fd_path(t, s32(args[i]))
        if sc.i_target is not None:
            ev.args["target"] = decode.fsdecode(linux.read_cstr(t.pid, args[sc.i_target]) or b"")
        if sc.i_how is not None:
            raw = linux.read_mem(t.pid, args[sc.i_how], 8)
            if len(raw) == 8:
                ev.flags = int.from_bytes(raw, "little") & 0xFFFFFFFF
        if sc.cls == syscalls.EXEC:
            self._exec(t, sc, args, ev)
        elif sc.cls == syscalls.NET:
            self._net(t, sc, args, ev)
        elif sc.name == "wait4":
            ev.args["wstatus_addr"] = args[1]
        elif sc.i_fds is not None:
            ev.args["fds_addr"] = args[sc.i_fds]      # filled in by the call: at exit
        elif sc.i_pid is not None:
            ev.args["target_pid"] = s32(args[sc.i_pid])
            if sc.i_sig is not None:
                ev.args["signal"] = signame(args[sc.i_sig] & 0xFF) if args[sc.i_sig] else 0
        return ev

    def _exec(self, t, sc, args, ev):
        read = self._read(t.pid)
        ptrs = decode.read_ptr_array(read, args[sc.arg("argv")])
        # Whole words, up to the kernel's own MAX_ARG_STRLEN (128 KiB): a word cut
        # at a page end would differ from run to run (make's long recipes).
        # Interned: builds run the same words thousands of times (compiler
        # flags, include directories), and the process table keeps every argv.
        ev.args["argv"] = [_intern(decode.fsdecode(w or b""))
                           for w in linux.read_cstrs(t.pid, ptrs, ARG_MAX_WORD)]
        if ev.path:
            ev.path = _intern(ev.path)
        if self.builder_env and t.proc == "1" and not t.info.exe:
            envp = decode.read_ptr_array(read, args[sc.arg("envp")])
            ev.args["env"] = [decode.fsdecode(w or b"")
                              for w in linux.read_cstrs(t.pid, envp, 1 << 20)]

    def _net(self, t, sc, args, ev):
        read = self._read(t.pid)
        fd = s32(args[0])
        if sc.name == "socket":
            ev.args["family"] = decode.AF_NAMES.get(args[0], f"AF_{args[0]}")
            ev.args["type"] = decode.SOCK_NAMES.get(args[1] & 0xF, str(args[1] & 0xF))
            return
        ev.args["fd"] = fd
        payload = b""
        if sc.name in ("connect", "bind"):
            sa = linux.read_mem(t.pid, args[1], min(args[2], 128))
        elif sc.name == "sendto":
            sa = linux.read_mem(t.pid, args[4], min(args[5], 128)) if args[4] else b""
            payload = linux.read_mem(t.pid, args[1], min(args[2], 512))
        else:
            addr = args[1]              # sendmsg: a msghdr; sendmmsg: the first mmsghdr
            sa, iov = decode.msghdr(read, addr)
            if iov:
                payload = linux.read_mem(t.pid, iov[0][0], min(iov[0][1], 512))
        family, address = decode.sockaddr(sa) if sa else (None, None)
        if address is None:
            address = t.connected.get(fd)
        elif sc.name == "connect":
            t.connected[fd] = address
        if family:
            ev.args["family"] = family
        if address:
            ev.args["address"] = address
        if payload and decode.port_of(address) == 53:
            name = decode.dns_question(payload)
            if name:
                ev.args["dns"] = name

    def _output(self, t, sc, args, ev):
        fd = s32(args[0])
        if self.output_rdev is not None:
            try:
                if os.stat(f"/proc/{t.pid}/fd/{fd}").st_rdev != self.output_rdev:
                    return None        # fd 1/2 redirected to a file: not the log
            except OSError:
                return None
        ev.kind = "output"
        ev.args["fd"] = fd
        if sc.name == "write":
            data = linux.read_mem(t.pid, args[1], min(args[2], OUTPUT_LIMIT))
        else:
            parts = []
            for base, ln in decode.iovecs(self._read(t.pid), args[1], min(args[2], 64)):
                parts.append(linux.read_mem(t.pid, base, min(ln, OUTPUT_LIMIT)))
            data = b"".join(parts)[:OUTPUT_LIMIT]
        ev.args["data"] = data
        ev.result = len(data)
        return ev


# Signal names are python-ptrace's (ptrace.signames), but for SIGIO: it
# prefers the other name of 29, SIGPOLL, where Python's signal module, strace
# and every trace recorded so far say SIGIO. An unnamed one is SIG<n>.
_SIGNAMES = {**SIGNAMES, signal.SIGIO: "SIGIO"}


def signame(n: int) -> str:
    name = _SIGNAMES.get(n)
    return name if name is not None else f"SIG{n}"


def fd_pair(pid, ev, addr) -> None:
    """A pipe/socketpair's two fds, read at its exit stop, and what they are
    (`pipe:[ino]`, `socket:[ino]`: /proc's names, one inode for a pipe's two
    ends): ev.args fds, ends."""
    raw = linux.read_mem(pid, addr, 8) if addr else b""
    if len(raw) != 8:
        return
    fds = [int.from_bytes(raw[:4], "little", signed=True),
           int.from_bytes(raw[4:], "little", signed=True)]
    ends = []
    for fd in fds:
        try:
            ends.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            return
    ev.args["fds"], ev.args["ends"] = fds, ends


def set_result(ev, rval: int, failed) -> None:
    """A call's return value as the trace keeps it: -1 and the errno's name
    for a failure (rval is -errno then), else the value."""
    if failed:
        ev.result, ev.errno = -1, syscalls.errno_name(-rval)
    else:
        ev.result = rval


def s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
