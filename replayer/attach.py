"""Run a command or a shell inside a stopped build (`--exec CMD`, `--shell`).

The command joins the namespaces of the stopped process (setns), takes its
root and working directory, its uid/gid and its environment, so it sees the
sandbox exactly as that process does at the stop. The build itself stays
frozen by the tracer meanwhile; the command is not traced.

    shell = find_shell(plan)                  # None: say how to get one
    status = run_in(live_pid, [shell, "-c", "ls"], uid, gid)
"""

import os
import signal
import sys

from nixrec.recorder.sandbox import linux
from nixrec.recorder.errors import HostUnsupported

# The user namespace first: joining it grants the capabilities that joining
# the others (owned by it) needs. cgroup and time are not unshared by the sandbox.
NAMESPACES = ("user", "mnt", "pid", "net", "uts", "ipc")
NO_SHELL = ("no shell among the build's inputs to run it with: add one to the "
            "derivation (e.g. a static busybox, whose bin/sh has every applet), or "
            "record with --extra-sandbox-paths /bin/sh=/path/to/a/static/sh")
# Signals Python ignores or handles itself, and the terminal ones nixrec
# ignores while the shell runs: a command must start with the defaults.
_RESET = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN,
          signal.SIGTTOU) + linux.PYTHON_IGNORED


def find_shell(plan):
    """A `sh` the sandbox contains (its path inside the sandbox), or None.

    First an input's bin/sh (a busybox or bash in the closure), then /bin/sh
    and the builder itself when a sandbox path (extra-sandbox-paths) brings
    them in from the host.
    """
    candidates = [p + "/bin/sh" for p in plan.inputs or ()] + ["/bin/sh"]
    if os.path.basename(plan.builder or "") in ("sh", "bash", "dash", "ash"):
        candidates.append(plan.builder)
    for path in candidates:
        host = _host_path(plan, path)
        if host and os.access(host, os.X_OK):
            return path
    return None


def _host_path(plan, path):
    """Where the file at `path` in the sandbox comes from on the host."""
    for p in plan.inputs or ():
        if path == p or path.startswith(p + "/"):
            return path
    for sp in plan.sandbox_paths or ():
        target = sp["target"].rstrip("/") or "/"
        if path == target or path.startswith(target + "/"):
            return sp["source"] + path[len(target):]
    return None


def read_environ(live_pid) -> dict:
    """The environment the process was started with (what exec gave it)."""
    try:
        with open(f"/proc/{live_pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[os.fsdecode(k)] = os.fsdecode(v)
    return env


def command_env(live_pid, shell, interactive) -> dict:
    """The stopped process's environment, with the shell's directory last in
    PATH: a builder starts with PATH=/path-not-set and sets its own PATH as a
    shell variable, which /proc/PID/environ does not show."""
    env = read_environ(live_pid)
    bindir = os.path.dirname(shell)
    path = env.get("PATH", "")
    if bindir not in path.split(":"):
        env["PATH"] = f"{path}:{bindir}" if path else bindir
    if interactive:
        env["PS1"] = "[nixrec replay] $PWD \\$ "
    return env


# stdenv's runPhase writes `@nix {"action":"setPhase",...}` to $NIX_LOG_FD (2
# in a build), which Nix reads and never shows: in the shell at the stop it
# goes to a /dev/null fd instead, so the terminal shows the log nix-build shows.
_LOG_FD_NOWHERE = ('if [[ -n "${NIX_LOG_FD-}" ]]; then exec {NIX_LOG_FD}>/dev/null; '
                   'export NIX_LOG_FD; fi\n')


def state_command(bash, script, exec_cmd, interactive):
    """-> (argv, fd): `bash` given `script` (the builder's shell state,
    shellstate.py) in a memfd it inherits, then exec_cmd or an interactive
    shell. The caller closes fd after the command.

    With --exec the state and the command are one script file that bash
    runs, as the builder runs its own (`bash -c` differs: bash 5.2 says
    "pop_var_context: head of shell_variables not a function context" when
    errexit ends it inside a function called through eval, runPhase's way)."""
    fd = os.memfd_create("nixrec-shell-state", 0)
    script += _LOG_FD_NOWHERE
    if interactive:
        # The rcfile is the state, then the prompt: the shell is left at it.
        script += "PS1='[nixrec replay] $PWD \\$ '\n"
    else:
        script += exec_cmd + "\n"
    os.write(fd, script.encode("utf-8", "surrogateescape"))
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    src = f"/proc/self/fd/{fd}"
    if interactive:
        return [bash, "--noprofile", "--rcfile", src, "-i"], fd
    return [bash, "--noprofile", "--norc", src], fd


def _open_namespaces(live_pid):
    """fds of the process's namespaces that differ from ours (joining our own
    fails, and a fixed-output build shares the host network namespace)."""
    fds = []
    for name in NAMESPACES:
        theirs = f"/proc/{live_pid}/ns/{name}"
        try:
            if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
            fds.append((name, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
        except OSError as e:
            raise HostUnsupported(f"cannot open {theirs}: {e.strerror}")
    return fds


def run_in(live_pid, argv, uid, gid, env, interactive=False) -> int:
    """Run argv inside the stopped process's sandbox; -> its exit status
    (128+N for signal N). Raises HostUnsupported when it cannot get in."""
    ns = _open_namespaces(live_pid)
    try:
        root = os.open(f"/proc/{live_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        cwd = os.open(f"/proc/{live_pid}/cwd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise HostUnsupported(f"cannot open the stopped process's root or cwd: {e.strerror}")
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = _quiet_terminal_signals() if interactive else None
    tty_pgrp = _foreground(0) if interactive else None
    try:
        pid = os.fork()
        if pid == 0:
            _enter_and_run(ns, root, cwd, uid, gid, argv, env, err_w)
        os.close(err_w)
        status = _wait(pid)
        msg = _read_all(err_r)
    finally:
        for _, fd in ns:
            os.close(fd)
        for fd in (root, cwd, err_r):
            os.close(fd)
        if interactive:
            _restore_terminal(tty_pgrp, saved)
    if msg:
        raise HostUnsupported(f"cannot enter the sandbox: {msg.decode(errors='replace')}")
    return status


def _enter_and_run(ns, root, cwd, uid, gid, argv, env, err_w):
    """The forked child: join, chroot, drop to the build user, fork the command
    (a PID namespace applies to children only) and exit with its status."""
    step = "setns"
    try:
        for name, fd in ns:
            step = f"joining the {name} namespace"
            linux.setns(fd, 0)
        step = "chroot"
        os.fchdir(root)
        os.chroot(".")
        os.fchdir(cwd)
        step = "setgid/setuid"
        os.setgid(gid)
        os.setuid(uid)
        os.umask(0o022)
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        step = "fork"
        child = os.fork()
    except OSError as e:
        os.write(err_w, f"{step}: {e.strerror or e}".encode())
        os._exit(125)
    if child == 0:
        linux.default_signals(_RESET)
        try:
            os.execve(argv[0], argv, env)
        except OSError as e:
            os.write(err_w, f"executing {argv[0]}: {e.strerror}".encode())
            os._exit(127)
    os.close(err_w)
    os._exit(_wait(child))


def _wait(pid) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _read_all(fd) -> bytes:
    out = b""
    while True:
        b = os.read(fd, 4096)
        if not b:
            return out
        out += b


def _quiet_terminal_signals():
    """While a shell owns the terminal, Ctrl-C is for it, not for nixrec (whose
    own SIGINT handler would kill the build)."""
    return {s: signal.signal(s, signal.SIG_IGN)
            for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTTOU)}


def _foreground(fd):
    try:
        return os.tcgetpgrp(fd)
    except OSError:
        return None


def _restore_terminal(pgrp, saved):
    # An interactive shell makes its own process group the terminal's
    # foreground; give the terminal back to nixrec (SIGTTOU still ignored).
    if pgrp is not None:
        try:
            os.tcsetpgrp(0, pgrp)
        except OSError:
            pass
    for s, h in (saved or {}).items():
        signal.signal(s, h)
