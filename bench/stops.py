"""Where the recorder's time goes, stop by stop (docs/performance.md).

    NIX_REMOTE= .venv/bin/python bench/stops.py [--cprofile FILE] [-- record args...]

Runs `nixrec record` (default: the hello benchmark build) in this process with
light wrappers around the tracer's seams, and prints:

* stops by kind: seccomp stop per syscall (and how many made no event),
  syscall-exit stop per syscall, fork/exec/ptrace-event stops, signal stops;
* the tracer's time split: waiting in waitpid (the build runs, or the kernel
  delivers the stop) vs handling a stop in Python, and inside the handling:
  ptrace calls, PTRACE_GET_SYSCALL_INFO, process_vm_readv reads, /proc reads,
  encoding an event (TraceWriter.append) and writing chunks (lz4 + write).

The wrappers cost about 1 us per wrapped call, so the instrumented run is
slower than a plain one; the shares are what matter. --cprofile FILE runs under
cProfile instead (no wrappers) and prints the top functions by own time.

What-ifs, for the expected gain of an optimisation before writing it (with
--plain: no wrappers, just the wall time; alternate them with plain runs):
  --drop write,wait4               the filter lets these calls run unstopped
  --no-exit openat,newfstatat,...  no exit stop (the trace's results are then wrong)
  --pin-tracer 1                   the tracer thread on one CPU, the build on all
  --nice N                         the tracer thread at nice N, the build at 0
  --idle US                        records go to Python after this long without a stop
  --spin US                        poll this long for the next stop (0: block at once)
  --no-predict                     no lookup answered at entry (predict.py off)
  --python                         the tracer's Python loop instead of its C loop
                                   (recorder/trace/fastpath.c; instrumented runs always are)
  --floor                          the same entry stops with the least Python per stop
  --floor-c                        the same entry stops handled in C (bench/floor.c, gcc)
  --floor-c-read                   ... also reading each path and exit result in C
  (the floors resume every lookup at its entry: a successful open keeps no exit
  stop there, where nixrec needs its fd, about 40k fewer stops on GNU hello)
(readlink is off by default now: `-- record ... --readlink` puts it back.)
Not a test: it prints, it asserts nothing.
"""

import argparse
import collections
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = ["record", os.path.join(ROOT, "fixtures/hello.nix"), "-A", "hello",
           "--extra-sandbox-paths", "/usr /bin /lib /lib64", "-o", "/tmp/nixrec-profile.nixrec",
           "-q"]

clock = time.perf_counter
cpu = time.thread_time        # CPU time of the calling thread (the tracer loop)


class Acc:
    """Calls and seconds per bucket."""

    def __init__(self):
        self.n = collections.Counter()
        self.s = collections.Counter()

    def add(self, key, dt, n=1):
        self.n[key] += n
        self.s[key] += dt


def instrument():
    """Wrap the tracer's seams; -> (stops Acc, seams Acc, wait Acc)."""
    from nixrec.recorder.trace import calls as C, tracer as T
    from nixrec.recorder.sandbox import linux
    from nixrec.recorder.tracefile import writer as W
    from nixrec.recorder.trace import syscalls

    stops, seams, waits, cpus = Acc(), Acc(), Acc(), Acc()

    def timed(mod, name, key=None):
        raw = mod.__dict__[name]
        fn = getattr(mod, name)
        key = key or name

        def wrapper(*a, **kw):
            t = clock()
            try:
                return fn(*a, **kw)
            finally:
                seams.add(key, clock() - t)
        setattr(mod, name, staticmethod(wrapper) if isinstance(raw, staticmethod) else wrapper)

    for name in ("get_syscall_info", "geteventmsg", "read_mem", "read_cstr",
                 "skip_syscall", "set_return"):
        timed(linux, name)
    names = {v: k[len("PTRACE_"):] for k, v in vars(linux).items()
             if k.startswith("PTRACE_") and not k.startswith(("PTRACE_O_", "PTRACE_EVENT_",
                                                              "PTRACE_SYSCALL_INFO_"))}
    real_ptrace = linux.ptrace

    def ptrace(req, *a):
        t, c = clock(), cpu()
        try:
            return real_ptrace(req, *a)
        finally:
            key = "ptrace " + names.get(req, hex(req))
            seams.add(key, clock() - t)
            cpus.add(key, cpu() - c)
    linux.ptrace = ptrace
    from nixrec.recorder.trace import waiting
    timed(waiting, "status_ids", "/proc/PID/status (nspid, tgid)")
    timed(C.Decoder, "fd_path", "/proc/PID/fd readlink")
    timed(T.Tracer, "_cwd", "/proc/PID/cwd readlink")
    from nixrec.recorder.trace import predict
    timed(predict.Predictor, "_resolve", "predict: openat2 as the build user")
    if hasattr(T.Tracer, "_explain_enoent"):
        timed(T.Tracer, "_explain_enoent", "_explain_enoent (lstat per ENOENT)")
    timed(C.Decoder, "_output", "Decoder._output (stat /proc/PID/fd)")
    timed(W.TraceWriter, "append", "TraceWriter.append (encode)")
    timed(W.TraceWriter, "flush", "TraceWriter.flush (lz4+write)")

    real_waitpid = os.waitpid

    def waitpid(pid, opts):
        t, c = clock(), cpu()
        try:
            return real_waitpid(pid, opts)
        finally:
            waits.add("waitpid", clock() - t)
            cpus.add("waitpid", cpu() - c)
    T.os.waitpid = waitpid        # the tracer's os is the os module: all callers see it

    real_dispatch = T.Tracer._dispatch
    raw_info = _raw_info(linux)

    def kind_of(self, pid, status):
        t = self.tracees.get(pid)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return "exit (not a stop)"
        if t is None:
            return "unborn (held)"
        sig, ev = os.WSTOPSIG(status), status >> 16
        if ev == linux.PTRACE_EVENT_SECCOMP:
            try:
                nr = raw_info(pid)
            except Exception:
                nr = -1
            sc = syscalls.BY_NR.get(nr)
            return "seccomp " + (sc.name if sc else str(nr))
        if sig == (signal.SIGTRAP | 0x80):
            p = t.pending
            return "syscall-exit " + (p[0].name if p else "?")
        if ev in (linux.PTRACE_EVENT_FORK, linux.PTRACE_EVENT_VFORK, linux.PTRACE_EVENT_CLONE):
            return "fork event"
        if ev == linux.PTRACE_EVENT_EXEC:
            return "exec event"
        if ev == linux.PTRACE_EVENT_STOP:
            return "ptrace event-stop (new child)"
        if ev:
            return f"ptrace event {ev}"
        return "signal " + T.signame(sig)

    emitted = [0]

    def dispatch(self, pid, status):
        k = kind_of(self, pid, status)
        before = emitted[0]
        t = clock()
        try:
            return real_dispatch(self, pid, status)
        finally:
            dt = clock() - t
            stops.add(k, dt)
            if k.startswith("seccomp") and emitted[0] == before and \
                    self.tracees.get(pid) is not None and self.tracees[pid].pending is None:
                stops.add("  (no event) " + k, 0.0)
    T.Tracer._dispatch = dispatch

    real_init = T.Tracer.__init__

    def init(self, emit, *a, **kw):
        def counting_emit(ev):
            emitted[0] += 1
            return emit(ev)
        real_init(self, counting_emit, *a, **kw)
    T.Tracer.__init__ = init
    return stops, seams, waits, cpus


def _raw_info(linux):
    """The syscall nr at a seccomp stop, through the raw libc call: naming the
    stop's kind must not count as a seam call (it costs one extra ptrace)."""
    def nr(pid):
        linux._ptrace(linux.PTRACE_GET_SYSCALL_INFO, pid, linux._INFO_SIZE, linux._info_p)
        return linux._INFO_SC.unpack_from(linux._info.raw, 24)[0]
    return nr


def drop_calls(names):
    """Remove rows from the live syscall table (the filter's default argument is
    that same dict), as if the calls were never recorded. A what-if, not a mode."""
    from nixrec.recorder.trace import syscalls
    for name in names:
        sc = syscalls.BY_NAME.pop(name.strip(), None)
        if sc is not None:
            syscalls.BY_NR.pop(sc.nr, None)


def entry_only(names):
    from nixrec.recorder.trace import syscalls
    for name in names:
        sc = syscalls.BY_NAME.get(name.strip())
        if sc is not None:
            sc.needs_exit = False


def pin_tracer(cpu_no):
    """Pin the thread that runs the tracer loop; the sandbox was forked before
    this runs, so the build keeps its own affinity."""
    from nixrec.recorder import session
    real_run = session.Build.run

    def run(self):
        os.sched_setaffinity(0, {cpu_no})        # 0 = the calling thread
        return real_run(self)
    session.Build.run = run


def nice_tracer(n):
    """Give the thread that runs the tracer loop nice value `n` once the build
    has started (the build keeps its own): is the stop latency the tracer's
    wait for a CPU the build holds?"""
    from nixrec.recorder import session
    real_run = session.Build.run

    def run(self):
        import threading
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), n)
        return real_run(self)
    session.Build.run = run


def idle_wait(us):
    """Set how long the C loop waits with records and no stop before it
    returns them to Python (fastpath.IDLE_SECONDS)."""
    from nixrec.recorder.trace import fastpath
    fastpath.FastPath.__init__.__defaults__ = (us / 1e6,)


def spin_wait(us):
    """Set how long the tracer polls for the next stop before blocking
    (waiting.SPIN_SECONDS; 0: block at once, the tracer before issue 6)."""
    from nixrec.recorder.trace import waiting
    waiting.SPIN_SECONDS = us / 1e6


def no_predict():
    """No lookup answered at entry (recorder/trace/predict.py): every call keeps its exit stop."""
    from nixrec.recorder.sandbox import steps as sandbox_steps
    sandbox_steps.fixed_trees = lambda plan: []


def floor():
    """The same stops, handled with the least Python can do: each seccomp stop
    is one PTRACE_GET_SYSCALL_INFO and a resume (PTRACE_SYSCALL where the
    recorder would take the exit stop, which then just resumes). No decoding,
    no prediction, no events but the process ones. What is left of the
    overhead is the kernel's stops plus a minimal Python loop."""
    from nixrec.recorder.sandbox import linux
    from nixrec.recorder.trace import syscalls, tracer as T

    def on_seccomp(self, t):
        _, nr, _ = linux.get_syscall_info(t.pid)
        sc = syscalls.BY_NR.get(nr)
        if sc is not None and sc.needs_exit and sc.cls != syscalls.EXEC \
                and sc.name not in syscalls.LOOKUPS:
            t.pending = (sc, None)
            self._resume(t.pid, req=linux.PTRACE_SYSCALL)
        else:
            self._resume(t.pid)

    def on_exit(self, t):
        t.pending = None
        self._resume(t.pid)
    T.Tracer._on_seccomp = on_seccomp
    T.Tracer._on_syscall_exit = on_exit


def floor_c(read=False):
    """--floor in C (bench/floor.c, compiled here with gcc): the same stops
    with no Python at all in the loop. The tracer's run() is replaced by the C
    loop; nothing is recorded but the trace's header and summary. read=True
    (--floor-c-read): the loop also reads each path and each exit's result,
    as a recorder with its hot path in C would."""
    import ctypes
    import subprocess
    import tempfile
    from nixrec.recorder import session
    from nixrec.recorder.trace import syscalls, tracer as T, waiting
    so = os.path.join(tempfile.mkdtemp(prefix="nixrec-floor-"), "floor.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", so,
                    os.path.join(ROOT, "bench", "floor.c")], check=True)
    lib = ctypes.CDLL(so)
    lib.floor_loop.restype = ctypes.c_int
    lib.floor_loop.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                               ctypes.c_long, ctypes.POINTER(ctypes.c_long)]
    table = bytearray(512)
    paths = bytearray(b"\xff" * 512)             # -1: no path to read
    for nr, sc in syscalls.BY_NR.items():
        if sc.needs_exit and sc.cls != syscalls.EXEC and sc.name not in syscalls.LOOKUPS:
            table[nr] = 1
        if read and sc.i_path is not None:
            paths[nr] = sc.i_path
    if not read:
        paths[0] = 0xFE                           # -2: exits are not even looked at
    real_start = session.Build.start

    def start(self):
        real_start(self)
        self.tracer._helper = self.spawned.helper_pid

    def run(self, should_stop=None):
        stops = ctypes.c_long()
        status = lib.floor_loop(self.builder_pid, self._helper, bytes(table), bytes(paths),
                                int(waiting.SPIN_SECONDS * 1e9), ctypes.byref(stops))
        self.stops = stops.value
        if status >= 0:
            self.builder_status = (("exit", os.WEXITSTATUS(status)) if os.WIFEXITED(status)
                                   else ("signal", T.signame(os.WTERMSIG(status))))
        self.tracees = {}
        return "done"
    session.Build.start = start
    T.Tracer.run = run


def run_record(args):
    from nixrec.recorder.cli import main
    try:
        main(args)
    except SystemExit as e:
        return e.code or 0
    return 0


def report(stops, seams, waits, cpus, wall, ru0, ru1):
    n_stops = sum(v for k, v in stops.n.items() if not k.startswith("  (no event)")
                  and k != "exit (not a stop)")
    handle = sum(v for k, v in stops.s.items())
    wait = waits.s["waitpid"]
    print(f"wall {wall:.1f} s (instrumented); stops {n_stops:,} = {n_stops / wall:,.0f}/s")
    print(f"tracer main loop: waitpid {wait:.1f} s ({waits.n['waitpid']:,} calls), "
          f"handling stops {handle:.1f} s = {1e6 * handle / max(1, n_stops):.1f} us per stop")
    print(f"recorder process CPU (all its threads, not the build): user "
          f"{ru1.ru_utime - ru0.ru_utime:.1f} s, sys {ru1.ru_stime - ru0.ru_stime:.1f} s; "
          f"of which in waitpid {cpus.s['waitpid']:.1f} s, in ptrace calls "
          f"{sum(v for k, v in cpus.s.items() if k.startswith('ptrace')):.1f} s")
    print()
    print(f"{'stops by kind':44}{'count':>10}{'%':>7}{'handling s':>12}{'us/stop':>9}")
    seen = set()
    for k, n in sorted(stops.n.items(), key=lambda kv: -kv[1]):
        if k.startswith("  (no event)"):
            continue
        seen.add(k)
        s = stops.s[k]
        print(f"{k:44}{n:>10,}{100 * n / max(1, n_stops):>7.1f}{s:>12.2f}{1e6 * s / n:>9.1f}")
        ne = stops.n.get("  (no event) " + k)
        if ne:
            print(f"{'    of which made no event':44}{ne:>10,}")
    print()
    print(f"{'inside the handling (seams)':44}{'calls':>10}{'wall s':>9}{'% of handling':>15}"
          f"{'us/call':>9}{'CPU s':>8}")
    for k, s in sorted(seams.s.items(), key=lambda kv: -kv[1]):
        c = fmt_cpu(cpus.s.get(k))
        print(f"{k:44}{seams.n[k]:>10,}{s:>9.2f}{100 * s / max(handle, 1e-9):>15.1f}"
              f"{1e6 * s / seams.n[k]:>9.1f}{c:>8}")
    print("(nested: read_mem is also inside read_cstr, ptrace GET_SYSCALL_INFO inside\n"
          " get_syscall_info, ptrace GETEVENTMSG inside geteventmsg, flush inside append)")


def fmt_cpu(v):
    return "" if v is None else f"{v:.2f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cprofile", metavar="FILE")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--plain", action="store_true",
                    help="no wrappers: just the wall time and the summary (for --drop runs)")
    ap.add_argument("--drop", metavar="CALLS", default="",
                    help="what-if: take these calls (comma-separated) out of the syscall "
                         "table before recording, so the filter lets them run unstopped")
    ap.add_argument("--no-exit", metavar="CALLS", default="",
                    help="what-if: record these calls at entry only (no exit stop; their "
                         "results are then wrong in the trace: for timing only)")
    ap.add_argument("--pin-tracer", metavar="CPU", type=int,
                    help="what-if: pin the tracer thread (only) to this CPU once the "
                         "build has started; the build keeps every CPU")
    ap.add_argument("--nice", metavar="N", type=int,
                    help="what-if: the tracer thread (only) at this nice value once the "
                         "build has started")
    ap.add_argument("--idle", metavar="US", type=float,
                    help="what-if: with records waiting and no stop for this long, the C "
                         "loop returns them to Python (fastpath.IDLE_SECONDS)")
    ap.add_argument("--spin", metavar="US", type=float,
                    help="what-if: poll for the next stop this many microseconds "
                         "before blocking in waitpid (0: block at once)")
    ap.add_argument("--no-predict", action="store_true",
                    help="what-if: answer no lookup at entry (every call keeps its exit stop)")
    ap.add_argument("--floor", action="store_true",
                    help="what-if: handle each stop with the least Python can do (no "
                         "decoding, no events but process ones): the kernel's share")
    ap.add_argument("--floor-c", action="store_true",
                    help="what-if: the same stops handled by a loop in C (bench/floor.c): "
                         "the floor of any recorder that stops this often")
    ap.add_argument("--floor-c-read", action="store_true",
                    help="what-if: --floor-c that also reads each path and exit result")
    ap.add_argument("--python", action="store_true",
                    help="what-if: the tracer's Python loop (NIXREC_FASTPATH=0), not the C loop")
    ap.add_argument("record_args", nargs="*")
    a = ap.parse_args(argv)
    args = a.record_args or DEFAULT
    os.environ.setdefault("NIX_REMOTE", "")
    what_if = []
    if a.python or a.floor or a.no_exit or not (a.plain or a.cprofile):
        # The Python loop: the seams these wrap and replace are its own (the
        # C loop, recorder/trace/fastpath.c, would handle those stops itself).
        os.environ["NIXREC_FASTPATH"] = "0"
        what_if.append("Python loop")
    if a.drop:
        drop_calls(a.drop.split(","))
        what_if.append("without " + a.drop)
    if a.no_exit:
        entry_only(a.no_exit.split(","))
        what_if.append("no exit stop for " + a.no_exit)
    if a.pin_tracer is not None:
        pin_tracer(a.pin_tracer)
        what_if.append(f"tracer pinned to CPU {a.pin_tracer}")
    if a.nice is not None:
        nice_tracer(a.nice)
        what_if.append(f"tracer at nice {a.nice}")
    if a.floor:
        floor()
        what_if.append("floor: no decoding, lookups resumed at entry")
    if a.floor_c or a.floor_c_read:
        floor_c(read=a.floor_c_read)
        what_if.append("floor in C" + (", paths and results read" if a.floor_c_read else "")
                       + ": no Python per stop")
    if a.no_predict:
        no_predict()
        what_if.append("no lookup answered at entry")
    if a.idle is not None:
        idle_wait(a.idle)
        what_if.append(f"idle {a.idle:g} us before records go to Python")
    if a.spin is not None:
        spin_wait(a.spin)
        what_if.append(f"spin {a.spin:g} us before blocking")
    if a.plain:
        t0 = clock()
        rc = run_record(args)
        print(f"wall {clock() - t0:.1f} s (plain{''.join(', ' + w for w in what_if)})")
        return 0 if rc in (0, None) else rc
    if a.cprofile:
        import cProfile
        import pstats
        t0 = clock()
        cProfile.runctx("run_record(args)", globals(), {"args": args, "run_record": run_record},
                        a.cprofile)
        print(f"wall {clock() - t0:.1f} s under cProfile")
        pstats.Stats(a.cprofile).sort_stats("tottime").print_stats(a.top)
        return 0
    import resource
    stops, seams, waits, cpus = instrument()
    t0, ru0 = clock(), resource.getrusage(resource.RUSAGE_SELF)
    rc = run_record(args)
    wall, ru1 = clock() - t0, resource.getrusage(resource.RUSAGE_SELF)
    report(stops, seams, waits, cpus, wall, ru0, ru1)
    return 0 if rc in (0, None) else rc


if __name__ == "__main__":
    sys.exit(main())
