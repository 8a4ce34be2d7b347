"""Build: one run of a sandbox plan under the tracer, what `record` and
`replay` share: the sandbox laid out, the builder started and seized, the
build log pumped from its pty, the tracer loop run (and frozen, for replay),
CPUs kept awake meanwhile, and everything reaped and closed at the end.

session.py (record) and replayer/session.py (replay) drive it.
"""

import os
import signal
import threading
import time
import tty

from nixrec.recorder.errors import EXIT_HOST, HostUnsupported, NixrecError
from nixrec.recorder.sandbox import launch, linux, steps as sandbox_steps
from nixrec.recorder.trace import predict, seccomp, syscalls
from nixrec.recorder.trace.tracer import Tracer


class _LogPump(threading.Thread):
    """Reads the pty master: the build log as nix-build streams it.

    At EOF (every copy of the pty closed) Nix SIGKILLs the builder (§2.2 step
    12); so does this, through the tracer.
    """

    def __init__(self, master, sink, on_eof):
        super().__init__(daemon=True)
        self.master, self.sink, self.on_eof = master, sink, on_eof
        self.bytes = 0
        self.nix_lines = NixLines()

    def run(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            if not data:
                break
            self.bytes += len(data)
            shown = self.nix_lines.feed(data)
            if self.sink and shown:
                self.sink(shown)
        if self.sink and self.nix_lines.held:
            self.sink(self.nix_lines.held)
        self.on_eof()


class NixLines:
    """Drops the builder's `@nix ...` log lines, as Nix does.

    Nix reads every line of the log that starts with "@nix " as a message to
    itself (stdenv's `@nix {"action":"setPhase",...}` on $NIX_LOG_FD) and
    never shows it; the trace keeps the write all the same. Only the start of
    a line that may still become "@nix " is held back, so a prompt without a
    newline shows at once.
    """

    PREFIX = b"@nix "

    def __init__(self):
        self.held = b""             # the start of a line, maybe "@nix "
        self.dropping = False       # inside an @nix line, up to its newline
        self.at_start = True

    def feed(self, data: bytes) -> bytes:
        data, self.held = self.held + data, b""
        out, i, n = bytearray(), 0, len(data)
        while i < n:
            if self.dropping:
                j = data.find(b"\n", i)
                if j < 0:
                    break
                i, self.dropping, self.at_start = j + 1, False, True
                continue
            if self.at_start:
                head = data[i:i + len(self.PREFIX)]
                if head == self.PREFIX:
                    self.dropping = True
                    continue
                if self.PREFIX.startswith(head):
                    self.held = head       # too short to tell: wait for more
                    break
                self.at_start = False
            j = data.find(b"\n", i)
            if j < 0:
                out += data[i:]
                break
            out += data[i:j + 1]
            i, self.at_start = j + 1, True
        return bytes(out)


# Signals that stop a recording cleanly (the build is killed, the trace closed).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Build:
    """One run of a plan's sandbox under the tracer: what record and replay share.

        b = Build(plan, workdir, emit, log=..., before=...)
        b.start()                 # sandbox up, builder seized, exec released
        state = b.run()           # "done", or "frozen" when `before` said so
        ...                       # (replay: attach a shell, then b.thaw(); b.run())
        b.stop()                  # kill what is left, reap, close the pty
    """

    def __init__(self, plan, workdir, emit, log=None, before=None, calls=None, ran=None):
        self.plan = plan
        self.calls = syscalls.table_of(calls)   # the calls the filter stops on
        self.workdir = workdir
        self.emit = emit
        self.log = log
        self.before = before
        self.ran = ran
        self.interrupted = False
        self.interrupt_signal = None # the first stop signal (SIGINT, ...), its number
        self.eof_kill = False        # killed because every copy of the pty was closed
        self.lay = None
        self.tracer = None
        self.spawned = None
        self.pump = None
        self.exec_error = None
        self._master = None
        self._prev_int = None
        self.t0 = None
        self.low_latency = False     # CPUs were kept awake while it ran (_hold)
        self._latency_fd = None

    def start(self) -> None:
        """Lay out the sandbox, start the builder, seize it, let it exec.

        Raises NixrecError (exit 3) for a sandbox or ptrace failure: a setup
        failure, reported as such and never as a build failure.
        """
        self.lay = sandbox_steps.prepare_host(self.plan, os.path.join(self.workdir, "sandbox"))
        master, slave = os.openpty()
        tty.setraw(slave)            # §2.2 step 7: raw, so no LF -> CRLF
        trees = sandbox_steps.fixed_trees(self.plan)
        # No fixed tree (--no-sandbox): nothing to answer at entry, no lookup
        # should pay for asking.
        predictor = predict.Predictor(trees, sandbox_steps.build_ids(self.plan)) if trees else None
        self.tracer = Tracer(self.emit, cwd=self.plan.cwd,
                             output_rdev=os.fstat(slave).st_rdev, before=self.before,
                             predictor=predictor, ran=self.ran)
        self.t0 = time.monotonic()
        try:
            self.spawned = launch.spawn(self.plan, self.lay, slave, seccomp.build_filter(self.calls))
        except launch.SetupError as e:
            os.close(master)
            os.close(slave)
            advice = ""
            if str(e).startswith("creating the namespaces"):
                # check_host saw them enabled: a container's policy (seccomp,
                # AppArmor) refuses them to this process.
                advice = (" (user namespaces are refused to nixrec here, as to Nix's "
                          "sandbox: allow them, or record outside this container)")
            raise NixrecError(f"sandbox setup failed: {e}{advice}", EXIT_HOST)
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
        self.pump = _LogPump(master, self.log, self._on_eof)
        self.pump.start()
        self._prev_int = {sig: signal.signal(sig, self._on_int) for sig in _STOP_SIGNALS}
        self.spawned.go()

    def _on_eof(self):
        # §2.2 step 12: Nix SIGKILLs the builder at pty EOF. If the builder
        # had not exited yet, that kill is what ends it (`exec >/dev/null 2>&1`).
        # An interrupt's kill closes the pty too: that EOF is not the
        # builder's doing (issue 23: `why` blamed its output redirection).
        self.eof_kill = self.tracer.builder_status is None and not self.interrupted
        self.tracer.kill_build()

    def _on_int(self, signum, frame):
        # Ctrl-C (or SIGTERM, SIGHUP): kill the build; the loop then drains
        # and the trace is closed, so an interrupted recording stays whole.
        if self.interrupt_signal is None:
            self.interrupt_signal = signum
        self.interrupted = True
        self.tracer.kill_build()

    def run(self) -> str:
        """Trace until the build is done, or frozen (replay's stop: a shell
        may look at it for as long as the user likes; no CPU is kept awake
        meanwhile)."""
        self._hold()
        try:
            return self.tracer.run()
        finally:
            self._release()

    def thaw(self) -> None:
        self._hold()
        self.tracer.thaw()

    # Idle CPUs kept polling while the tracer runs (linux.hold_cpu_latency):
    # the build and the tracer wake each other at every traced call, and
    # these wake-ups are most of what tracing costs (docs/performance.md,
    # sixth pass). NIXREC_LOW_LATENCY=0 lets CPUs idle as usual.
    def _hold(self) -> None:
        if self._latency_fd is None and os.environ.get("NIXREC_LOW_LATENCY", "1") != "0":
            self._latency_fd = linux.hold_cpu_latency(0)
            self.low_latency = self.low_latency or self._latency_fd is not None

    def _release(self) -> None:
        if self._latency_fd is not None:
            os.close(self._latency_fd)
            self._latency_fd = None

    def stop(self) -> None:
        """Kill what is left of the build, reap every process, close the pty."""
        self._release()
        if self._prev_int is not None:
            for sig, handler in self._prev_int.items():
                signal.signal(sig, handler)
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
        self.lay.remove()
