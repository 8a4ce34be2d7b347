"""RecordSession: derivation -> plan -> sandbox -> tracer -> trace file.

Steps and returns a RecordResult value; printing is cli's job (cli/record.py).
"""

import errno
import os
import platform
import shutil
import stat
import threading
import time

from nixrec.recorder import __version__, interrupts, tree
from nixrec.recorder.destination import Destination, Reaper
from nixrec.recorder.build import Build
from nixrec.recorder.sandbox import nixversion, plan as sandbox_plan, steps as sandbox_steps
from nixrec.recorder.nix import drv as drvmod, store
from nixrec.recorder.trace import syscalls
from nixrec.recorder.nix import outputs as outputs_mod
from nixrec.recorder.errors import BadInput, HostUnsupported, NixrecError
from nixrec.recorder.tracefile.writer import TraceWriter
from nixrec.recorder.tracefile.phases import PhaseTracker
from nixrec.recorder.tracefile import hostview

REFUSED_ERRNOS = {"EACCES", "EPERM", "EROFS", "ENOTSUP", "ENETUNREACH", "ECONNREFUSED",
                  "EHOSTUNREACH", "EAFNOSUPPORT"}


# A fork bomb is stopped when this many processes of the build are alive at
# once. Nix has no such limit (it relies on the build user's RLIMIT_NPROC);
# under ptrace every live process costs nixrec memory, and a real build rarely
# has more than a few hundred alive (make -j64 with its shells and compilers).
DEFAULT_MAX_PROCESSES = 20000


class RecordOptions:
    """What `nixrec record` was asked for. The limits use Nix's names and
    defaults (0 = no limit): timeout, max-silent-time, max-build-log-size."""

    def __init__(self, output=None, attr=None, extra_sandbox_paths="", cores=None,
                 keep_build_dir=False, no_sandbox=False, log=None, status=None,
                 timeout=0, max_silent_time=0, max_log_size=0,
                 max_processes=DEFAULT_MAX_PROCESSES, readlink=False, check=False,
                 relaxed=False, impersonate_linux_26=None, nix_version=None,
                 nix_args=()):
        self.output = output
        self.attr = attr
        self.extra_sandbox_paths = extra_sandbox_paths or ""
        self.cores = cores
        self.keep_build_dir = keep_build_dir
        self.no_sandbox = no_sandbox
        self.log = log                  # callable(bytes): the build log as it streams
        self.status = status            # callable(dict): progress for a status line
        self.timeout = timeout or 0                 # seconds of wall clock
        self.max_silent_time = max_silent_time or 0  # seconds without log output
        self.max_log_size = max_log_size or 0       # bytes of log
        self.max_processes = max_processes or 0     # processes alive at once
        self.readlink = readlink        # also record readlink/readlinkat (syscalls.OPTIONAL)
        self.check = check              # nix-build --check: compare with the store's outputs
        self.relaxed = relaxed          # Nix's `sandbox = relaxed` (sandboxed())
        self.impersonate_linux_26 = impersonate_linux_26   # None: nix.conf's
        self.nix_version = nix_version  # the checked Nix to follow (choose_nix_version)
        self.nix_args = list(nix_args)  # nix-instantiate's --arg/--argstr, as (kind, name, value)


class RecordResult:
    """What a recording ended with (all plain values)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def failed(self) -> bool:
        return self.exit_status != 0


def choose_nix_version(asked=None):
    """Whose sandbox to make: --nix-version, else the host's nix-build.
    -> (the checked version followed, a one-line warning or None, the host's)."""
    host = nixversion.host_version()
    if asked is not None and nixversion.parse(asked) is None:
        raise BadInput(f"--nix-version {asked}: not a version (X.Y, e.g. 2.26)")
    want = asked or host
    followed, exact = nixversion.follow(want)
    checked = " and ".join(nixversion.CHECKED)
    if want is None:
        warning = (f"no nix-build here: nixrec follows Nix {followed}'s sandbox "
                   f"(--nix-version X.Y to choose; checked: {checked})")
    elif not exact:
        warning = (f"Nix {want} is not one nixrec is checked against ({checked}): "
                   f"it follows Nix {followed}'s sandbox")
    else:
        warning = None
    return followed, warning, host


def resolve_drv(target: str, attr=None, nix_args=()) -> str:
    """A .drv path from what the user typed: a .drv, or a .nix file with -A ATTR."""
    if not os.path.exists(target):
        raise BadInput(f"no such file: {target}")
    is_drv = target.endswith(".drv") and attr is None
    if not is_drv and (target.endswith(".nix") or attr is not None or os.path.isdir(target)):
        if not store.have_nix():
            raise BadInput(f"{target}: instantiating a .nix file needs Nix "
                           "(apt-get install nix-bin); or pass a .drv")
        return store.instantiate(target, attr, nix_args)
    if nix_args:
        raise BadInput(f"--arg/--argstr are for a .nix file; {target} is a derivation")
    return os.path.abspath(target)


def input_paths(d) -> list:
    """inputSrcs plus the requested outputs of each input derivation."""
    return [p for p, _ in input_paths_with_drvs(d)]


def input_paths_with_drvs(d) -> list:
    """[(store path, the .drv that builds it, or None for an inputSrc)]."""
    paths = [(p, None) for p in d.input_srcs]
    for drv_path, node in d.input_drvs.items():
        wanted = node if isinstance(node, list) else node.outputs
        if not os.path.exists(drv_path):
            raise BadInput(f"input derivation not in the store: {drv_path}")
        dep = drvmod.load(drv_path)
        for out in wanted:
            if out not in dep.outputs:
                raise BadInput(f"{drv_path} has no output {out!r}")
            paths.append((dep.outputs[out].path, f"{drv_path}!{out}"))
    return paths


def check_host() -> None:
    """Exit 3 early, with what to change, when this host cannot record."""
    if platform.machine() != "x86_64":
        raise HostUnsupported(f"recording needs x86_64 (this is {platform.machine()})")
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read().strip() or 0) == 0:
                raise HostUnsupported("user namespaces are disabled: "
                                      "sysctl -w user.max_user_namespaces=15000")
    except FileNotFoundError:
        raise HostUnsupported("this kernel has no user namespaces")
    try:
        with open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0" and os.geteuid() != 0:
                raise HostUnsupported("unprivileged user namespaces are disabled: "
                                      "sysctl -w kernel.unprivileged_userns_clone=1")
    except FileNotFoundError:
        pass


def sandboxed(d, drv_path: str, opts: RecordOptions) -> bool:
    """Is the build in the sandbox? Nix 2.8's choice (startBuilder): with
    `sandbox = true`, nixrec's default, a derivation with `__noChroot` is
    refused; with `relaxed` (--relaxed) a fixed-output derivation or one with
    `__noChroot` is built without it (verified with 2.8: both see the host's
    /); --no-sandbox never uses it. __noChroot is read in every mode, as Nix
    reads it (a structured attr that is no boolean fails in every mode)."""
    no_chroot = d.bool_attr("__noChroot", drv_path)
    if opts.no_sandbox:
        return False
    if opts.relaxed:
        return not (d.is_fixed_output or no_chroot)
    if no_chroot:
        raise BadInput(f"derivation '{drv_path}' has '__noChroot' set, but that's not "
                       "allowed when 'sandbox' is 'true' (nixrec record --relaxed builds "
                       "it as `sandbox = relaxed` would)")
    return True


def plan_for(drv_path: str, opts: RecordOptions, workdir: str = None):
    """-> (Derivation, SandboxPlan, closure with hashes, the inputs' closure).

    The inputs' closure is what Nix's reference scan looks for (inputPaths);
    the sandbox holds that and the closure of the sandbox paths in the store.

    `workdir` (TRACE.d) is needed with --no-sandbox: the build then runs in a
    host directory under it, and the plan's environment names that path."""
    d = drvmod.load(drv_path)
    if d.system not in (f"{platform.machine()}-linux",):
        raise BadInput(f"{drv_path} is for {d.system}; this machine builds "
                       f"{platform.machine()}-linux")
    no_sandbox = not sandboxed(d, drv_path, opts)
    with_drvs = input_paths_with_drvs(d)
    inputs = [p for p, _ in with_drvs]
    store.realise(with_drvs)
    extra = sandbox_plan.parse_sandbox_paths(opts.extra_sandbox_paths)
    conf = sandbox_plan.host_nix_conf()
    store_sources = [p["source"] for p in extra + sandbox_plan.parse_sandbox_paths(
        conf["sandbox-paths"] + " " + conf["extra-sandbox-paths"])
        if p["source"].startswith(store.STORE_DIR + "/")]
    input_closure = store.closure(inputs)
    closure = sorted(set(input_closure) | set(store.closure(store_sources)))
    host_build = sandbox_steps.host_build_dir(drv_path) if no_sandbox else None
    plan = sandbox_plan.make_plan(d, drv_path, closure, cores=opts.cores,
                             extra_sandbox_paths=opts.extra_sandbox_paths,
                             no_sandbox=no_sandbox, nix_conf=conf,
                             host_build_dir=host_build,
                             impersonate_linux_26=opts.impersonate_linux_26,
                             nix_version=opts.nix_version or choose_nix_version()[0],
                             host_nix_version=nixversion.host_version())
    missing = sandbox_steps.check_sandbox_paths(plan)
    if missing:
        raise BadInput(f"sandbox path does not exist: {missing[0]} "
                       "(append '?' to make it optional)")
    hashes = [{"path": p, "hash": store.path_hash(p)} for p in closure]
    return d, plan, hashes, input_closure


def default_output(drv_path: str) -> str:
    base = os.path.basename(drv_path)
    name = base[33:] if len(base) > 33 and base[32] == "-" else base
    return os.path.abspath(name[:-4] + ".nixrec" if name.endswith(".drv") else name + ".nixrec")


def header_for(drv_path, plan, hashes, calls) -> dict:
    with open(drv_path, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    plan_d = plan.to_dict()
    return {"nixrec_version": __version__, "drv_path": drv_path, "drv_text": text,
            "plan": plan_d, "closure": hashes,
            "calls": calls,
            "host": {"kernel": platform.release(), "arch": platform.machine(),
                     "system": platform.system()},
            "start_time": time.time()}


class Watchdog(threading.Thread):
    """Kills the build when it breaks a limit, and keeps the trace flushed.

    Nix's limits (§2.2 step 11), with Nix's messages: `timeout` and
    `max-silent-time` are checked here every tick; the log size and the
    process count are checked the moment they grow (`output`, `processes`),
    since a flood or a fork bomb does a lot of damage in one tick. Killing is
    `kill_build` (one os.kill: safe from any thread); the tracer loop then
    sees every process exit and the session closes the trace as usual.

    `lock` guards the trace writer, which the tracer thread appends to: every
    FLUSH_TICK the watchdog has the writer put what waits into the file
    (writer.tick: a piece once its oldest event is 40 ms old), so a recorder
    killed while the build is quiet, or while the tracer waits in its C loop,
    still leaves all but its last ~0.1 s of events (issue 17).
    """

    TICK = 0.2          # seconds; the precision of --timeout and --max-silent-time
    FLUSH_TICK = 0.02   # seconds between looks at the writer (writer.PIECE_AGE)

    STATUS_EVERY = 3    # ticks between status-line updates (opts.status)

    def __init__(self, opts, kill, writer, lock, progress=None):
        super().__init__(daemon=True, name="nixrec-watchdog")
        self.opts, self.kill, self.writer, self.lock = opts, kill, writer, lock
        self.progress = progress         # callable() -> dict for opts.status
        self.reason = None               # first limit broken, as Nix words it
        self.write_error = None          # a TraceWriteError met while flushing
        self.log_bytes = 0
        self.t0 = self.last_output = time.monotonic()
        self._done = threading.Event()

    def output(self, n: int) -> bool:
        """From the log pump: n more bytes. -> False once the log is over its limit."""
        self.last_output = time.monotonic()
        self.log_bytes += n
        limit = self.opts.max_log_size
        if limit and self.log_bytes > limit:
            self.fire(f"killed after writing more than {limit} bytes of log output")
            return False
        return True

    def processes(self, alive: int) -> None:
        """From the tracer thread, at each fork: how many are alive now."""
        limit = self.opts.max_processes
        if limit and alive > limit:
            self.fire(f"killed after running more than {limit} processes at once")

    def fire(self, reason: str) -> None:
        if self.reason is None:          # the first reason wins; later ones are echoes
            self.reason = reason
        self.kill()

    def run(self):
        timeout, silent = self.opts.timeout, self.opts.max_silent_time
        ticks = 0
        next_check = self.t0 + self.TICK
        while not self._done.wait(self.FLUSH_TICK):
            now = time.monotonic()
            self._flush(now)
            if now < next_check:
                continue
            next_check = now + self.TICK
            ticks += 1
            if self.opts.status and self.progress and ticks % self.STATUS_EVERY == 0:
                self.opts.status(dict(self.progress(), elapsed=now - self.t0))
            if timeout and now - self.t0 >= timeout:
                self.fire(f"timed out after {timeout} seconds")
            elif silent and now - self.last_output >= silent:
                self.fire(f"timed out after {silent} seconds of silence")

    def _flush(self, now):
        if self.write_error is not None or not self.writer.due(now):
            return           # (a look without the lock: tick() looks again)
        with self.lock:
            try:
                self.writer.tick()
            except NixrecError as e:
                # Disk full: nothing more can be recorded, so stop the build;
                # record() raises this once the tracer loop has drained.
                self.write_error = e
                self.kill()

    def stop(self):
        self._done.set()
        self.join(timeout=2)


def visible_roots(plan) -> frozenset:
    """Top-level names that exist in the sandbox: its own and the sandbox-paths."""
    own = {"build", "tmp", "proc", "dev", "etc", "nix"}
    own.update(p["target"].strip("/").split("/")[0] for p in plan.sandbox_paths)
    return frozenset(own)


def is_refused(ev, roots) -> bool:
    """A call the sandbox refused: a permission or network error, or a path
    that is missing only because its top directory is not in the sandbox."""
    if ev.errno is None:
        return False
    if ev.errno in REFUSED_ERRNOS:
        return True
    p = ev.path or ""
    return (ev.errno == "ENOENT" and p.startswith("/")
            and p.split("/", 2)[1] not in roots)


def record(target: str, opts: RecordOptions) -> RecordResult:
    """Record one build end to end. Raises NixrecError for what is not a build
    failure; an interrupt (Ctrl-C, SIGTERM, SIGHUP) before the build started
    is one of those (exit 128 + the signal: interrupts.py), after it a result."""
    with interrupts.Guard() as guard:
        try:
            return _record(target, opts, guard)
        except interrupts.Interrupted as e:
            # Only raised while setting up: nothing was recorded.
            dest = getattr(guard, "dest", None)
            kept = f", the previous {dest.trace} is kept" if dest and dest.previous_kept else ""
            raise NixrecError(f"interrupted ({interrupts.name(e.signum)}) while setting up, "
                              f"before the build started: nothing recorded{kept}",
                              interrupts.exit_code(e.signum)) from None


def _record(target, opts, guard):
    check_host()
    drv_path = resolve_drv(target, opts.attr, opts.nix_args)
    dest = Destination(os.path.abspath(opts.output or default_output(drv_path)))
    dest.recover()                   # what a kill -9 of an earlier recording left
    out, workdir = dest.trace, dest.workdir
    guard.dest = dest                # for record()'s message
    d, plan, hashes, input_closure = plan_for(drv_path, opts, workdir)
    if opts.check and not store.valid([o.path for o in d.outputs.values()]):
        # Nix's words, and as in Nix before anything is built.
        raise BadInput(f"some outputs of '{drv_path}' are not valid, so checking is not "
                       "possible")
    # From here to the builder's start a signal only counts (interrupts.py).
    guard.allow(False)
    # The trace first, under a temporary name (destination.py): a directory
    # that does not exist is the user's mistake (TraceWriter says so, exit 2).
    calls = syscalls.recorded((("readlink",) if opts.readlink else ())
                              + (("xattr-read",) if sandbox_plan.features_of(plan)
                                 ["xattr_read_refused"] else ()))
    try:
        writer = TraceWriter(dest.tmp, header_for(drv_path, plan, hashes, calls), name=out)
    except NixrecError as e:
        dest.rollback()
        raise _kept(e, dest)
    try:
        dest.make_workdir()
    except NixrecError as e:
        writer.abandon()
        dest.rollback()
        raise _kept(e, dest)
    # What a kill -9 of nixrec would leave: the sandbox (and --no-sandbox's
    # build directory on the host), removed by a reaper (destination.py).
    dest.reaper = Reaper([os.path.join(workdir, "sandbox")]
                         + ([plan.build_dir] if plan.no_sandbox else []))
    try:
        return _run(dest, writer, d, plan, drv_path, input_closure, calls, opts, guard)
    finally:
        dest.reaper.done()


def _run(dest, writer, d, plan, drv_path, input_closure, calls, opts, guard):
    """The build, from the sandbox's start to the trace's close."""
    out, workdir = dest.trace, dest.workdir
    counts = {"events": 0, "refused": 0}
    phases = PhaseTracker()          # the stdenv phases, for the summary (phases.py)
    failed_paths = hostview.Collector(plan.build_dir)   # stat'ed on the host at the end
    roots = visible_roots(plan)
    lock = threading.Lock()
    build = None

    def emit(ev):
        if watchdog.write_error is not None:
            return                   # the build is being killed; nothing more fits
        with lock:
            try:
                writer.append(ev)
            except NixrecError as e:
                # Disk full. Raising here would leave the tracer mid-stop;
                # instead kill the build, let the loop drain, raise after.
                watchdog.write_error = e
                build.tracer.kill_build()
                return
        counts["events"] += 1
        refused = ev.errno is not None and is_refused(ev, roots)
        if refused:
            counts["refused"] += 1
        if ev.errno is not None:
            failed_paths(ev)
        phases.see(ev, refused)
        if ev.kind == "fork":
            watchdog.processes(len(build.tracer.tracees))

    def log(data):
        # Past max-log-size Nix stops copying the log; so does this.
        if watchdog.output(len(data)) and opts.log:
            opts.log(data)

    build = Build(plan, workdir, emit, log=log, calls=calls)
    def progress(phase="building"):
        t = build.tracer
        return {"processes": t.nprocesses, "alive": len(t.tracees),
                "events": counts["events"], "refused": counts["refused"],
                "current": t.current if phase == "building" else "", "phase": phase}

    watchdog = Watchdog(opts, lambda: build.tracer.kill_build(), writer, lock, progress)
    try:
        build.start()
    except NixrecError as e:
        writer.abandon()
        dest.rollback()
        raise _kept(e, dest)
    if guard.signum is not None:
        # Interrupted while the sandbox was set up: no build ran; as above.
        build.tracer.kill_build()
        build.stop()
        writer.abandon()
        dest.rollback()
        raise interrupts.Interrupted(guard.signum)
    warning = dest.commit()
    watchdog.start()
    try:
        build.run()
    finally:
        watchdog.stop()
        build.stop()
    if watchdog.write_error is not None:
        # The trace cannot be written (disk full): the build is stopped; keep
        # what was written (it reads as interrupted), leave no sandbox behind.
        err = _write_error(watchdog.write_error, build, out)
        _abandon(build, writer)
        raise err
    tracer = build.tracer
    signum = build.interrupt_signal
    during = "building" if signum else None
    outputs, output_error, output_check, references, hidden = {}, None, None, {}, {}
    try:
        guard.allow(True)
        if opts.status:
            opts.status(dict(progress("checking the outputs"), elapsed=build.duration))
        outputs, output_error, output_check = _collect_outputs(plan, build.lay, workdir,
                                                               tracer.builder_status)
        if output_error is None and tracer.builder_status == ("exit", 0) and not signum:
            # §2.8: Nix's checks on what the builder left (they canonicalise it).
            verdict = outputs_mod.check(d, plan, os.path.join(workdir, "outputs"),
                                        input_closure, against_store=opts.check)
            output_error, references = verdict["error"], verdict["references"]
            output_check, hidden = verdict["failed"], verdict["hidden"]
        else:
            for path in outputs.values():
                outputs_mod.canonicalise(path)      # the store's modes, as Nix leaves them
        guard.allow(False)
    except interrupts.Interrupted as e:
        # Nix's checks were cut: the outputs' verdict is unknown, and so the build's.
        signum, during = e.signum, "checking the outputs"
        output_error = output_check = None
        references, hidden = {}, {}
    error = build.exec_error or output_error
    killed = watchdog.reason
    if killed is None and build.eof_kill and tracer.builder_status == ("signal", "SIGKILL"):
        killed = "killed when it closed its standard output and error (as Nix does)"
    status, sig = _exit_of(tracer.builder_status, error or killed, signum)
    # What the host has of what the sandbox refused (hostview.py), for `why`.
    host_view = hostview.probe(failed_paths.paths, plan.inputs, plan.outputs.values(),
                               truncated=failed_paths.full)
    summary = {"exit_status": status, "exit_signal": sig, "events": counts["events"],
               "processes": tracer.nprocesses, "refused": counts["refused"],
               "duration": round(build.duration, 3), "stops": tracer.stops,
               "stops_c": tracer.stops_c, "low_latency": build.low_latency,
               "answered_at_entry": tracer.predictor.answered if tracer.predictor else 0,
               "log_bytes": build.pump.bytes, "outputs": outputs, "references": references,
               "output_check": output_check, "hidden_references": hidden,
               "error": error, "phases": phases.result(),
               "interrupted": bool(signum), "killed": killed,
               "host_view": host_view}
    if signum:
        # docs/trace-format.md: which signal, and what nixrec was doing.
        summary["interrupted_by"] = interrupts.name(signum)
        summary["interrupted_while"] = during
    try:
        with lock:
            writer.close(summary, None)
    except NixrecError:
        build.remove_sandbox()
        raise
    if not opts.keep_build_dir:
        build.remove_sandbox()
    return RecordResult(trace=out, drv_path=drv_path, exit_status=status, exit_signal=sig,
                        events=counts["events"], processes=tracer.nprocesses,
                        refused=counts["refused"], duration=build.duration,
                        trace_bytes=os.path.getsize(out), outputs=outputs, error=error,
                        hidden_references=hidden, output_check=output_check,
                        interrupted=bool(signum), interrupt_signal=signum,
                        interrupted_while=during, killed=killed, warning=warning,
                        build_dir=build.lay.build if opts.keep_build_dir else None)


def _kept(err, dest):
    """The error, saying that the previous trace is kept (if there is one)."""
    if dest.previous_kept:
        return type(err)(f"{err}; nothing recorded, the previous {dest.trace} is kept",
                         err.exit_code)
    return err


def _write_error(err, build, trace):
    """The disk-full message, naming what filled it: the build's own files
    (/build and the outputs, on the trace's filesystem) or the trace."""
    if getattr(err, "errno", None) != errno.ENOSPC:
        return err
    try:
        same_disk = os.stat(build.lay.build).st_dev == os.stat(os.path.dirname(trace)).st_dev
        trace_bytes = os.path.getsize(trace)
    except OSError:
        return err
    build_bytes = tree.disk_bytes(build.lay.workdir) if same_disk else 0
    kept = "the trace is kept up to where it was cut"
    if build_bytes > trace_bytes:
        where = os.path.relpath(build.lay.workdir)
        return type(err)(f"{err}: the build filled the disk (its sandbox {where} took "
                         f"{_size(build_bytes)}, the trace {_size(trace_bytes)}); {kept}; free "
                         "space or record with -o on a larger filesystem", err.exit_code)
    return type(err)(f"{err}: the trace filled the disk ({_size(trace_bytes)}); {kept}; "
                     "free space or record with -o on a larger filesystem", err.exit_code)


def _size(n):
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _abandon(build, writer):
    try:
        writer.abandon()
    except NixrecError:
        pass            # the write error already raised says it
    build.remove_sandbox()


def _exit_of(builder_status, error, interrupted):
    # (cli/record.py exits 128 + the signal for an interrupted recording.)
    """-> (exit status for the user, signal name): 0 only for a clean build."""
    if builder_status is None:
        return 1, None
    kind, val = builder_status
    if kind == "signal":
        return 1, val
    if error or interrupted:
        return val or 1, None
    return val, None


def _is_whiteout(path):
    # --no-sandbox hides an existing output with an overlay whiteout (0/0 device).
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _give_to_caller(path):
    """Outputs are made by the build's host id; hand them to whoever ran
    nixrec, as Nix hands outputs to the store's owner."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in tree.walk(path):      # the build chose the depth
        for name in dirs + files:
            os.lchown(os.path.join(root, name), 0, 0)
    os.lchown(path, 0, 0)


def _collect_outputs(plan, lay, workdir, builder_status):
    """§2.8: move outputs out of the chroot to `<trace>.d/outputs/`; a missing
    output of a successful builder is a failure, as Nix reports it. ->
    (found, Nix's error or None, what `why` is told of it or None)."""
    dest = os.path.join(workdir, "outputs")
    os.makedirs(dest, exist_ok=True)
    found, error, failed = {}, None, None
    for name, path in sorted(plan.outputs.items()):
        src = os.path.join(lay.outputs_dir, os.path.basename(path))
        if os.path.lexists(src) and not _is_whiteout(src):
            target = os.path.join(dest, os.path.basename(path))
            shutil.move(src, target)
            _give_to_caller(target)
            found[name] = target
        elif builder_status == ("exit", 0) and error is None:
            # Nix's words; Nix names the path inside its chroot directory.
            error = (f"builder for '{plan.drv_path}' failed to produce output path for "
                     f"output '{name}' at '{path}'")
            failed = outputs_mod.failure("missing", name)
    return found, error, failed
