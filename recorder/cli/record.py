"""`nixrec record DRV`: build a derivation in nixrec's sandbox under the tracer."""

import os
import sys

import click

from nixrec.recorder.trace import fastpath
from nixrec.recorder import interrupts, session
from nixrec.recorder.cli.status import open_status
from nixrec.recorder.errors import EXIT_BUILD_FAILED
from nixrec.recorder.tracefile.printable import LogFilter, escape


def _stream_to(out):
    def log(data):
        out.write(data)
        out.flush()
    return log


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@click.command("record")
@click.argument("target", metavar="DRV")
@click.option("-A", "--attr", help="Attribute to instantiate when DRV is a .nix file.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Trace file to write (default: NAME.nixrec in the current directory).")
@click.option("--extra-sandbox-paths", default="", metavar='"P ..."',
              help="More host paths to show in the sandbox, as Nix's extra-sandbox-paths "
                   "(target=source, a trailing ? makes one optional).")
@click.option("--cores", type=int, help="NIX_BUILD_CORES (default: nix.conf, else all cores).")
@click.option("--keep-build-dir", is_flag=True, help="Keep the sandbox's /build on the host.")
@click.option("--no-sandbox", is_flag=True,
              help="Run as Nix's `sandbox = false` would: the host filesystem visible "
                   "(read-only), the host network; the trace shows every impurity used.")
@click.option("--relaxed", is_flag=True,
              help="As Nix's `sandbox = relaxed`: a fixed-output derivation or one with "
                   "__noChroot is built as with --no-sandbox, any other in the sandbox "
                   "(without it, __noChroot is refused as with `sandbox = true`).")
@click.option("--impersonate-linux-26", "impersonate", is_flag=True, default=None,
              help="As Nix's impersonate-linux-26: uname says 2.6.x (default: nix.conf's "
                   "setting, else off).")
@click.option("--timeout", type=click.IntRange(min=0), default=0, metavar="SECONDS",
              help="Kill the build after this long, as Nix's `timeout` (default 0: never).")
@click.option("--max-silent-time", type=click.IntRange(min=0), default=0, metavar="SECONDS",
              help="Kill the build after this long without log output, as Nix's "
                   "`max-silent-time` (default 0: never).")
@click.option("--max-log-size", type=click.IntRange(min=0), default=0, metavar="BYTES",
              help="Kill the build once its log exceeds this, as Nix's "
                   "`max-build-log-size` (default 0: no limit).")
@click.option("--max-processes", type=click.IntRange(min=0),
              default=session.DEFAULT_MAX_PROCESSES, show_default=True, metavar="N",
              help="Kill the build when more than N of its processes are alive at once "
                   "(a fork bomb; nixrec's own, 0: no limit).")
@click.option("--readlink", is_flag=True,
              help="Also record readlink/readlinkat (realpath asks them of every path "
                   "component: about a third more stops on a C build).")
@click.option("--check", is_flag=True,
              help="As nix-build --check: the outputs must be in the store already; the "
                   "build fails if it makes them differently (`nixrec why` names the files "
                   "and who wrote them).")
@click.option("--arg", "nix_arg", nargs=2, multiple=True, metavar="NAME EXPR",
              help="As nix-build: pass NAME = EXPR (a Nix expression) to a .nix file's function.")
@click.option("--argstr", "nix_argstr", nargs=2, multiple=True, metavar="NAME VALUE",
              help="As nix-build: pass NAME = \"VALUE\" (a string) to a .nix file's function.")
@click.option("--nix-version", metavar="X.Y",
              help="Imitate this Nix's sandbox (default: the host's nix-build; checked: "
                   "2.8 and 2.26, docs/sandbox.md).")
@click.option("-q", "--quiet", is_flag=True, help="Do not stream the build log.")
def record_cmd(target, attr, output, extra_sandbox_paths, cores, keep_build_dir, no_sandbox,
               relaxed, impersonate, timeout, max_silent_time, max_log_size, max_processes,
               readlink, check, nix_arg, nix_argstr, nix_version, quiet):
    """Build DRV in a Nix-faithful sandbox and record everything it does.

    DRV is a .drv path, or a .nix file with -A ATTR (instantiated with
    nix-instantiate). The trace goes to -o TRACE; outputs to TRACE.d/outputs/,
    never into the real store. Exit 0 if the build succeeded, 1 if it failed
    (the trace is complete either way), also when a limit killed it; 130
    after Ctrl-C, 143 after SIGTERM (the trace keeps what was recorded).
    The previous trace at -o is replaced only once the build has started.
    """
    followed, warning, _ = session.choose_nix_version(nix_version)
    if warning:
        click.echo(f"nixrec: warning: {warning}", err=True)
    log = status = line = None
    if not quiet:
        log = _stream_to(sys.stderr.buffer)
    # On a terminal: a status line under the log (elapsed, processes,
    # events, refused calls, the command), drawn by rich (cli/status.py).
    line = open_status(sys.stderr)
    if line is not None:
        status = line.status
        if log is not None:
            log = line.log
    if log is not None:
        log = LogFilter(log)            # the build's colours, not its other escapes
    opts = session.RecordOptions(output=output, attr=attr,
                                 extra_sandbox_paths=extra_sandbox_paths, cores=cores,
                                 keep_build_dir=keep_build_dir, no_sandbox=no_sandbox, log=log,
                                 status=status, timeout=timeout,
                                 max_silent_time=max_silent_time, max_log_size=max_log_size,
                                 max_processes=max_processes, readlink=readlink,
                                 check=check, relaxed=relaxed,
                                 impersonate_linux_26=impersonate or None,
                                 nix_version=followed,
                                 nix_args=[("arg", *a) for a in nix_arg]
                                 + [("argstr", *a) for a in nix_argstr])
    try:
        res = session.record(target, opts)
    finally:
        if line is not None:
            line.close()
    if res.interrupted:
        # The trace is closed and says so; its verdict is "incomplete".
        outcome = (f"interrupted ({interrupts.name(res.interrupt_signal)}) while "
                   f"{res.interrupted_while}: the recording is incomplete")
    elif res.killed:
        # Nix's words: "building of '…' timed out after 2 seconds".
        outcome = res.killed
    elif res.exit_signal:
        outcome = f"failed due to signal {res.exit_signal}"
    elif res.exit_status:
        outcome = f"failed with exit code {res.exit_status}"
    else:
        outcome = "succeeded"
    click.echo(f"nixrec: build {outcome}"
               + (f" ({res.error})" if res.error else ""), err=True)
    click.echo(f"nixrec: {res.processes} processes, {res.events} events, "
               f"{res.refused} refused, {res.duration:.1f} s, "
               f"trace {_human_bytes(res.trace_bytes)}", err=True)
    if not fastpath.built():
        click.echo(f"nixrec: note: the tracer ran its Python loop, slower: {fastpath.LIBRARY} "
                   "is not built (`make setup` builds it with gcc)", err=True)
    for name, path in sorted(res.outputs.items()):
        click.echo(f"nixrec: output {name}: {os.path.relpath(path)}", err=True)
    for name, found in sorted(res.hidden_references.items()):
        # Nix builds it all the same; the output breaks where it is copied alone.
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        click.echo(f"nixrec: warning: output {name} names {escape(found[0]['path'])}{more}, not an "
                   "input: Nix records no reference to it (nixrec deps says where)", err=True)
    if (getattr(res, "output_check", None) or {}).get("check") == "deterministic":
        from nixrec.recorder.tracefile.siblings import diff_hint
        click.echo(f"nixrec: {diff_hint(res.trace, res.drv_path)}", err=True)
    if res.build_dir:
        click.echo(f"nixrec: kept build directory {res.build_dir}", err=True)
    if res.warning:
        click.echo(f"nixrec: warning: {res.warning}", err=True)
    click.echo(res.trace)
    if res.interrupted:
        sys.exit(interrupts.exit_code(res.interrupt_signal))
    if res.failed:
        sys.exit(EXIT_BUILD_FAILED)


COMMANDS = [record_cmd]
