"""Starting the builder: the namespaces, Nix's uid/gid maps, then the builder
as PID 1, stopped before its exec until the tracer has seized it
(../shared/reference/nix-sandbox.md §2.2 steps 8-10).

The sandbox's contents and setup steps are plan.py's and steps.py's; this module owns the
processes and the pipes between them.
"""

import os
import signal

from nixrec.recorder.sandbox import linux
from nixrec.recorder.sandbox.plan import SandboxPlan
from nixrec.recorder.sandbox.steps import Layout, build_ids, enter


class Spawned:
    """The two processes of a sandbox start: the helper that made the namespaces
    (a child of nixrec) and the builder (PID 1 inside, stopped before exec)."""

    def __init__(self, helper_pid, builder_pid, go_fd, err_fd):
        self.helper_pid = helper_pid
        self.builder_pid = builder_pid
        self._go_fd = go_fd
        self._err_fd = err_fd

    def go(self) -> None:
        """Let the builder load its seccomp filter and exec (after the tracer seized it)."""
        os.write(self._go_fd, b"G")
        os.close(self._go_fd)

    def exec_error(self):
        """After the build: the builder's exec failure, if any (None if it exec'd)."""
        msg = _read_all(self._err_fd)
        os.close(self._err_fd)
        return msg.decode(errors="replace") or None

    def reap_helper(self) -> None:
        try:
            os.waitpid(self.helper_pid, 0)
        except ChildProcessError:
            pass


class SetupError(Exception):
    """The sandbox could not be set up (reported as such, not as a build failure)."""


def _read_all(fd) -> bytes:
    out = b""
    while True:
        try:
            b = os.read(fd, 65536)
        except OSError:
            break
        if not b:
            break
        out += b
    return out


def _read_line(fd) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        b = os.read(fd, 1)
        if not b:
            break
        out += b
    return out


def spawn(plan: SandboxPlan, lay: Layout, pty_slave: int, seccomp_prog: bytes) -> Spawned:
    """§2.2 step 8-10: namespaces, uid/gid maps, then the builder as PID 1.

    The helper unshares the namespaces (a PID namespace takes effect for its
    children), the parent writes the single-line uid/gid maps like Nix, and the
    helper forks the builder, which sets up the chroot and waits for `go`.
    Raises SetupError with the step that failed.
    """
    flags = (linux.CLONE_NEWUSER | linux.CLONE_NEWNS | linux.CLONE_NEWPID
             | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)
    if plan.network:
        flags |= linux.CLONE_NEWNET
    to_parent_r, to_parent_w = os.pipe()        # helper/builder -> nixrec
    go_r, go_w = os.pipe()                      # nixrec -> builder: "G"
    maps_r, maps_w = os.pipe()                  # nixrec -> helper: maps written
    err_r, err_w = os.pipe2(os.O_CLOEXEC)        # builder -> nixrec: exec error
    helper = os.fork()
    if helper == 0:
        _helper_main(plan, lay, pty_slave, seccomp_prog, flags,
                     to_parent_w, maps_r, go_r, err_w, (to_parent_r, go_w, maps_w, err_r))
    for fd in (to_parent_w, go_r, maps_r, err_w):
        os.close(fd)
    try:
        line = _read_line(to_parent_r)
        if line != b"U\n":
            raise SetupError(_setup_message(line, "creating the namespaces"))
        _write_maps(helper, plan)
        os.write(maps_w, b"M")
        builder = started(lambda: _read_line(to_parent_r))
    except SetupError:
        os.close(go_w)
        os.waitpid(helper, 0)
        raise
    finally:
        os.close(to_parent_r)
        os.close(maps_w)
    return Spawned(helper, builder, go_w, err_r)


def started(read_line) -> int:
    """The builder's host pid, once the helper has said it (`B<pid>`) and the
    builder that it is set up (`R`). Both write to one pipe, from two
    processes: on a loaded machine the builder's line can come first (the
    helper not yet rescheduled after its fork). An `E` line is the builder's
    setup error; end of file, a process that died. Raises SetupError."""
    builder, ready = None, False
    while builder is None or not ready:
        line = read_line()
        if line.startswith(b"B") and builder is None:
            builder = int(line[1:])
        elif line == b"R\n" and not ready:
            ready = True
        else:
            # Only the builder writes E lines, from its setup.
            step = "starting the builder" if builder is None and line[:1] != b"E" \
                else "setting up the sandbox"
            raise SetupError(_setup_message(line, step))
    return builder


def _setup_message(line: bytes, step: str) -> str:
    text = line[1:].decode(errors="replace").strip() if line[:1] == b"E" else ""
    return f"{step}: {text or 'the sandbox helper exited early'}"


def _write_maps(pid: int, plan: SandboxPlan) -> None:
    """§2.2 step 9: one map line each, setgroups denied, as Nix writes them."""
    host_uid, host_gid = build_ids(plan)
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"{plan.uid} {host_uid} 1")
    with open(f"/proc/{pid}/setgroups", "w") as f:
        f.write("deny")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"{plan.gid} {host_gid} 1")


def _helper_main(plan, lay, pty_slave, prog, flags, to_parent, maps_r, go_r, err_w, close):
    """The forked helper: never returns. Exits with the builder's status."""
    try:
        for fd in close:
            os.close(fd)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        linux.unshare(flags)
    except OSError as e:
        os.write(to_parent, f"E{e.strerror or e}\n".encode())
        os._exit(127)
    os.write(to_parent, b"U\n")
    if os.read(maps_r, 1) != b"M":
        os._exit(127)
    os.close(maps_r)
    builder = os.fork()
    if builder == 0:
        _builder_main(plan, lay, pty_slave, prog, to_parent, go_r, err_w)
    os.write(to_parent, f"B{builder}\n".encode())
    for fd in (to_parent, go_r, err_w, pty_slave):
        os.close(fd)
    _, status = os.waitpid(builder, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _builder_main(plan, lay, pty_slave, prog, to_parent, go_r, err_w):
    """PID 1 of the sandbox: commonChildInit, runChild's steps, then exec."""
    try:
        os.setsid()
        os.dup2(pty_slave, 2)
        os.dup2(pty_slave, 1)
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        enter(plan, lay)
        keep = {0, 1, 2, to_parent, go_r, err_w}
        for fd in _open_fds():
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
    except Exception as e:  # noqa: BLE001 - any failure here is a setup failure
        os.write(to_parent, f"E{type(e).__name__}: {e}\n".encode(errors="replace"))
        os._exit(127)
    os.write(to_parent, b"R\n")
    os.close(to_parent)
    if os.read(go_r, 1) != b"G":
        os._exit(127)
    os.close(go_r)
    env = {k: v for k, v in plan.env}
    # Nix 2.8's builder inherits its caller's dispositions (verified: SigIgn
    # 0 from a shell, SIGHUP ignored under nohup): only Python's own go.
    linux.default_signals()
    try:
        linux.seccomp_install(prog)
        os.execve(plan.builder, plan.argv, env)
    except OSError as e:
        # Nix: "executing '<builder>': No such file or directory".
        os.write(err_w, f"executing '{plan.builder}': {e.strerror}".encode(errors="replace"))
        os._exit(1)


def _open_fds():
    try:
        return [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))
