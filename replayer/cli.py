"""`nixrec replay TRACE`: re-run a recorded build and stop before an event.

The only place in replayer/ that prints or picks an exit code (style.md):
0 the stop was reached or the replay matched the recording, 1 it diverged
(or never reached the stop), --exec: the command's own status; 2 bad input
(a missing or changed input: nothing runs), 3 this host cannot.
"""

import os
import sys
import threading
import time

import click

from nixrec.recorder.cli.status import open_status
from nixrec.recorder.errors import BadInput
from nixrec.recorder.tracefile.printable import LogFilter, escape
from nixrec.replayer import attach, shellstate, targets
from nixrec.replayer.session import ReplaySession, Stop

EXIT_DIVERGED = 1


def _say(msg: str) -> None:
    # One line each: a recorded call, argv or path in it is the build's text.
    click.echo(f"nixrec: {escape(msg)}", err=True)


def _finder_for(until, until_fail, until_exec, until_path, until_phase=None, phase_end=None):
    """-> callable(reader, plan) -> Finder, or None to replay to the end."""
    if until_phase or phase_end:
        return lambda r, plan: targets.until_phase(r, until_phase or phase_end,
                                                   end=bool(phase_end))
    if until is not None:
        return lambda r, plan: targets.until_seq(until, r.last_seq)
    if until_fail:
        return lambda r, plan: targets.until_fail()
    if until_exec:
        return lambda r, plan: targets.until_exec(until_exec)
    if until_path:
        return lambda r, plan: targets.until_path(until_path, plan.cwd)
    return None


def _report_stop(stop, session) -> None:
    where = stop.loc.describe()
    seq = f"event {stop.recorded_seq}" if stop.recorded_seq else "a call"
    live = f"; live process {stop.live_proc}" if stop.live_proc else ""
    _say(f"stopped before {seq} ({where}; live event {stop.live_seq + 1}{live}): {stop.call}")
    t = stop.target
    if stop.loose and stop.reason == "target":
        _say(f"process {stop.proc} runs jobs in parallel and made its own calls in another "
             "order than recorded; stopped at its first call like the recorded one "
             "after as many execs and forks (docs/replay.md)")
    if stop.reason == "divergence":
        _report_divergence(stop.divergence)
    elif t is not None and t.note:
        _say(t.note)
    if stop.reason == "target" and t is not None and t.phase is not None:
        p, end = t.phase
        _say(f"{'the last event of' if end else 'the start of'} phase {p['name']} "
             f"(events {p['first']}-{p['last']})")
    if stop.reason == "target" and t is not None and t.command is not None:
        cmd = targets.command_line(t.command, session.live_cwd(stop))
        if t.forked_only:
            # A subshell: running its parent's command again would redo the whole step.
            _say(f"process {stop.proc} is a forked copy of its parent (it made no exec); "
                 f"the parent's command: {cmd}")
        else:
            _say(f"the failing command (process {stop.proc}): {cmd}")


def _report_divergence(d) -> None:
    rec = f"recorded event {d.rec_seq}" if d.rec_seq else "no recorded event"
    live = f"live event {d.live_seq}" if d.live_seq else "no live event"
    proc = f"process {d.loc.proc}" + (f" (live {d.live_proc})" if d.live_proc else "")
    _say(f"replay diverged: {d.why} ({rec}, {live}; {proc}, its event {d.loc.k})")
    _say(f"  recorded: {d.recorded or 'nothing'}")
    _say(f"  now:      {d.now or 'nothing'}")


def _report_end(end, divergence_said) -> int:
    if end.interrupted:
        _say("interrupted; the build was killed")
        return 130
    if end.state == "killed":
        _say("the build was killed at the stop (use --continue to let it finish)")
    elif end.divergence is None and end.unreached is None:
        _say(f"replay matched the recording ({end.events} events)")
    if end.divergence is not None and not divergence_said:
        _report_divergence(end.divergence)
    if end.unreached is not None:
        _say(f"the build ended before reaching event {end.unreached}")
    if end.state == "done" and end.builder is not None:
        kind, val = end.builder
        _say(f"builder {'exited with ' + str(val) if kind == 'exit' else 'killed by ' + val}")
    return EXIT_DIVERGED if (end.divergence or end.unreached) else 0


def _attach(stop, session, shell, exec_cmd, interactive, cont) -> int:
    plan = session.plan
    bash = session.phase_shell(stop)
    fd = None
    if bash is not None:
        argv, fd = _state_argv(stop, session, bash, exec_cmd, interactive)
        shell = bash if argv else shell
    if fd is None:
        argv = [shell, "-c", exec_cmd] if exec_cmd is not None else [shell, "-i"]
    env = attach.command_env(stop.live_pid, shell, interactive)
    if interactive:
        _say("a shell in the sandbox at the stop; exit it to "
             + ("let the build go on" if cont else "kill the build"))
    try:
        return attach.run_in(stop.live_pid, argv, plan.uid, plan.gid, env,
                             interactive=interactive)
    finally:
        if fd is not None:
            os.close(fd)


def _state_argv(stop, session, bash, exec_cmd, interactive):
    """At a phase stop: the builder's bash with its shell state (shellstate.py),
    or with its setup re-sourced when the state cannot be taken.
    -> (argv, memfd), or (None, None) for the plain shell."""
    env = attach.read_environ(stop.live_pid)
    try:
        state = shellstate.capture(stop.live_pid, session.plan.cwd)
        setup = f"{env['stdenv']}/setup" if env.get("stdenv") else None
        script = state.script(interactive, environ_names=env, setup=setup)
        _say(f"the command runs in the stopped builder's shell state ({len(state.variables)} "
             f"variables, {len(state.function_names())} "
             f"functions, taken from process {stop.proc} in {state.took * 1000:.0f} ms)"
             + ("; errexit is off in an interactive shell" if interactive else ""))
    except shellstate.Unavailable as e:
        script = shellstate.resourced(env)
        if script is None:
            _say(f"cannot take the builder's shell state ({e}); the command gets its "
                 "environment only")
            return None, None
        _say(f"cannot take the builder's shell state ({e}); re-sourcing $stdenv/setup "
             "instead: what earlier phases changed in the shell is not there")
    return attach.state_command(bash, script, exec_cmd, interactive)


class _Status(threading.Thread):
    """Feeds the status line (cli/status.py) from the session's progress
    twice a second while the build runs; stop() takes it away (before any
    report, and before a shell gets the terminal)."""

    EVERY = 0.5

    def __init__(self, line, session, t0):
        super().__init__(daemon=True, name="nixrec-status")
        self.line, self.session, self.t0 = line, session, t0
        self._done = threading.Event()

    def run(self):
        while not self._done.wait(self.EVERY):
            self.line.status(dict(self.session.progress(), elapsed=time.monotonic() - self.t0))

    def stop(self):
        self._done.set()
        self.join(timeout=2)
        self.line.clear()


def _with_status(line, session, t0, step):
    """step() with the status line shown meanwhile (when there is one)."""
    if line is None:
        return step()
    ticker = _Status(line, session, t0)
    ticker.start()
    try:
        return step()
    finally:
        ticker.stop()


def _replay(session, shell, exec_cmd, interactive, cont, line=None, t0=0.0, phase=None):
    """Run to the stop, attach, go on or kill. -> (End, command status, said)."""
    res = _with_status(line, session, t0, session.start)
    status, said = None, False
    if isinstance(res, Stop):
        _report_stop(res, session)
        said = res.reason == "divergence"
        if said and phase is not None and shell is not None:
            # The command was meant for the phase's shell state, which only
            # the stop at the phase has: run nowhere else (issue 22).
            what = "the command was not run" if exec_cmd is not None else "no shell opened"
            _say(f"did not reach phase {phase}: the replay diverged first; {what} "
                 "(it needs the phase's shell state)")
            shell = None
        if shell is not None:
            status = _attach(res, session, shell, exec_cmd, interactive, cont)
        if cont:
            res = _with_status(line, session, t0, session.resume)
    end = session.close() if isinstance(res, Stop) else res
    return end, status, said


@click.command("replay")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--until", type=int, metavar="N",
              help="Stop before event N (the numbers `nixrec events` prints): the call "
                   "has not run yet.")
@click.option("--until-fail", is_flag=True,
              help="Stop just before the process where the failure started exits, and "
                   "print its command line.")
@click.option("--until-exec", metavar="GLOB",
              help="Stop before the first exec of a program matching GLOB (path or name).")
@click.option("--until-path", metavar="PATH",
              help="Stop before the first call that names PATH (relative: to /build).")
@click.option("--until-phase", metavar="NAME",
              help="Stop at the start of stdenv phase NAME (its announcement; `nixrec "
                   "phases` lists them); --shell/--exec there run in the builder's "
                   "shell state (variables, functions, options).")
@click.option("--until-phase-end", metavar="NAME",
              help="Stop before the last event of phase NAME.")
@click.option("--shell", is_flag=True,
              help="Open an interactive shell in the sandbox at the stop (the default "
                   "when stdin is a terminal).")
@click.option("--exec", "exec_cmd", metavar="CMD",
              help="Run CMD with the sandbox's shell at the stop; exit with its status.")
@click.option("--continue", "cont", is_flag=True,
              help="After the shell or command, let the build run to its end (compared "
                   "with the recording) instead of killing it.")
@click.option("-q", "--quiet", is_flag=True, help="Do not stream the build log.")
def replay_cmd(trace, until, until_fail, until_exec, until_path, until_phase, until_phase_end,
               shell, exec_cmd, cont, quiet):
    """Re-run the build recorded in TRACE in the same sandbox; stop before an event.

    The sandbox is rebuilt from the trace alone; every input must be present
    and unchanged (else exit 2, nothing runs). Each live process is matched to
    a recorded one (by tree path, and by what it runs when a parallel make
    starts its jobs in another order) and events by their count in their
    process, so a parallel build stops at the same point however its jobs
    interleave. At the stop the whole build is frozen.
    Without a stop option the build runs to its end and is compared with the
    recording. Exit 0 when the stop was reached or the replay matched, 1 when it
    diverged, the command's status with --exec. A divergence before an
    --until-phase stop runs no command and opens no shell (exit 1).
    """
    given = [o for o, v in (("--until", until is not None), ("--until-fail", until_fail),
                            ("--until-exec", until_exec), ("--until-path", until_path),
                            ("--until-phase", until_phase),
                            ("--until-phase-end", until_phase_end)) if v]
    if len(given) > 1:
        raise click.UsageError(f"{given[0]} and {given[1]} cannot be combined")
    if shell and exec_cmd is not None:
        raise click.UsageError("--shell and --exec cannot be combined")
    interactive = shell or (exec_cmd is None and sys.stdin.isatty())
    log = None if quiet else _stderr_log()
    # On a terminal: the status line under the log, as record draws it.
    line = open_status(sys.stderr)
    if line is not None and log is not None:
        log = line.log
    if log is not None:
        log = LogFilter(log)            # the build's colours, not its other escapes
    session = ReplaySession(trace, _finder_for(until, until_fail, until_exec, until_path,
                                                until_phase, until_phase_end),
                            log=log)
    t0 = time.monotonic()
    try:
        _with_status(line, session, t0, session.prepare)
        sh = attach.find_shell(session.plan) if (exec_cmd is not None or interactive) else None
        if sh is None and (exec_cmd is not None or shell):
            raise BadInput(attach.NO_SHELL)
        if sh is None and interactive:
            _say(attach.NO_SHELL)
            interactive = False
        end, status, said = _replay(session, sh, exec_cmd, interactive, cont, line, t0,
                                    phase=until_phase or until_phase_end)
    finally:
        session.close()
        if line is not None:
            line.close()
    code = _report_end(end, said)
    sys.exit(status if status is not None else code)


def _stderr_log():
    out = sys.stderr.buffer

    def log(data):
        out.write(data)
        out.flush()
    return log


COMMANDS = [replay_cmd]
