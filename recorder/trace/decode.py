"""Decoders for what a stopped process passed to a call: paths, exec vectors,
socket addresses, DNS questions. Pure functions of bytes, plus the few that
read the tracee's memory through a `read(addr, size)` callable.
"""

import os
import socket
import struct

AF_NAMES = {socket.AF_UNIX: "AF_UNIX", socket.AF_INET: "AF_INET",
            socket.AF_INET6: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}
SOCK_NAMES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET"}


def fsdecode(b: bytes) -> str:
    # Paths are bytes on Linux; surrogateescape keeps every byte and round-trips.
    return b.decode("utf-8", "surrogateescape")


def resolve(base: str, path: str) -> str:
    """An absolute, normalised path for `path` as seen from directory `base`.

    Lexical only, like the kernel's view before symlinks: `..` is folded the
    way a user reads the command line, which is what the trace reports.
    """
    if not path.startswith("/"):
        path = (base or "/") + "/" + path
    p = os.path.normpath(path)
    return "/" + p.lstrip("/") if p.startswith("//") else p


def sockaddr(raw: bytes):
    """-> (family name, address string) for a struct sockaddr, or (None, None)."""
    if len(raw) < 2:
        return None, None
    fam = struct.unpack_from("=H", raw)[0]
    name = AF_NAMES.get(fam, f"AF_{fam}")
    if fam == socket.AF_INET and len(raw) >= 8:
        port = struct.unpack_from("!H", raw, 2)[0]
        return name, f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{port}"
    if fam == socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from("!H", raw, 2)[0]
        return name, f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{port}"
    if fam == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return name, "@" + fsdecode(path[1:].rstrip(b"\0"))
        return name, fsdecode(path.split(b"\0", 1)[0])
    return name, None


def port_of(address: str):
    if not address or ":" not in address or address.startswith("/"):
        return None
    try:
        return int(address.rsplit(":", 1)[1])
    except ValueError:
        return None


def dns_question(payload: bytes):
    """The name asked in a DNS query (RFC 1035 §4.1), or None if it is not one."""
    if len(payload) < 17:
        return None
    flags, qd = struct.unpack_from("!HH", payload, 2)
    if flags & 0x8000 or qd < 1:       # a response, or no question
        return None
    labels, i = [], 12
    while i < len(payload):
        n = payload[i]
        if n == 0:
            return ".".join(labels) if labels else None
        if n > 63 or i + 1 + n > len(payload):
            return None
        labels.append(payload[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return None


def read_ptr_array(read, addr: int, limit: int = 4096) -> list:
    """A NULL-terminated array of pointers (argv, envp)."""
    out = []
    while addr and len(out) < limit:
        raw = read(addr, 8 * 64)
        if len(raw) < 8:
            break
        for (p,) in struct.iter_unpack("=Q", raw[: len(raw) // 8 * 8]):
            if p == 0:
                return out
            out.append(p)
        addr += len(raw) // 8 * 8
    return out


MSGHDR = struct.Struct("=QI4xQQQQi4x")     # name, namelen, iov, iovlen, control, controllen, flags
IOVEC = struct.Struct("=QQ")


def msghdr(read, addr: int):
    """-> (sockaddr bytes, [(iov_base, iov_len)...]) of a struct msghdr."""
    raw = read(addr, MSGHDR.size)
    if len(raw) < MSGHDR.size:
        return b"", []
    name, namelen, iov, iovlen, _c, _cl, _f = MSGHDR.unpack(raw)
    sa = read(name, min(namelen, 128)) if name and namelen else b""
    return sa, iovecs(read, iov, min(iovlen, 64))


def iovecs(read, addr: int, count: int) -> list:
    raw = read(addr, IOVEC.size * count)
    return [IOVEC.unpack_from(raw, i * IOVEC.size) for i in range(len(raw) // IOVEC.size)]


def interpreter(path: str):
    """The program a kernel exec of `path` also needs: the ELF PT_INTERP
    (64-bit little-endian) or the first word of a #! line; None if neither."""
    with open(path, "rb") as f:
        head = f.read(4096)
        if head.startswith(b"#!"):
            line = head[2:].split(b"\n", 1)[0].strip()
            return fsdecode(line.split()[0]) if line else None
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return None
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            ptype, = struct.unpack_from("<I", table, i * phentsize)
            if ptype == 3:                       # PT_INTERP
                off, = struct.unpack_from("<Q", table, i * phentsize + 8)
                size, = struct.unpack_from("<Q", table, i * phentsize + 32)
                f.seek(off)
                return fsdecode(f.read(size).rstrip(b"\0"))
    return None


def resolve_in_root(root: str, path: str, limit: int = 40):
    """Follow `path` inside the directory tree `root` (a process's /proc/PID/root)
    the way that process's kernel would: absolute symlinks restart at `root`,
    not at the host's /. -> (host path or None if missing, (link, target) of the
    last symlink that led nowhere, or None)."""
    parts = [p for p in path.split("/") if p]
    cur, last_link = "", None
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            cur = cur.rsplit("/", 1)[0]
            continue
        nxt = cur + "/" + name
        full = root + nxt
        if os.path.islink(full):
            limit -= 1
            if limit < 0:
                return None, last_link
            target = os.readlink(full)
            last_link = (nxt, target)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                cur = ""
            continue
        if not os.path.lexists(full):
            return None, last_link
        cur = nxt
    return root + (cur or "/"), None
