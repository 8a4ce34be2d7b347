"""RecordSession: derivation -> plan -> sandbox -> tracer -> trace file.

Steps and returns a RecordResult value; printing is cli's job (cmd_record.py).
"""

import os
import platform
import shutil
import signal
import threading
import time
import tty

from nixrec.recorder import __version__, drv as drvmod, sandbox, seccomp, store
from nixrec.recorder.errors import EXIT_HOST, BadInput, HostUnsupported, NixrecError
from nixrec.recorder.tracer import Tracer
from nixrec.recorder.tracefile.writer import TraceWriter

REFUSED_ERRNOS = {"EACCES", "EPERM", "EROFS", "ENOTSUP", "ENETUNREACH", "ECONNREFUSED",
                  "EHOSTUNREACH", "EAFNOSUPPORT"}


class RecordOptions:
    def __init__(self, output=None, attr=None, extra_sandbox_paths="", cores=None,
                 keep_build_dir=False, no_sandbox=False, log=None, status=None):
        self.output = output
        self.attr = attr
        self.extra_sandbox_paths = extra_sandbox_paths or ""
        self.cores = cores
        self.keep_build_dir = keep_build_dir
        self.no_sandbox = no_sandbox
        self.log = log                  # callable(bytes): the build log as it streams
        self.status = status            # callable(dict): progress for a status line


class RecordResult:
    """What a recording ended with (all plain values)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def failed(self) -> bool:
        return self.exit_status != 0


def resolve_drv(target: str, attr=None) -> str:
    """A .drv path from what the user typed: a .drv, or a .nix file with -A ATTR."""
    if not os.path.exists(target):
        raise BadInput(f"no such file: {target}")
    if target.endswith(".drv") and attr is None:
        return os.path.abspath(target)
    if target.endswith(".nix") or attr is not None or os.path.isdir(target):
        if not store.have_nix():
            raise BadInput(f"{target}: instantiating a .nix file needs Nix "
                           "(apt-get install nix-bin); or pass a .drv")
        return store.instantiate(target, attr)
    return os.path.abspath(target)


def input_paths(d) -> list:
    """inputSrcs plus the requested outputs of each input derivation."""
    paths = list(d.input_srcs)
    for drv_path, node in d.input_drvs.items():
        wanted = node if isinstance(node, list) else node.outputs
        if not os.path.exists(drv_path):
            raise BadInput(f"input derivation not in the store: {drv_path}")
        dep = drvmod.load(drv_path)
        for out in wanted:
            if out not in dep.outputs:
                raise BadInput(f"{drv_path} has no output {out!r}")
            paths.append(dep.outputs[out].path)
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


def plan_for(drv_path: str, opts: RecordOptions):
    """-> (Derivation, SandboxPlan, closure with hashes)."""
    d = drvmod.load(drv_path)
    if d.system not in (f"{platform.machine()}-linux",):
        raise BadInput(f"{drv_path} is for {d.system}; this machine builds "
                       f"{platform.machine()}-linux")
    inputs = input_paths(d)
    store.realise(inputs)
    extra = sandbox.parse_sandbox_paths(opts.extra_sandbox_paths)
    conf = sandbox.read_nix_conf()
    store_sources = [p["source"] for p in extra + sandbox.parse_sandbox_paths(
        conf["sandbox-paths"] + " " + conf["extra-sandbox-paths"])
        if p["source"].startswith(store.STORE_DIR + "/")]
    closure = store.closure(inputs + store_sources)
    plan = sandbox.make_plan(d, drv_path, closure, cores=opts.cores,
                             extra_sandbox_paths=opts.extra_sandbox_paths,
                             no_sandbox=opts.no_sandbox, nix_conf=conf)
    missing = sandbox.check_sandbox_paths(plan)
    if missing:
        raise BadInput(f"sandbox path does not exist: {missing[0]} "
                       "(append '?' to make it optional)")
    hashes = [{"path": p, "hash": store.path_hash(p)} for p in closure]
    return d, plan, hashes


def default_output(drv_path: str) -> str:
    base = os.path.basename(drv_path)
    name = base[33:] if len(base) > 33 and base[32] == "-" else base
    return os.path.abspath(name[:-4] + ".nixrec" if name.endswith(".drv") else name + ".nixrec")


def header_for(drv_path, plan, hashes) -> dict:
    with open(drv_path, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    plan_d = plan.to_dict()
    return {"nixrec_version": __version__, "drv_path": drv_path, "drv_text": text,
            "plan": plan_d, "closure": hashes,
            "host": {"kernel": platform.release(), "arch": platform.machine(),
                     "system": platform.system()},
            "start_time": time.time()}


class _LogPump(threading.Thread):
    """Reads the pty master: the build log as nix-build streams it.

    At EOF (every copy of the pty closed) Nix SIGKILLs the builder (§2.2 step
    12); so does this, through the tracer.
    """

    def __init__(self, master, sink, on_eof):
        super().__init__(daemon=True)
        self.master, self.sink, self.on_eof = master, sink, on_eof
        self.bytes = 0

    def run(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            if not data:
                break
            self.bytes += len(data)
            if self.sink:
                self.sink(data)
        self.on_eof()


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


class Build:
    """One run of a plan's sandbox under the tracer: what record and replay share.

        b = Build(plan, workdir, emit, log=..., before=...)
        b.start()                 # sandbox up, builder seized, exec released
        state = b.run()           # "done", or "frozen" when `before` said so
        ...                       # (replay: attach a shell, then b.thaw(); b.run())
        b.stop()                  # kill what is left, reap, close the pty
    """

    def __init__(self, plan, workdir, emit, log=None, before=None):
        self.plan = plan
        self.workdir = workdir
        self.emit = emit
        self.log = log
        self.before = before
        self.interrupted = False
        self.lay = None
        self.tracer = None
        self.spawned = None
        self.pump = None
        self.exec_error = None
        self._master = None
        self._prev_int = None
        self.t0 = None

    def start(self) -> None:
        """Lay out the sandbox, start the builder, seize it, let it exec.

        Raises NixrecError (exit 3) for a sandbox or ptrace failure: a setup
        failure, reported as such and never as a build failure.
        """
        self.lay = sandbox.prepare_host(self.plan, os.path.join(self.workdir, "sandbox"))
        master, slave = os.openpty()
        tty.setraw(slave)            # §2.2 step 7: raw, so no LF -> CRLF
        self.tracer = Tracer(self.emit, cwd=self.plan.cwd,
                             output_rdev=os.fstat(slave).st_rdev, before=self.before)
        self.t0 = time.monotonic()
        try:
            self.spawned = sandbox.spawn(self.plan, self.lay, slave, seccomp.build_filter())
        except sandbox.SetupError as e:
            os.close(master)
            os.close(slave)
            raise NixrecError(f"sandbox setup failed: {e}", EXIT_HOST)
        os.close(slave)
        try:
            self.tracer.seize(self.spawned.builder_pid)
        except OSError as e:
            os.kill(self.spawned.builder_pid, signal.SIGKILL)
            self.spawned.reap_helper()
            os.close(master)
            raise HostUnsupported(f"cannot ptrace the builder: {e.strerror} (nixrec needs "
                                  "CAP_SYS_PTRACE or kernel.yama.ptrace_scope=0)")
        self._master = master
        self.pump = _LogPump(master, self.log, self.tracer.kill_build)
        self.pump.start()
        self._prev_int = signal.signal(signal.SIGINT, self._on_int)
        self.spawned.go()

    def _on_int(self, signum, frame):
        # Ctrl-C: kill the build; the loop then drains and the trace is closed.
        self.interrupted = True
        self.tracer.kill_build()

    def run(self) -> str:
        return self.tracer.run()

    def thaw(self) -> None:
        self.tracer.thaw()

    def stop(self) -> None:
        """Kill what is left of the build, reap every process, close the pty."""
        if self._prev_int is not None:
            signal.signal(signal.SIGINT, self._prev_int)
            self._prev_int = None
        self.tracer.drain()
        self.spawned.reap_helper()
        self.pump.join(timeout=5)
        os.close(self._master)
        self.exec_error = self.spawned.exec_error()

    @property
    def duration(self) -> float:
        return time.monotonic() - self.t0

    def remove_sandbox(self) -> None:
        shutil.rmtree(self.lay.workdir, ignore_errors=True)


def record(target: str, opts: RecordOptions) -> RecordResult:
    """Record one build end to end. Raises NixrecError for what is not a build failure."""
    check_host()
    drv_path = resolve_drv(target, opts.attr)
    d, plan, hashes = plan_for(drv_path, opts)
    out = os.path.abspath(opts.output or default_output(drv_path))
    workdir = out + ".d"
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    writer = TraceWriter(out, header_for(drv_path, plan, hashes))
    counts = {"events": 0, "refused": 0}
    roots = visible_roots(plan)

    def emit(ev):
        writer.append(ev)
        counts["events"] += 1
        if ev.errno is not None and is_refused(ev, roots):
            counts["refused"] += 1

    build = Build(plan, workdir, emit, log=opts.log)
    try:
        build.start()
    except NixrecError:
        writer.abandon()
        raise
    try:
        build.run()
    finally:
        build.stop()
    tracer = build.tracer
    outputs, output_error = _collect_outputs(plan, build.lay, workdir, tracer.builder_status)
    error = build.exec_error or output_error
    status, sig = _exit_of(tracer.builder_status, error, build.interrupted)
    summary = {"exit_status": status, "exit_signal": sig, "events": counts["events"],
               "processes": len(tracer.processes), "refused": counts["refused"],
               "duration": round(build.duration, 3), "stops": tracer.stops,
               "log_bytes": build.pump.bytes, "outputs": outputs, "error": error,
               "interrupted": build.interrupted}
    writer.close(summary, None)
    if not opts.keep_build_dir:
        build.remove_sandbox()
    return RecordResult(trace=out, drv_path=drv_path, exit_status=status, exit_signal=sig,
                        events=counts["events"], processes=len(tracer.processes),
                        refused=counts["refused"], duration=build.duration,
                        trace_bytes=os.path.getsize(out), outputs=outputs, error=error,
                        interrupted=build.interrupted,
                        build_dir=build.lay.build if opts.keep_build_dir else None)


def _exit_of(builder_status, error, interrupted):
    """-> (exit status for the user, signal name): 0 only for a clean build."""
    if builder_status is None:
        return 1, None
    kind, val = builder_status
    if kind == "signal":
        return 1, val
    if error or interrupted:
        return val or 1, None
    return val, None


def _collect_outputs(plan, lay, workdir, builder_status):
    """§2.8: move outputs out of the chroot to `<trace>.d/outputs/`; a missing
    output of a successful builder is a failure, as Nix reports it."""
    dest = os.path.join(workdir, "outputs")
    os.makedirs(dest, exist_ok=True)
    found, error = {}, None
    for name, path in sorted(plan.outputs.items()):
        src = lay.root + path
        if os.path.lexists(src):
            target = os.path.join(dest, os.path.basename(path))
            shutil.move(src, target)
            found[name] = target
        elif builder_status == ("exit", 0) and error is None:
            error = (f"builder failed to produce output path for output '{name}' "
                     f"at '{path}'")
    return found, error
