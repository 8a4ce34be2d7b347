"""Ctrl-C, SIGTERM and SIGHUP during `nixrec record`: when they may stop what.

The signal is always remembered; what it does depends on the moment:

- setting up (resolving the .drv, asking Nix for the closure): raise
  Interrupted at once; nothing is written yet, the previous trace stays;
- between the new trace's creation and the builder's start: only
  remembered (an exception there could leave a half-spawned sandbox); the
  session looks right after the start and stops the build;
- building: Build's own handler kills the build, the tracer drains, the
  trace is closed (build.py);
- checking the outputs (it can take long: hashing, the reference scan):
  raise Interrupted; the session closes the trace marked interrupted;
- closing the trace: only remembered, so that no write is torn.

The exit code is the shell's, 128 + the signal's number: 130 for Ctrl-C,
143 for SIGTERM, 129 for SIGHUP (README, "Exit codes").
"""

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """A stop signal came while the session let it raise."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(signum) -> int:
    return 128 + int(signum)


def name(signum) -> str:
    return signal.Signals(signum).name


class Guard:
    """Holds SIGNALS for the length of a recording (a `with` block).

    `raising` says whether a signal raises Interrupted now; `signum` is the
    first signal that came, raised or not."""

    def __init__(self):
        self.signum = None
        self.raising = True
        self._prev = None

    def __enter__(self):
        self._prev = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._prev.items():
            signal.signal(s, handler)
        return False

    def _on_signal(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        if self.raising:
            self.raising = False           # once: the cleanup must not be cut
            raise Interrupted(signum)

    def allow(self, raising: bool) -> None:
        """Raise from now on (at once, for a signal that came meanwhile), or not."""
        self.raising = raising
        if raising and self.signum is not None:
            self.raising = False
            raise Interrupted(self.signum)
