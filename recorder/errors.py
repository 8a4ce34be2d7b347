"""Exit codes and the one exception type that carries a user-facing message.

Every verb uses the same codes (README, "Exit codes"). A NixrecError is always
turned into one line on stderr by cli.py; anything else is an internal error.
"""

EXIT_OK = 0
EXIT_BUILD_FAILED = 1      # the build failed; the trace is complete and usable
EXIT_BAD_INPUT = 2         # bad input or usage: one line naming what is wrong
EXIT_HOST = 3              # this host cannot do it (no ptrace, no user namespaces)
EXIT_INTERNAL = 70         # a bug in nixrec (EX_SOFTWARE)


class NixrecError(Exception):
    """A failure to report to the user as one line, with an exit code."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, exit_code: int = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(NixrecError):
    """The user gave nixrec something it cannot use (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class HostUnsupported(NixrecError):
    """This host lacks a capability nixrec needs (exit 3)."""

    exit_code = EXIT_HOST
