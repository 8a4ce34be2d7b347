"""The `nixrec events` verb: list a trace's events, strace-like or as JSON lines.

    nixrec events T.nixrec --from 400 --proc 1.3.* --failed
       412 1.3.2 [cc1] openat("/usr/include/zlib.h", O_RDONLY) = -1 ENOENT

It reads only the chunks that hold the requested range (the index says where),
so `--from N` starts printing at once on any size of trace.
"""

import fnmatch
import json
import os
import sys

import click

from nixrec.recorder.errors import BadInput
from nixrec.recorder.trace import syscalls as syscall_table
from nixrec.recorder.tracefile import open_trace, phases
from nixrec.recorder.tracefile.printable import escape, json_text

# Longest output text shown on a text line (strace -s); --json shows it all.
_TEXT_LIMIT = 200

# A quoted string's own two escapes; the control characters are printable.py's.
_QUOTED = {"\\": "\\\\", '"': '\\"'}


def quote(value, limit=None) -> str:
    """A C-style quoted string; non-UTF-8 bytes and control characters as \\xNN."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "surrogateescape")
    else:
        text = str(value)
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    return '"' + escape(text, extra=_QUOTED) + '"' + ("..." if cut else "")


# -- flags -------------------------------------------------------------------
# A minimal decoder until recorder/trace/syscalls.py (the one owner of syscall facts)
# offers one; move it there then.

_OPEN_FLAGS = [(getattr(os, n), n) for n in (
    "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC",
    "O_DIRECT", "O_LARGEFILE", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC",
    "O_PATH", "O_SYNC") if hasattr(os, n)]
_ACCMODE = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
_MODE_CALLS = {"mkdir", "mkdirat", "chmod", "fchmod", "fchmodat", "mknod", "mknodat"}


def format_flags(syscall, flags: int) -> str:
    name = syscall or ""
    if name.startswith("open") or name == "creat":
        return _open_flags(flags)
    if name in ("access", "faccessat", "faccessat2"):
        if flags == 0:
            return "F_OK"
        bits = [n for v, n in ((4, "R_OK"), (2, "W_OK"), (1, "X_OK")) if flags & v]
        return "|".join(bits) if bits else hex(flags)
    if name in _MODE_CALLS:
        return f"0{flags:o}"
    return hex(flags) if flags > 9 else str(flags)


def _open_flags(flags: int) -> str:
    parts = [_ACCMODE.get(flags & 3, f"{flags & 3:#x}")]
    rest = flags & ~3
    for value, name in _OPEN_FLAGS:
        if value and rest & value == value:
            parts.append(name)
            rest &= ~value
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


# -- one event as text -----------------------------------------------------------

def _value(v) -> str:
    if isinstance(v, (str, bytes, bytearray)):
        return quote(v, _TEXT_LIMIT)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _result(ev) -> str:
    if ev.errno:
        return f" = {ev.result if ev.result is not None else -1} {ev.errno}"
    return " = ?" if ev.result is None else f" = {ev.result}"


def _call_args(ev) -> list:
    args = dict(ev.args)
    parts = []
    if "fd" in args:
        parts.append(str(args.pop("fd")))
    if ev.path is not None:
        parts.append(quote(ev.path))
    if ev.path2 is not None:
        parts.append(quote(ev.path2))
    if ev.flags is not None:
        parts.append(format_flags(ev.syscall, ev.flags))
    parts += [f"{k}={_value(v)}" for k, v in args.items()]
    return parts


def _exit_text(ev) -> str:
    if ev.args.get("signal"):
        return f"+++ killed by {ev.args['signal']} +++"
    return f"+++ exited with {ev.args.get('status', ev.result)} +++"


def _call_text(ev) -> str:
    if ev.kind == "exit":
        return _exit_text(ev)
    if ev.kind == "signal":
        rest = {k: v for k, v in ev.args.items() if k != "signal"}
        extra = "".join(f" {k}={_value(v)}" for k, v in rest.items())
        return f"--- {ev.args.get('signal') or ev.syscall or '?'}{extra} ---"
    if ev.kind == "exec":
        args = dict(ev.args)
        parts = [quote(ev.path) if ev.path else "?", _value(args.pop("argv", []))]
        if "env" in args:
            parts.append(f"env=[{len(args.pop('env') or ())} vars]")
        parts += [f"{k}={_value(v)}" for k, v in args.items()]
        return f"{ev.syscall or 'execve'}({', '.join(parts)}){_result(ev)}"
    if ev.kind == "output":
        data = ev.args.get("data", b"")
        return (f"{ev.syscall or 'write'}({ev.args.get('fd', '?')}, "
                f"{quote(data, _TEXT_LIMIT)}){_result(ev)}")
    if ev.kind == "fork":
        parts = []
        if ev.args.get("child"):
            parts.append(f"child={ev.args['child']}")
        if ev.args.get("thread"):
            parts.append("thread")
        return f"{ev.syscall or 'fork'}({', '.join(parts)}){_result(ev)}"
    return f"{ev.syscall or ev.kind}({', '.join(_call_args(ev))}){_result(ev)}"


def format_line(ev, argv0) -> str:
    """One strace-like line: seq, process, [program], call, decoded args, result."""
    return f"{ev.seq:>6} {ev.proc} [{escape(argv0 or '?')}] {_call_text(ev)}"


# -- one event as JSON -------------------------------------------------------------

def _plain(v):
    """JSON-safe: bytes and non-UTF-8 strings become text with U+FFFD for bad bytes."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") \
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v) else v
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def format_json(ev, argv0) -> str:
    obj = {
        "seq": ev.seq, "proc": ev.proc, "pid": ev.pid, "kind": ev.kind,
        "syscall": ev.syscall, "path": ev.path, "path2": ev.path2, "flags": ev.flags,
        "address": ev.args.get("address"), "dns": ev.args.get("dns"),
        "result": ev.result, "errno": ev.errno, "argv0": argv0, "time": ev.time,
        "args": ev.args,
    }
    return json_text(json.dumps(_plain(obj), ensure_ascii=False))


# -- filters -------------------------------------------------------------------------

def _proc_filter(spec):
    """--proc P: that process; P.* (or P...): P and every process below it."""
    if not spec:
        return None
    for suffix in (".*", "..."):
        if spec.endswith(suffix):
            root = spec[:-len(suffix)]
            return lambda p: p == root or p.startswith(root + ".")
    return lambda p: p == spec


def _path_filter(glob):
    """--path GLOB: fnmatch on the absolute path or path2 ('*' also matches '/');
    a GLOB without '/' is matched against the file name as well."""
    if not glob:
        return None
    on_name = "/" not in glob

    def match(path):
        if path is None:
            return False
        return fnmatch.fnmatchcase(path, glob) or (
            on_name and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], glob))
    return lambda ev: match(ev.path) or match(ev.path2)


# Event kinds --syscall also matches (docs/trace-format.md).
_KINDS = frozenset(("fork", "exec", "exit", "signal", "output", "syscall"))


def _check_names(names, recorded) -> None:
    """--syscall NAME must be a call or a kind. A call nixrec does not record
    (python-ptrace's x86_64 table knows them all) matches nothing: say so;
    a name that is no call at all is a mistake (exit 2)."""
    other = sorted(n for n in names if n not in recorded and n not in _KINDS)
    if not other:
        return
    # Imported here: python-ptrace's syscall package takes ~0.1 s to load.
    from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES
    known = set(SYSCALL_NAMES.values())
    unknown = [n for n in other if n not in known]
    if unknown:
        raise BadInput(f"--syscall {unknown[0]}: no such system call or event kind")
    _warn(f"{', '.join(other)}: not recorded by nixrec (recorder/trace/syscalls.py): "
          "no event matches")


def _matcher(proc, syscalls, path, failed, recorded=frozenset()):
    want_proc = _proc_filter(proc)
    names = {n.strip() for s in syscalls for n in s.split(",") if n.strip()}
    _check_names(names, recorded)
    want_path = _path_filter(path)

    def keep(ev):
        if want_proc and not want_proc(ev.proc):
            return False
        if names and ev.syscall not in names and ev.kind not in names:
            return False
        if failed and not ev.failed:
            return False
        return not want_path or want_path(ev)
    return keep


def _warn(line: str) -> None:
    click.echo(f"nixrec: warning: {line}", err=True)


@click.command("events")
@click.argument("trace", type=click.Path(path_type=str))
@click.option("--from", "from_seq", type=click.IntRange(min=1), default=1,
              help="First event to show (seq).")
@click.option("--to", "to_seq", type=click.IntRange(min=1), default=None,
              help="Last event to show (seq).")
@click.option("--proc", default=None, metavar="P",
              help="Only process P (tree path, e.g. 1.3.2); 'P.*' for P and its subtree.")
@click.option("--syscall", "syscalls", multiple=True, metavar="NAME",
              help="Only these calls (repeat or comma-separate); kinds such as exec, "
                   "fork, exit, output also match.")
@click.option("--path", default=None, metavar="GLOB",
              help="Only events whose path (or second path) matches GLOB.")
@click.option("--failed", is_flag=True, help="Only failed calls (those with an errno).")
@click.option("--phase", default=None, metavar="NAME",
              help="Only the events of stdenv phase NAME (buildPhase...; `nixrec phases` "
                   "lists them); with --from/--to, the part of it they leave.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line instead of strace-like text.")
def events_cmd(trace, from_seq, to_seq, proc, syscalls, path, failed, phase, as_json):
    """List the events of TRACE, strace-like (or --json, one object per line)."""
    reader = open_trace(trace)
    if phase is not None:
        p = phases.lookup(reader.phases, phase)
        from_seq = max(from_seq, p["first"])
        to_seq = p["last"] if to_seq is None else min(to_seq, p["last"])
    if reader.interrupted_after is not None:
        _warn(f"recording interrupted after event {reader.interrupted_after}; "
              "showing what was recorded")
    for line in reader.problems_seen:
        if not line.startswith("recording interrupted"):
            _warn(line)
    reader.on_problem = _warn
    recorded = set(syscall_table.BY_NAME) | set(reader.header.get("calls") or ())
    keep = _matcher(proc, syscalls, path, failed, recorded)
    fmt_one = format_json if as_json else format_line
    out = sys.stdout
    try:        # a non-UTF-8 terminal gets \u escapes, not a UnicodeEncodeError
        out.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError):
        pass
    for ev in reader.events(from_seq, to_seq):
        if keep(ev):
            out.write(fmt_one(ev, reader.argv0_at(ev.proc, ev.seq)) + "\n")
    out.flush()
    reader.close()


COMMANDS = [events_cmd]
