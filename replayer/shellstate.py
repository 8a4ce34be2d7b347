"""The stopped builder's shell state, for a shell at a phase stop (--until-phase).

A stdenv build keeps what its phases set up (variables, the phase functions,
hooks, shell options) in the memory of one bash process; /proc/PID/environ
shows none of it. At a replay's stop that bash is frozen in a seccomp stop,
at a call's entry. nixrec asks *a copy of it* to print its state:

 1. it turns the frozen call into a fork(2) (the registers' syscall number,
    at the seccomp stop), lets the kernel run it, then puts the frozen bash
    back exactly where it was: the same call's entry, the same registers, in
    a seccomp stop again (re-executing the `syscall` instruction). The build
    is untouched; `--continue` goes on from there.
 2. In the child (a copy of the bash, with all its memory), it calls bash's
    own `parse_and_execute(string, name, flags)` (an exported symbol of bash:
    `nm -D`), with the registers set up as the x86_64 ABI wants, on the
    child's stack, and a return address of 0: when the call returns, the
    child faults at 0 and is killed. The string runs
    `declare -p; declare -f; set +o; shopt -p` into a file in the build
    directory, which nixrec reads and removes at once.

That is option (a) of issue 18, chosen over re-sourcing `$stdenv/setup`
(option (b), kept as the fallback, `resourced()`), because only the running
bash knows what the earlier phases changed: `sourceRoot` set by unpackPhase,
variables set by hooks, `cd`s, functions a hook defined. Measured: 16-41 ms
for the capture on the calc fixture at installPhase, 19 ms on GNU hello at
checkPhase, up to 257 ms when the machine was busiest (docs/replay.md).

    state = capture(live_pid, build_dir)       # -> State, or raises Unavailable
    state.script(interactive)                  # the text the shell at the stop sources
"""

import os
import re
import secrets
import signal
import struct
import time

from nixrec.recorder.sandbox import linux

SYS_FORK = 57                       # x86_64 (the syscall table is that ABI's)
_SYSCALL_INSN = 2                   # `syscall` is 0f 05
# parse_and_execute's flags (bash's builtins/common.h, the same since bash 4):
# not interactive, no history, do not free the string (it is on the stack).
_SEVAL = 0x001 | 0x004 | 0x008
_TIMEOUT = 10.0                     # s: a bash that does not come back is killed
_SYM = "parse_and_execute"

# Variables bash owns (readonly, or recomputed on each use, or describing the
# running shell itself): assigning them in another bash fails or lies.
SPECIAL = frozenset("""BASH BASHOPTS BASHPID BASH_ALIASES BASH_ARGC BASH_ARGV BASH_ARGV0
BASH_CMDS BASH_COMMAND BASH_EXECUTION_STRING BASH_LINENO BASH_LOADABLES_PATH BASH_REMATCH
BASH_SOURCE BASH_SUBSHELL BASH_VERSINFO BASH_VERSION COMP_WORDBREAKS DIRSTACK
EPOCHREALTIME EPOCHSECONDS EUID FUNCNAME GROUPS HISTCMD HOSTTYPE LINENO MACHTYPE OSTYPE
PIPESTATUS PPID RANDOM SECONDS SHELLOPTS SHLVL SRANDOM UID _""".split())
# Options that describe how the shell runs rather than what the build set:
# an interactive shell keeps its own (errexit would end it at the first
# failing command; the command given to --exec keeps the build's).
_INTERACTIVE_OWN = ("errexit", "history", "monitor", "emacs", "vi", "interactive-comments",
                    "histexpand", "onecmd")
_SHOPT_FIXED = ("login_shell", "restricted_shell")
_DECL = re.compile(r"^declare -(\S+) ([A-Za-z_][A-Za-z0-9_]*)")
_FUNC = re.compile(r"^(\S+) \(\) $", re.M)          # declare -f: "name () " opens one


class Unavailable(Exception):
    """The state cannot be taken from this process (why, for one line)."""


class State:
    """What the stopped bash printed: its variables, functions and options."""

    def __init__(self, variables, functions, options, took):
        self.variables = variables      # [declare -p entry text]
        self.functions = functions      # declare -f output
        self.options = options          # [set -o/+o, shopt -s/-u lines]
        self.took = took                # seconds the capture took

    def names(self):
        return [m.group(2) for m in (_DECL.match(v) for v in self.variables) if m]

    def function_names(self):
        return _FUNC.findall(self.functions)

    def script(self, interactive: bool, environ_names=(), setup=None) -> str:
        """Bash code that gives a new bash this state. Variables the process
        was exec'd with but no longer has are unset; options last, so that
        an errexit of the build's does not stop the script itself.

        With `setup` (the `$stdenv/setup` the builder sourced), that file is
        sourced first, and only the functions that differ from its own are
        defined again: the others keep their place in it, so bash reports an
        error in them as `$stdenv/setup: line 170`, as in the build, not as a
        line of this script."""
        have = set(self.names())
        out = ["# the builder's shell state at the stop (nixrec replay, docs/replay.md)"]
        if setup:
            out.append(_over_setup(setup, have))
        out += [f"unset -v {n}" for n in sorted(environ_names)
                if n not in have and n not in SPECIAL and _NAME.match(n)]
        out += self.variables
        out.append(_changed_functions(self.functions, self.function_names())
                   if setup else self.functions)
        for line in self.options:
            word = line.split()[-1]
            if interactive and word in _INTERACTIVE_OWN:
                continue
            out.append(line)
        return "\n".join(out) + "\n"


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _over_setup(setup, names) -> str:
    """Source the setup quietly (its errexit off: `|| true`), drop its EXIT
    trap, then unset what it made that the stopped shell does not have."""
    keep = " ".join(sorted(set(names) | SPECIAL))
    return "\n".join([
        f"source {_quote(setup)} >/dev/null 2>&1 </dev/null || true",
        "trap - EXIT; set +euo pipefail",
        f"__nixrec_keep={_quote(' ' + keep + ' ')}",
        "for __nixrec_v in $(compgen -v); do case $__nixrec_keep in "
        '*" $__nixrec_v "*) ;; *) unset -v "$__nixrec_v" 2>/dev/null;; esac; done',
        "unset -v __nixrec_keep __nixrec_v"])


def _changed_functions(text, names) -> str:
    """Define again only the functions whose text differs from the setup's
    (or that it lacks); unset those the stopped shell does not have. Each
    text travels in a quoted here-document, compared as `declare -f` prints."""
    starts = [m.start() for m in _FUNC.finditer(text)] + [len(text)]
    token = f"__NIXREC_{secrets.token_hex(4)}__"
    out = ['__nixrec_f() { [[ "$(declare -f -- "$1" 2>/dev/null)" == "$2" ]] || '
           'eval "$2"; }']
    for name, a, b in zip(names, starts, starts[1:]):
        out += [f"IFS= read -r -d '' __nixrec_t <<'{token}'", text[a:b].rstrip("\n"), token,
                f'__nixrec_f {name} "${{__nixrec_t%$\'\\n\'}}"']
    keep = _quote(" " + " ".join(names) + " ")
    out += ["for __nixrec_v in $(compgen -A function); do case " + keep + " in "
            '*" $__nixrec_v "*) ;; *) unset -f "$__nixrec_v";; esac; done',
            "unset -f __nixrec_f; unset -v __nixrec_t __nixrec_v"]
    return "\n".join(out)


# --- the capture ---------------------------------------------------------------------

def capture(pid: int, build_dir: str) -> State:
    """The shell state of the bash frozen at its seccomp stop `pid`."""
    t0 = time.monotonic()
    addr = _function_address(pid, _SYM)
    token = secrets.token_hex(6)
    name = f".nixrec-shell-state-{token}"
    inside = f"{build_dir.rstrip('/')}/{name}"
    host = f"/proc/{pid}/root{inside}"
    marks = {k: f"__nixrec_{token}_{k}__" for k in "VFOE"}
    code = (f"{{ echo; echo {marks['V']}; declare -p; echo {marks['F']}; declare -f; "
            f"echo {marks['O']}; set +o; shopt -p; echo {marks['E']}; }} >{inside} 2>/dev/null")
    child = _fork_frozen(pid)
    try:
        _call(child, addr, code)
        with open(host, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise Unavailable(f"the copy of the shell wrote no state ({e.strerror})") from None
    finally:
        _kill(child)
        try:
            os.unlink(host)
        except OSError:
            pass
    return _parse(raw.decode("utf-8", "surrogateescape"), marks, time.monotonic() - t0)


def _parse(text, marks, took) -> State:
    parts = {}
    for k in "VFOE":
        i = text.find(f"\n{marks[k]}\n")
        if i < 0:
            raise Unavailable("the copy of the shell did not finish printing its state")
        parts[k] = i
    variables = _entries(text[parts["V"] + len(marks["V"]) + 2:parts["F"]])
    functions = text[parts["F"] + len(marks["F"]) + 2:parts["O"]]
    options = [ln for ln in text[parts["O"] + len(marks["O"]) + 2:parts["E"]].splitlines()
               if ln.startswith(("set ", "shopt ")) and ln.split()[-1] not in _SHOPT_FIXED]
    return State(variables, functions, options, took)


def _entries(text) -> list:
    """declare -p output -> one entry per variable (a value may hold newlines),
    without bash's own variables and the readonly ones."""
    entries, cur = [], None
    for line in text.split("\n"):
        m = _DECL.match(line)
        if m:
            cur = [line, m.group(1), m.group(2)]
            entries.append(cur)
        elif cur is not None:
            cur[0] += "\n" + line
    return [e[0] for e in entries if "r" not in e[1] and e[2] not in SPECIAL]


# --- ptrace: a fork of the frozen process ---------------------------------------------

def _fork_frozen(pid: int) -> int:
    """Make the process frozen at a seccomp stop fork; put it back at the
    same stop. -> the child's pid (stopped, traced by us)."""
    op, nr, _ = linux.get_syscall_info(pid)
    if op != linux.PTRACE_SYSCALL_INFO_SECCOMP:
        raise Unavailable("the process is not stopped at a call's entry")
    saved = linux.get_regs(pid)
    regs = linux.copy_regs(saved)
    regs.orig_rax = SYS_FORK
    linux.set_regs(pid, regs)
    linux.ptrace(linux.PTRACE_SYSCALL, pid)
    status = _wait_stop(pid)
    child = None
    if status >> 8 == signal.SIGTRAP | (linux.PTRACE_EVENT_FORK << 8):
        child = linux.geteventmsg(pid)
        linux.ptrace(linux.PTRACE_SYSCALL, pid)
        status = _wait_stop(pid)
    # At the fork's exit (or a fork that failed: no fork event): back
    # before the same call, whatever happened.
    if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP | 0x80):
        if child is not None:
            _kill(child)
        raise Unavailable(f"the frozen process did not come back from the fork ({status:#x})")
    _back_to_entry(pid, saved, nr)
    if child is None:
        raise Unavailable("the injected fork failed")
    _wait_stop(child)               # its first stop (auto-attached, as a fork of a tracee)
    return child


def _back_to_entry(pid, saved, nr) -> None:
    """From a syscall-exit stop to the seccomp stop the replay froze it in:
    re-executing `syscall` with the saved registers reaches it again."""
    regs = linux.copy_regs(saved)
    regs.rip -= _SYSCALL_INSN
    regs.rax = saved.orig_rax
    linux.set_regs(pid, regs)
    linux.ptrace(linux.PTRACE_CONT, pid)
    status = _wait_stop(pid)
    if status >> 8 != signal.SIGTRAP | (linux.PTRACE_EVENT_SECCOMP << 8) \
            or linux.get_syscall_info(pid)[1] != nr:
        raise Unavailable(f"the frozen process is not back at its call ({status:#x})")


def _call(child: int, addr: int, code: str) -> None:
    """Run parse_and_execute(code, "nixrec", flags) in the child; return when
    the call has returned (a fault at address 0) or the child died."""
    regs = linux.get_regs(child)
    text = code.encode() + b"\0"
    src = b"nixrec\0"
    # Below the red zone (128 bytes) of the frame the child stopped in: the
    # strings, then the new stack, 16-byte aligned before the return address.
    base = (regs.rsp - 128 - 4096 - len(text) - len(src)) & ~0xF
    _write_mem(child, base, text + src)
    sp = (base - 256) & ~0xF
    sp -= 8
    _write_mem(child, sp, struct.pack("<Q", 0))
    regs.rdi, regs.rsi, regs.rdx = base, base + len(text), _SEVAL
    regs.rip, regs.rsp, regs.rax = addr, sp, 0
    regs.orig_rax = 0xFFFFFFFFFFFFFFFF      # no syscall restart on the way out
    linux.set_regs(child, regs)
    sig = 0
    deadline = time.monotonic() + _TIMEOUT
    while True:
        linux.ptrace(linux.PTRACE_CONT, child, 0, sig)
        status = _wait_stop(child, deadline)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return                  # it exited on its own (e.g. errexit): the file says
        stop = os.WSTOPSIG(status)
        if stop == signal.SIGSEGV and linux.get_regs(child).rip == 0:
            return                  # returned to 0: done
        if stop == signal.SIGSEGV:
            raise Unavailable("the copy of the shell crashed while printing its state")
        # Seccomp stops (its calls are traced like the build's) and other
        # events: let them run; pass real signals on.
        sig = stop if status >> 16 == 0 and stop not in (signal.SIGTRAP, signal.SIGSTOP) else 0


def _wait_stop(pid: int, deadline=None) -> int:
    deadline = deadline or time.monotonic() + _TIMEOUT
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG | 0x40000000)    # __WALL
        except ChildProcessError:
            raise Unavailable("the process went away") from None
        if got == pid:
            return status
        if time.monotonic() > deadline:
            raise Unavailable("the shell did not answer in time")
        time.sleep(0.0005)


def _kill(child: int) -> None:
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        while True:
            got, status = os.waitpid(child, 0x40000000)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                return
    except ChildProcessError:
        return


def _write_mem(pid: int, addr: int, data: bytes) -> None:
    fd = os.open(f"/proc/{pid}/mem", os.O_WRONLY)
    try:
        if os.pwrite(fd, data, addr) != len(data):
            raise Unavailable("cannot write the call's arguments into the shell")
    except OSError as e:
        raise Unavailable(f"cannot write into the shell's memory: {e.strerror}") from None
    finally:
        os.close(fd)


# --- where parse_and_execute is -----------------------------------------------------

def _function_address(pid: int, name: str) -> int:
    """The run-time address of an exported function of the process's program."""
    exe = f"/proc/{pid}/exe"
    try:
        st = os.stat(exe)
        with open(exe, "rb") as f:
            elf = f.read()
    except OSError as e:
        raise Unavailable(f"cannot read the program of the process: {e.strerror}") from None
    value, pie = _dynsym(elf, name)
    if not pie:
        return value
    return _load_base(pid, st) + value


def _dynsym(elf: bytes, name: str):
    """-> (st_value, is PIE) of a defined dynamic symbol; Unavailable if none."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise Unavailable("the program is not a 64-bit little-endian ELF file")
    e_type = struct.unpack_from("<H", elf, 16)[0]
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize)
                for i in range(shnum)]
    want = name.encode()
    for sh in sections:
        if sh[1] != 11:             # SHT_DYNSYM
            continue
        strtab = sections[sh[6]]
        str_off = strtab[4]
        for off in range(sh[4], sh[4] + sh[5], 24):
            st_name, _info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", elf, off)
            if shndx == 0:
                continue            # an import, not defined here
            end = elf.index(b"\0", str_off + st_name)
            if elf[str_off + st_name:end] == want:
                return value, e_type == 3      # ET_DYN
    raise Unavailable(f"the program does not export {name} (not a bash, or a stripped one)")


def _load_base(pid: int, st) -> int:
    """Where the program is mapped: its first mapping (file offset 0)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and int(parts[2], 16) == 0 and int(parts[4]) == st.st_ino:
                    return int(parts[0].split("-")[0], 16)
    except OSError as e:
        raise Unavailable(f"cannot read the process's memory map: {e.strerror}") from None
    raise Unavailable("cannot find the program in the process's memory map")


# --- option (b): the setup re-sourced ---------------------------------------------------

def resourced(environ: dict) -> str:
    """The fallback: the same setup file sourced again in the process's exec
    environment (what nix-shell does), for a builder whose state cannot be
    taken. What earlier phases changed in the shell is not there."""
    stdenv = environ.get("stdenv")
    if not stdenv:
        return None
    return (f"# the stdenv setup re-sourced (nixrec replay, docs/replay.md)\n"
            f"source {_quote(stdenv + '/setup')}\n")


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


__all__ = ["capture", "resourced", "State", "Unavailable", "SPECIAL"]
