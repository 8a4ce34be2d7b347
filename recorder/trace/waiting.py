"""Waiting for the tracer's next stop, and a new process's ids: the poll
then block of the Python loop (the C loop does the same in fastpath.c,
poll_for), and the /proc read each fork costs.
"""

import os
import time

WALL = 0x40000000          # __WALL: wait for clone children (threads) too

# How long the tracer polls for the next stop before it blocks in waitpid.
# A blocked tracer is woken by the kernel when a tracee stops; on a VM whose
# vCPU went idle meanwhile that wake-up is the larger part of a stop's cost.
# Polling keeps the tracer awake across the short gaps between stops of a busy
# build (GNU hello, 2 vCPUs: 38 s -> 27-29 s with 30 us to 1 ms; 300 us was
# best; 5 ms took from the build's CPU: docs/performance.md). On one CPU the
# tracee cannot run while the tracer polls, so there it blocks at once.
SPIN_SECONDS = 300e-6 if len(os.sched_getaffinity(0)) > 1 else 0.0
_clock = time.perf_counter


_NOTHING_YET = False


def _poll():
    """-> (pid, status) if a tracee or child has reported; None when none is
    left; _NOTHING_YET while some are left and none has reported."""
    while True:
        try:
            pid, status = os.waitpid(-1, WALL | os.WNOHANG)
        except ChildProcessError:
            return None
        except InterruptedError:
            continue
        return (pid, status) if pid else _NOTHING_YET


def wait_any():
    """-> (pid, status) of the next tracee or child to report; None when none is left."""
    if SPIN_SECONDS:
        deadline = _clock() + SPIN_SECONDS
        while True:
            got = _poll()
            if got is not _NOTHING_YET:
                return got
            if _clock() > deadline:
                break
    while True:
        try:
            return os.waitpid(-1, WALL)
        except ChildProcessError:
            return None
        except InterruptedError:
            continue


def wait_any_but_vfork(pids, poll=0.001):
    """wait_any() while one of `pids` may still report; None once each of
    them is blocked in a vfork (posix_spawn: make, for each job) waiting for
    a child that is itself stopped. Such a parent cannot stop before its
    child runs on: it is as still as a stop, and a replay freezing the build
    waited for it for ever (GNU hello's `make -j2`, docs/replay.md). Its
    interrupt stop comes later, and is resumed as any other."""
    while True:
        got = _poll()
        if got is not _NOTHING_YET:
            return got
        if all(in_vfork(p) for p in pids):
            return None
        time.sleep(poll)


def in_vfork(pid: int) -> bool:
    """Is `pid` blocked in the kernel waiting for its vfork child (state D in
    kernel_clone; older kernels name the wait itself)?"""
    try:
        with open(f"/proc/{pid}/wchan", "rb") as f:
            wchan = f.read().strip()
    except OSError:
        return False
    return wchan in (b"kernel_clone", b"wait_for_vfork_done", b"_do_fork", b"do_fork")


def status_ids(pid: int):
    """-> (the pid inside its PID namespace (last NSpid field), its Tgid), read
    from one /proc/PID/status: once per fork, so one read, not one per field,
    and raw bytes (a text-mode file cost 50 us a fork, most of it decoding)."""
    nspid, tgid = pid, None
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        i = data.find(b"\nTgid:")
        if i >= 0:
            tgid = int(data[i + 6:data.index(b"\n", i + 1)])
        i = data.find(b"\nNSpid:")
        if i >= 0:
            nspid = int(data[i + 7:data.index(b"\n", i + 1)].split()[-1])
    except (OSError, ValueError):
        pass
    return nspid, tgid

