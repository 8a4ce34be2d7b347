"""The Linux calls Python's os module lacks: namespaces, mounts, ptrace,
process_vm_readv, seccomp. ptrace requests, their constants and register
access go through python-ptrace (ptrace.binding); the rest, and the ptrace
requests and options python-ptrace does not name (PTRACE_SEIZE, _INTERRUPT,
_GET_SYSCALL_INFO, TRACESECCOMP, EXITKILL), are ctypes here.

Every wrapper raises OSError with the errno on failure, like the os module.
"""

import ctypes
import ctypes.util
import os
import signal
import struct

from ptrace import PtraceError
from ptrace.binding import func as _pt

from nixrec.recorder.trace import syscalls

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# --- namespaces and mounts (unshare(2), mount(2), pivot_root(2)) -------------
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 2

SYS_pivot_root = 155
SYS_seccomp = 317
SYS_process_vm_readv = 310


def _check(ret, what):
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source, target, fstype, flags=0, data=None) -> None:
    # Paths are bytes to the kernel: fsencode keeps surrogateescape'd bytes.
    enc = lambda s: os.fsencode(s) if isinstance(s, str) else s
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                       enc(data)), f"mount {target}")


SYS_mount_setattr = 442
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1


def mount_setattr(path: str, attr_set: int, recursive: bool = False) -> None:
    """mount_setattr(2) (Linux 5.12): e.g. make a whole mount tree read-only,
    which a remount can only do one mount at a time."""
    # struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd; }
    attr = ctypes.create_string_buffer(struct.pack("=QQQQ", attr_set, 0, 0, 0), 32)
    _check(_libc.syscall(ctypes.c_long(SYS_mount_setattr), ctypes.c_int(-100), os.fsencode(path),
                         ctypes.c_uint(AT_RECURSIVE if recursive else 0), attr,
                         ctypes.c_size_t(32)), f"mount_setattr {path}")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(ctypes.c_long(SYS_pivot_root), os.fsencode(new_root),
                         os.fsencode(put_old)),
           "pivot_root")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, ctypes.c_size_t(len(b))), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, ctypes.c_size_t(len(b))), "setdomainname")


# --- process attributes -------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
ADDR_NO_RANDOMIZE = 0x0040000
UNAME26 = 0x0020000            # uname(2) says 2.6.x (Nix's impersonate-linux-26)


def prctl(option: int, arg2: int = 0) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl")


def personality(persona: int) -> int:
    return _check(_libc.personality(ctypes.c_ulong(persona)), "personality")


# --- seccomp -------------------------------------------------------------------
SECCOMP_SET_MODE_FILTER = 1


def seccomp_install(prog: bytes) -> None:
    """Load a classic BPF program (bytes of struct sock_filter) as a seccomp filter."""
    n = len(prog) // 8
    buf = ctypes.create_string_buffer(prog, len(prog))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HxxxxxxQ", n, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    _check(_libc.syscall(ctypes.c_long(SYS_seccomp), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                         ctypes.c_uint(0), fbuf), "seccomp")


# --- ptrace (python-ptrace's binding) --------------------------------------------
PTRACE_TRACEME = _pt.PTRACE_TRACEME
PTRACE_CONT = _pt.PTRACE_CONT
PTRACE_KILL = _pt.PTRACE_KILL
PTRACE_GETREGS = _pt.PTRACE_GETREGS
PTRACE_SETREGS = _pt.PTRACE_SETREGS
PTRACE_SYSCALL = _pt.PTRACE_SYSCALL
PTRACE_SETOPTIONS = _pt.PTRACE_SETOPTIONS
PTRACE_GETEVENTMSG = _pt.PTRACE_GETEVENTMSG
PTRACE_GETSIGINFO = _pt.PTRACE_GETSIGINFO
# Requests python-ptrace does not name (Linux 3.4+ and 5.3+).
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

PTRACE_O_TRACESYSGOOD = _pt.PTRACE_O_TRACESYSGOOD
PTRACE_O_TRACEFORK = _pt.PTRACE_O_TRACEFORK
PTRACE_O_TRACEVFORK = _pt.PTRACE_O_TRACEVFORK
PTRACE_O_TRACECLONE = _pt.PTRACE_O_TRACECLONE
PTRACE_O_TRACEEXEC = _pt.PTRACE_O_TRACEEXEC
PTRACE_O_TRACEEXIT = _pt.PTRACE_O_TRACEEXIT
PTRACE_O_TRACESECCOMP = 1 << 7       # not in python-ptrace
PTRACE_O_EXITKILL = 1 << 20          # not in python-ptrace

PTRACE_EVENT_FORK = _pt.PTRACE_EVENT_FORK
PTRACE_EVENT_VFORK = _pt.PTRACE_EVENT_VFORK
PTRACE_EVENT_CLONE = _pt.PTRACE_EVENT_CLONE
PTRACE_EVENT_EXEC = _pt.PTRACE_EVENT_EXEC
PTRACE_EVENT_EXIT = _pt.PTRACE_EVENT_EXIT
PTRACE_EVENT_SECCOMP = 7             # not in python-ptrace
PTRACE_EVENT_STOP = 128              # not in python-ptrace

PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_EXIT = 2
PTRACE_SYSCALL_INFO_SECCOMP = 3

_ptrace = _pt.ptrace


def ptrace(req: int, pid: int, addr=0, data=0) -> int:
    """python-ptrace's ptrace(2), failing with OSError as the os module does
    (an ESRCH is a ProcessLookupError: the tracer's sign of a killed tracee).
    python-ptrace's call costs ~3.6 us more than a bare ctypes one on this
    VM; on the Python side of the C loop that is ~0.1 s of a GNU hello
    recording (docs/performance.md, issue 17)."""
    try:
        return _ptrace(req, pid, addr, data)
    except PtraceError as e:
        code = e.errno or 0
        raise OSError(code, f"ptrace({req:#x}, {pid}): {os.strerror(code)}") from None


def geteventmsg(pid: int) -> int:
    """The new child's pid at a fork, clone or vfork event stop."""
    try:
        return _pt.ptrace_geteventmsg(pid)
    except PtraceError as e:
        raise OSError(e.errno or 0, f"PTRACE_GETEVENTMSG {pid}: {os.strerror(e.errno or 0)}") \
            from None


# struct ptrace_syscall_info is 88 bytes on x86_64; parsed with struct for speed.
_INFO_SIZE = 88
_info = ctypes.create_string_buffer(_INFO_SIZE)
_info_p = ctypes.addressof(_info)
_INFO_HEAD = struct.Struct("=B3xIQQ")        # op, arch, ip, sp
_INFO_SC = struct.Struct("=Q6Q")             # nr, args[6] (entry and seccomp)
_INFO_EXIT = struct.Struct("=qB")            # rval, is_error


def get_syscall_info(pid: int):
    """-> (op, nr, args) for entry/seccomp stops, (op, rval, is_error) for exit stops."""
    ptrace(PTRACE_GET_SYSCALL_INFO, pid, _INFO_SIZE, _info_p)
    raw = _info.raw
    op = raw[0]
    if op == PTRACE_SYSCALL_INFO_EXIT:
        rval, is_err = _INFO_EXIT.unpack_from(raw, 24)
        return op, rval, is_err
    vals = _INFO_SC.unpack_from(raw, 24)
    return op, vals[0], vals[1:]


def _regs(pid):
    try:
        return _pt.ptrace_getregs(pid)
    except PtraceError as e:
        raise OSError(e.errno or 0, f"PTRACE_GETREGS {pid}: {os.strerror(e.errno or 0)}") \
            from None


def _set_regs(pid, regs):
    try:
        _pt.ptrace_setregs(pid, regs)
    except PtraceError as e:
        raise OSError(e.errno or 0, f"PTRACE_SETREGS {pid}: {os.strerror(e.errno or 0)}") \
            from None


def get_regs(pid: int):
    """A copy of the tracee's registers (at any ptrace stop): python-ptrace's
    user_regs_struct, a new one each call."""
    return _regs(pid)


def set_regs(pid: int, regs) -> None:
    _set_regs(pid, regs)


def copy_regs(regs):
    """Another user_regs_struct with the same values (to change one, keep both)."""
    return type(regs).from_buffer_copy(regs)


def skip_syscall(pid: int) -> None:
    """At a seccomp stop: make the kernel skip this call (nr = -1), with
    python-ptrace's user_regs_struct."""
    regs = _regs(pid)
    regs.orig_rax = 0xFFFFFFFFFFFFFFFF
    _set_regs(pid, regs)


def set_return(pid: int, value: int) -> None:
    """At a syscall-exit stop: overwrite the return value (e.g. -EPERM)."""
    regs = _regs(pid)
    regs.rax = value & 0xFFFFFFFFFFFFFFFF
    _set_regs(pid, regs)


# --- reading tracee memory (process_vm_readv(2)) ------------------------------------
class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_vm_readv = _libc.process_vm_readv
_vm_readv.restype = ctypes.c_ssize_t
_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                      ctypes.c_ulong, ctypes.c_ulong]
_RBUF_SIZE = 1 << 16
_rbuf = ctypes.create_string_buffer(_RBUF_SIZE)
_rbuf_addr = ctypes.addressof(_rbuf)
_string_at = ctypes.string_at
_local = _IOVec(_rbuf_addr, 0)
_remote = _IOVec(0, 0)
_local_p = ctypes.addressof(_local)
_remote_p = ctypes.addressof(_remote)


def read_mem(pid: int, addr: int, size: int) -> bytes:
    """Up to `size` bytes at addr in pid (fewer if the range ends in unmapped memory)."""
    size = min(size, _RBUF_SIZE)
    if addr == 0 or size <= 0:
        return b""
    _local.len = size
    _remote.base = addr
    _remote.len = size
    n = _vm_readv(pid, _local_p, 1, _remote_p, 1, 0)
    if n < 0:
        # The range may cross into an unmapped page: read up to the page end.
        first = 4096 - (addr & 4095)
        if first >= size:
            return b""
        _local.len = _remote.len = first
        n = _vm_readv(pid, _local_p, 1, _remote_p, 1, 0)
        if n < 0:
            return b""
    # string_at copies n bytes; _rbuf.raw would copy all 64 KiB at every stop.
    return _string_at(_rbuf_addr, n)


def read_cstr(pid: int, addr: int, limit: int = 4096) -> bytes:
    """A NUL-terminated string at addr, read a page at a time."""
    if addr == 0:
        return None
    # Most strings are paths well under 256 bytes: read that first, not the
    # rest of the page (a smaller copy), then page by page.
    first = min(256, 4096 - (addr & 4095), limit)
    chunk = read_mem(pid, addr, first)
    i = chunk.find(b"\0")
    if i >= 0:
        return chunk[:i]
    if len(chunk) < first:
        return chunk
    out = chunk
    while len(out) < limit:
        chunk_len = 4096 - ((addr + len(out)) & 4095)
        chunk = read_mem(pid, addr + len(out), chunk_len)
        if not chunk:
            break
        i = chunk.find(b"\0")
        if i >= 0:
            return out + chunk[:i]
        out += chunk
    return out


_IOV_MAX = 1024


def read_cstrs(pid: int, addrs, limit: int = 4096) -> list:
    """[read_cstr(pid, a, limit) for a in addrs], the same answers, with one
    process_vm_readv for the first bytes of up to 1,024 strings (an exec's
    argv: a compiler's is 30-60 words, each a call of its own before). A
    string not whole in its first read is read again by read_cstr."""
    out = []
    todo = list(addrs)
    while todo:
        group, firsts, total = [], [], 0
        for a in todo[:_IOV_MAX]:
            first = min(256, 4096 - (a & 4095), limit) if a else 0
            if total + first > _RBUF_SIZE:
                break
            group.append(a)
            firsts.append(first)
            total += first
        todo = todo[len(group):]
        local = (_IOVec * len(group))()
        remote = (_IOVec * len(group))()
        off = 0
        for i, (a, first) in enumerate(zip(group, firsts)):
            local[i].base, local[i].len = _rbuf_addr + off, first
            remote[i].base, remote[i].len = a, first
            off += first
        n = _vm_readv(pid, ctypes.addressof(local), len(group), ctypes.addressof(remote),
                      len(group), 0)
        got = _string_at(_rbuf_addr, max(n, 0))
        off = 0
        for a, first in zip(group, firsts):
            i = got.find(b"\0", off, off + first) if a and off + first <= len(got) else -1
            out.append(got[off:i] if i >= 0 else read_cstr(pid, a, limit))
            off += first
    return out


# --- looking a path up as a sandboxed process would (openat2(2)) --------------------
# Added for issue 6 (recorder/trace/predict.py): the tracer resolves a path from the
# build's root to know a lookup's answer before the call runs.
SYS_openat2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_how = _OpenHow()
_how_p = ctypes.addressof(_how)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


_setfsuid, _setfsgid = _libc.setfsuid, _libc.setfsgid


def set_fs_ids(uid: int, gid: int):
    """Check file access as (uid, gid) in this thread only (setfsuid(2)):
    -> the previous (uid, gid), to hand back. Leaving fsuid 0 drops the DAC
    override capabilities, so a lookup is checked as the build's would be."""
    old_gid = _setfsgid(gid)          # first, while fsuid 0 may still change it
    old_uid = _setfsuid(uid)
    return old_uid, old_gid


def restore_fs_ids(ids) -> None:
    _setfsuid(ids[0])
    _setfsgid(ids[1])


SYS_faccessat2 = 439
AT_EACCESS = 0x200


def access_fd(fd: int, mode: int) -> int:
    """access(2) of what fd is (an O_PATH fd will do), checked with this
    thread's file access ids (AT_EACCESS): -> 0 or -errno."""
    r = _syscall(ctypes.c_long(SYS_faccessat2), ctypes.c_long(fd), ctypes.c_char_p(b""),
                 ctypes.c_long(mode), ctypes.c_long(syscalls.AT_EMPTY_PATH | AT_EACCESS))
    return 0 if r == 0 else -ctypes.get_errno()


def openat2(dirfd: int, path: bytes, flags: int, resolve: int) -> int:
    """-> a new fd, or -errno: a failed lookup is an answer here, not an error."""
    _how.flags, _how.mode, _how.resolve = flags, 0, resolve
    fd = _syscall(ctypes.c_long(SYS_openat2), ctypes.c_long(dirfd), ctypes.c_char_p(path),
                  ctypes.c_void_p(_how_p), ctypes.c_size_t(24))
    return fd if fd >= 0 else -ctypes.get_errno()


# --- joining namespaces (setns(2)) -----------------------------------------------------
# Added for replay (replayer/attach.py): a shell joins the namespaces of a
# stopped build. Python's os.setns exists only from 3.12.

def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace `fd` (an open /proc/PID/ns/* file) refers to."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


# --- waking CPUs fast (PM QoS, the kernel's Documentation/power/pm_qos_interface.rst) -----
# A traced call is a round trip: the build stops, the tracer wakes, reads the
# call and resumes the build, whose CPU must wake too. A CPU in an idle state
# takes longer to leave it than the tracer takes to handle the stop (on a VM,
# waking a halted vCPU is an exit to the host): measured on GNU hello,
# PTRACE_CONT alone cost 8.9 us a stop on average. A CPU latency request of
# 0 us keeps idle CPUs in their polling state, where a wake-up is a flag.
CPU_LATENCY = "/dev/cpu_dma_latency"


def hold_cpu_latency(us: int = 0):
    """Ask that no CPU take more than `us` microseconds to leave its idle
    state, for as long as the returned fd is open (the kernel drops the
    request when it is closed, also when this process dies). -> the fd, or
    None where that is not allowed (only root may) or not there."""
    try:
        fd = os.open(CPU_LATENCY, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.write(fd, struct.pack("=i", us))
    except OSError:
        os.close(fd)
        return None
    return fd


# --- signal dispositions a child must not inherit from Python -----------------------
# Python ignores SIGPIPE and SIGXFSZ at start, and an ignored signal survives
# exec: a builder or a command started from nixrec would run with them
# ignored (`producer | head` then sees EPIPE and goes on, where it dies).
PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


def default_signals(sigs=PYTHON_IGNORED) -> None:
    """Put `sigs` back to their default disposition (in a child, before exec)."""
    for sig in sigs:
        signal.signal(sig, signal.SIG_DFL)
