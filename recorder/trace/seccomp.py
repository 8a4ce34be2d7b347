"""The seccomp-bpf program that makes the kernel stop the build only on the
calls nixrec records (syscalls.py), so every other call runs at full speed.

Built from the table as plain bytes; recorder/sandbox/linux.py installs it. Nix's own
rules (setuid chmod -> EPERM, setxattr -> ENOTSUP) are applied by the tracer at
the stop instead of by a second filter: a filter's ERRNO action outranks TRACE,
so the refused call would never reach the trace.
"""

import struct

from nixrec.recorder.trace import syscalls

# Classic BPF opcodes (linux/filter.h).
LD_W_ABS = 0x20
JEQ_K = 0x15
JSET_K = 0x45
RET_K = 0x06

RET_ALLOW = 0x7FFF0000
RET_TRACE = 0x7FF00000

OFF_NR, OFF_ARCH = 0, 4


def _arg_lo(i):
    # Low 32 bits of args[i] in struct seccomp_data (little-endian).
    return 16 + 8 * i


def build_filter(table=syscalls.BY_NR) -> bytes:
    """-> the program as bytes of struct sock_filter.

    Layout: check the arch, load nr, then one block per recorded call. Plain
    calls are a single JEQ to the shared TRACE return; calls filtered on an
    argument (output writes by fd, fstat-style stats) get a small block that
    ends in its own return. Jumps are forward and below 256 by construction.
    """
    prog = []          # (code, jt, jf, k) with jt/jf possibly symbolic ("TRACE")

    prog.append((LD_W_ABS, 0, 0, OFF_ARCH))
    prog.append((JEQ_K, 1, 0, syscalls.AUDIT_ARCH_X86_64))
    prog.append((RET_K, 0, 0, RET_ALLOW))          # another ABI: not recorded
    prog.append((LD_W_ABS, 0, 0, OFF_NR))

    for nr, sc in sorted(table.items()):
        block = _arg_block(sc)
        if block is None:
            prog.append((JEQ_K, "TRACE", 0, nr))
        else:
            prog.append((JEQ_K, 0, len(block), nr))
            prog.extend(block)
    prog.append((RET_K, 0, 0, RET_ALLOW))
    trace_at = len(prog)
    prog.append((RET_K, 0, 0, RET_TRACE))

    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        if jt == "TRACE":
            jt = trace_at - i - 1
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise ValueError("seccomp program too long for 8-bit jumps")
        out += struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)
    return bytes(out)


def _arg_block(sc):
    """A block that ends in a return, for calls decided on an argument; else None."""
    if sc.name in ("write", "writev"):
        # Only writes to the build log (fd 1, 2) stop; the accumulator is reloaded
        # because the block ends in returns, never falls through.
        return [
            (LD_W_ABS, 0, 0, _arg_lo(0)),
            (JEQ_K, 2, 0, syscalls.OUTPUT_FDS[0]),
            (JEQ_K, 1, 0, syscalls.OUTPUT_FDS[1]),
            (RET_K, 0, 0, RET_ALLOW),
            (RET_K, 0, 0, RET_TRACE),
        ]
    if sc.name in syscalls.EMPTY_PATH_SKIP:
        # fstat(fd) is newfstatat(fd, "", AT_EMPTY_PATH): no path, no stop.
        return [
            (LD_W_ABS, 0, 0, _arg_lo(syscalls.EMPTY_PATH_SKIP[sc.name])),
            (JSET_K, 0, 1, syscalls.AT_EMPTY_PATH),
            (RET_K, 0, 0, RET_ALLOW),
            (RET_K, 0, 0, RET_TRACE),
        ]
    return None
