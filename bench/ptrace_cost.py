"""What one Python-side ptrace request costs: python-ptrace's binding (what
recorder/sandbox/linux.py uses, issue 17) against a bare ctypes call of
libc's ptrace (what it used before). A benchmark, not a test.

    .venv/bin/python bench/ptrace_cost.py

A child stops itself under PTRACE_TRACEME; each round makes 100,000
PTRACE_GET_SYSCALL_INFO requests on it (the request every Python-side stop
makes), alternating the two bindings; prints the medians of 5 rounds.
"""

import ctypes
import ctypes.util
import os
import signal
import time

from ptrace.binding import func as pt

GET_SYSCALL_INFO, N, ROUNDS = 0x420E, 100_000, 5


def main():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    bare = libc.ptrace
    bare.restype = ctypes.c_long
    bare.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    pid = os.fork()
    if pid == 0:
        bare(0, 0, None, None)                      # PTRACE_TRACEME
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    os.waitpid(pid, 0)
    buf = ctypes.create_string_buffer(88)
    addr = ctypes.addressof(buf)

    def with_ctypes():
        for _ in range(N):
            if bare(GET_SYSCALL_INFO, pid, 88, addr) == -1:
                raise OSError(ctypes.get_errno(), "ptrace")

    def with_python_ptrace():
        call = pt.ptrace
        for _ in range(N):
            call(GET_SYSCALL_INFO, pid, 88, addr)

    times = {"ctypes": [], "python-ptrace": []}
    try:
        for _ in range(ROUNDS):
            for name, f in (("ctypes", with_ctypes), ("python-ptrace", with_python_ptrace)):
                t = time.perf_counter()
                f()
                times[name].append((time.perf_counter() - t) / N * 1e6)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    for name, v in times.items():
        v.sort()
        print(f"{name:14} {v[len(v) // 2]:6.2f} us per request (median of {ROUNDS} x {N:,}; "
              f"{v[0]:.2f}-{v[-1]:.2f})")


if __name__ == "__main__":
    main()
