"""The `nixrec` command: the root click group and the one place exit codes are chosen.

Each verb lives in a small module of its own (record.py, events.py, drv.py
here, cli.py in replayer/ and analysis/); this module mounts them and turns
every failure into one line on stderr with the documented exit code (README, "Exit codes").
"""

import importlib
import os
import signal
import sys
import traceback


def _quit_while_starting(signum, frame):
    os.write(2, f"nixrec: interrupted ({signal.Signals(signum).name})\n".encode())
    os._exit(128 + signum)


# A Ctrl-C or SIGTERM while the console script is still importing (a third
# of a second): the documented code and one line, not an import traceback.
# main() installs the handling of every later moment.
if os.path.basename(sys.argv[0] or "") == "nixrec":
    for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _quit_while_starting)

import click  # noqa: E402 - after the handlers above

from nixrec.recorder import __version__
from nixrec.recorder.errors import (
    EXIT_BAD_INPUT, EXIT_INTERNAL, NixrecError,
)


# Each verb's module, imported only when that verb runs: `nixrec events`
# must start printing at once, and the recorder (ctypes, the sandbox) or the
# analysis (networkx) would cost it a tenth of a second to import.
VERBS = {
    "record": "nixrec.recorder.cli.record",
    "events": "nixrec.recorder.cli.events",
    "drv": "nixrec.recorder.cli.drv",
    "why": "nixrec.replayer.cmd_why",
    "deps": "nixrec.analysis.cli",
    "graph": "nixrec.analysis.cli",
    "phases": "nixrec.analysis.cli",
    "replay": "nixrec.replayer.cli",
    "diff": "nixrec.replayer.cmd_diff",
    "report": "nixrec.analysis.cli",
}


class LazyGroup(click.Group):
    """A click group whose commands live in VERBS' modules (their COMMANDS lists)."""

    def list_commands(self, ctx):
        return list(VERBS)

    def get_command(self, ctx, name):
        module = VERBS.get(name)
        if module is None:
            return None
        for cmd in importlib.import_module(module).COMMANDS:
            if cmd.name == name:
                return cmd
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nixrec")
def root():
    """Record, replay and explain Nix derivation builds.

    Exit codes: 0 success; 1 the build failed (the trace is complete);
    2 bad input or usage; 3 this host cannot do it; 70 internal error;
    130 Ctrl-C, 143 SIGTERM (128 + the signal).
    """


def _say(message: str) -> None:
    # One line, always: a user reads the first line and stops.
    first = str(message).strip().splitlines()[0] if str(message).strip() else "error"
    click.echo(f"nixrec: {first}", err=True)


class _Terminated(Exception):
    """SIGTERM or SIGHUP outside a recording (record installs its own handling)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise _Terminated(signum)


def main(argv=None) -> int:
    """Entry point of the console script; never lets a traceback reach the user."""
    # As Ctrl-C (KeyboardInterrupt, 130): one line and the shell's code,
    # 128 + the signal (143 for SIGTERM), never a traceback.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        rc = root.main(args=argv, prog_name="nixrec", standalone_mode=False)
    except NixrecError as e:
        _say(str(e))
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        _say("interrupted")
        sys.exit(130)
    except click.ClickException as e:
        # Usage errors: click's own message, on one line, exit 2.
        _say(e.format_message())
        sys.exit(EXIT_BAD_INPUT)
    except BrokenPipeError:
        # `nixrec events T | head`: the reader went away; not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        sys.exit(0)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
    except _Terminated as e:
        _say(f"interrupted ({signal.Signals(e.signum).name})")
        sys.exit(128 + e.signum)
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if os.environ.get("NIXREC_DEBUG"):
            traceback.print_exc()
        _say(f"internal error: {type(e).__name__}: {e} "
             "(set NIXREC_DEBUG=1 for the traceback)")
        sys.exit(EXIT_INTERNAL)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
