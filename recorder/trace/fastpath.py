"""The tracer's hot path in C (issue 6): loading it, teaching it, its records.

recorder/trace/fastpath.c handles nearly all of a build's stops without Python (a
call naming one path and its exit, wait4, a redirected write to fd 1/2, forks,
execs, signals, exits) and writes a record for each; tracer.py turns the
records into events in stop order and handles every other stop itself, as
before. What a record holds and what the C side decides are said in
fastpath.c. Python owns all the knowledge (the syscall table, predict.py's
answers, the events); the C side is given it here.

The library is built by scripts/setup.sh (`make setup`) with gcc into
recorder/_fastpath.so. Without it, or with NIXREC_FASTPATH=0 in the
environment, the tracer runs its Python loop: the same events, slower
(docs/performance.md).
"""

import ctypes
import errno
import os
import struct

from nixrec.recorder.trace import predict, syscalls

LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fastpath.so")
ABI = 3                        # fastpath.c's fp_abi(): a library of another version is not used

# fp_run's answers (fastpath.c).
STOP, IDLE, HELD, NOCHILD, INTR, DONE = 1, 2, 3, 4, 5, 6
# Records of process events (not calls): their nr.
NR_FORK, NR_EXIT, NR_SIGNAL, NR_EXEC_DONE = 1001, 1002, 1003, 1004
# Record flags.
F_RESULT, F_ERR, F_STATUS, F_HELD, F_PREDICTED = 1, 2, 4, 8, 16
# struct rec: size, pid, nr, flags, rawlen, t_ns, args[6], rval, status.
REC = struct.Struct("<IiHBxIq6QqI4x")
_K_SIMPLE, _K_WAIT4, _K_OUT = 1, 2, 3
# A call whose event is its arguments and result (dup, dup2, dup3): any other
# kind number takes fastpath.c's generic way, entry and exit recorded as they are.
_K_ARGS = 4
_WHERE = {"oflags": 1, "atflags": 2, "always": 3, None: 4}
_ASK = {"stat": 8, "open": 9, "read": 10, "readdir": 11}
_BUFFER = 1 << 20              # the records between two returns to Python
# With records waiting, no stop for this long returns to Python (IDLE) to make
# them events. GNU hello, alternated: 0, 50 and 500 us within the noise
# (20.4-21.7 s); 50 us keeps the loop from returning between two close stops.
IDLE_SECONDS = 50e-6
# With records waiting this long, the loop returns whatever comes (a busy
# build stops again within IDLE_SECONDS for seconds on end): records in C
# memory are lost with a SIGKILLed recorder, and the trace file's writer
# bounds that loss at ~0.1 s with this (tracefile/writer.PIECE_AGE).
FLUSH_SECONDS = 10e-3
# Calls with one path that change what the tracer knows of the process (its
# cwd, its root) or are refused by the sandbox's rules: Python's, always.
_PYTHON_ONLY = frozenset(("chdir", "chroot", "mount", "pivot_root")) \
    | frozenset(syscalls.SETUID_CHMOD) | frozenset(syscalls.XATTR_SET) \
    | frozenset(syscalls.XATTR_READ)

_lib = None


def _load():
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(LIBRARY)
            if lib.fp_abi() != ABI:
                raise OSError("another version")
        except (OSError, AttributeError):     # not built, not loadable, not this version
            _lib = False
            return None
        vp, i, i64, u64, sz = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
                               ctypes.c_uint64, ctypes.c_size_t)
        lib.fp_new.restype = vp
        lib.fp_new.argtypes = [vp, sz]
        lib.fp_free.argtypes = [vp]
        lib.fp_set_call.argtypes = [vp] + [i] * 9
        lib.fp_set_options.argtypes = [vp, i, i, u64, i64, i64]
        lib.fp_set_slow.argtypes = [vp, i, i]
        lib.fp_set_lockstep.argtypes = lib.fp_set_predict.argtypes = [vp, i]
        lib.fp_set_flush.argtypes = [vp, i64]
        lib.fp_watch.argtypes = [vp, ctypes.POINTER(i), i]
        lib.fp_stops.argtypes = [vp]
        lib.fp_stops.restype = ctypes.c_long
        lib.fp_learn.argtypes = [vp, ctypes.c_char_p, ctypes.c_uint32, i, i, i, i64]
        lib.fp_run.argtypes = [vp, ctypes.POINTER(i), ctypes.POINTER(i)]
        lib.fp_handle.argtypes = [vp, i, i]
        lib.fp_used.argtypes = lib.fp_clear.argtypes = [vp]
        lib.fp_used.restype = sz
        lib.fp_add.argtypes = lib.fp_exited.argtypes = [vp, i]
        lib.fp_set_notable.argtypes = [vp, u64]
        lib.fp_set_open_read.argtypes = [vp, u64, u64, u64]
        _lib = lib
    return _lib or None


def built() -> bool:
    """Is the C loop built here (a library of this version)?"""
    return _load() is not None


def available() -> bool:
    """Is the C loop built here and not turned off (NIXREC_FASTPATH=0)?"""
    return os.environ.get("NIXREC_FASTPATH", "1") != "0" and built()


def kind_of(sc):
    """-> the C kind of a table row, or 0 for a call only Python handles."""
    if sc.cls == syscalls.OUT:
        return _K_OUT
    if sc.name == "wait4":
        return _K_WAIT4
    if sc.only_path and sc.name not in _PYTHON_ONLY:
        return _K_SIMPLE
    if sc.cls == syscalls.FD and sc.i_fds is None:
        return _K_ARGS
    return 0


class FastPath:
    """One build's C loop: its table and the answers it was taught.

    The C loop runs on the tracer's thread (ptrace answers only the thread
    that attached) without the GIL. It returns to Python with its records for
    a stop that is Python's, and also whenever records wait and no tracee is
    stopped (IDLE): the tracer makes them into events then, in the time the
    loop would otherwise spend polling for the next stop (fastpath.c, run).
    """

    def __init__(self, table, predict, output_rdev, spin_seconds, notable_signals,
                 idle_seconds=IDLE_SECONDS):
        lib = self.lib = _load()
        self._buf = ctypes.create_string_buffer(_BUFFER)
        self._view = memoryview(self._buf).cast("B")
        self.ctx = lib.fp_new(ctypes.addressof(self._buf), _BUFFER)
        if not self.ctx:
            raise MemoryError("fastpath")
        for nr, sc in table.items():
            kind = kind_of(sc)
            if not kind:
                continue
            where, li = syscalls.LOOKUPS.get(sc.name, (0, None))
            lib.fp_set_call(self.ctx, nr, kind,
                            sc.i_path if sc.i_path is not None else 0,
                            sc.i_dirfd if sc.i_dirfd is not None else -1,
                            int(sc.needs_exit),
                            _WHERE[where] if sc.name in syscalls.LOOKUPS else 0,
                            li if li is not None else -1,
                            syscalls.LOOKUP_ACCESS.get(sc.name, -1),
                            int(sc.name in syscalls.LOOKUP_ZERO))
        lib.fp_set_options(self.ctx, int(predict), int(output_rdev is not None),
                           output_rdev or 0, int(spin_seconds * 1e9), int(idle_seconds * 1e9))
        lib.fp_set_flush(self.ctx, int(FLUSH_SECONDS * 1e9))
        lib.fp_set_notable(self.ctx, sum(1 << int(s) for s in notable_signals))
        lib.fp_set_open_read(self.ctx, syscalls.OPEN_READ_BITS, syscalls.O_DIRECTORY,
                             syscalls.O_ACCMODE)
        self._pid = ctypes.c_int(0)
        self._status = ctypes.c_int(0)

    def run(self):
        """-> (code, pid, status): the C loop ran until a stop is Python's
        (STOP), a HELD record, records and nothing else to do (IDLE), the
        last tracee's exit (DONE), NOCHILD or INTR. Then take() the records."""
        code = self.lib.fp_run(self.ctx, ctypes.byref(self._pid), ctypes.byref(self._status))
        if code < 0:
            raise OSError(-code, f"tracer: waitpid: {os.strerror(-code)}")
        return code, self._pid.value, self._status.value

    def handle(self, pid, status):
        """One stop Python waited for itself (thawing a replay): the C loop's
        if it is the exit of a call it started. -> STOP (Python's) or not."""
        return self.lib.fp_handle(self.ctx, pid, status)

    def take(self):
        """-> the records since the last take(), in stop order: (pid, nr,
        flags, raw, t_ns, args, rval, status). Read them all before the next
        run() or handle()."""
        end = self.lib.fp_used(self.ctx)
        if not end:
            return ()
        self.lib.fp_clear(self.ctx)
        return _records(self._view, end)

    def learn(self, question, answer):
        """Teach the C loop predict.py's answer to a question (None: let the
        call run to its exit stop; predict.OPENS: the call's result is the
        lowest fd its process has free)."""
        raw, follow, asked = question
        asked = _ASK.get(asked, asked)
        if answer is None:
            self.lib.fp_learn(self.ctx, raw, len(raw), int(follow), asked, 1, 0)
        elif answer is predict.OPENS:
            self.lib.fp_learn(self.ctx, raw, len(raw), int(follow), asked, 3, 0)
        else:
            result, name = answer
            rval = -getattr(errno, name) if name else result
            self.lib.fp_learn(self.ctx, raw, len(raw), int(follow), asked, 2, rval)

    def add(self, pid):
        """The builder: the first tracee (the C loop learns the rest from forks)."""
        self.lib.fp_add(self.ctx, pid)

    def exited(self, pid):
        """A tracee whose exit the tracer saw itself (a freeze, a drain)."""
        self.lib.fp_exited(self.ctx, pid)

    def slow(self, everything=False, nr=-1):
        """Replay: hand Python every stop (everything), or every stop of call nr."""
        self.lib.fp_set_slow(self.ctx, int(everything), nr)

    def predict(self, on):
        """Answer lookups from what predict.py taught (off: never ask)."""
        self.lib.fp_set_predict(self.ctx, int(on))

    def lockstep(self, on=True):
        """Replay: every record is an event before the loop handles the next
        stop, so a divergence found in one stops the build at the next call."""
        self.lib.fp_set_lockstep(self.ctx, int(on))

    def watch(self, pids):
        """Replay: hand Python every stop of these pids."""
        arr = (ctypes.c_int * max(1, len(pids)))(*pids)
        self.lib.fp_watch(self.ctx, arr, len(pids))

    @property
    def stops(self) -> int:
        return self.lib.fp_stops(self.ctx)

    def close(self):
        if self.ctx:
            self.lib.fp_free(self.ctx)
            self.ctx = None


def _records(view, end):
    """-> the records in view[:end]: (pid, nr, flags, raw, t_ns, args, rval,
    status), in stop order."""
    off, unpack, size0 = 0, REC.unpack_from, REC.size
    while off < end:
        (size, pid, nr, flags, rawlen, t_ns, a0, a1, a2, a3, a4, a5, rval,
         status) = unpack(view, off)
        raw = view[off + size0:off + size0 + rawlen].tobytes()
        yield pid, nr, flags, raw, t_ns, (a0, a1, a2, a3, a4, a5), rval, status
        off += size
