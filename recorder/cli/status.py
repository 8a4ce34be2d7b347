"""The live status line of `record` and `replay`, drawn by rich under the
streaming build log: elapsed time, processes, events, refused calls, the
current command or phase.

rich's Live display does the terminal work: it redraws the status under
each block of log it prints, crops it to the terminal's width, and draws
nothing when stderr is no terminal (a file, a pipe, TERM=dumb), where only
the log's own bytes are written. Two threads feed it (the pty pump's log,
the watchdog's status); a lock keeps their writes whole.

The log goes to the terminal as the build wrote it (bytes in, the same
bytes out: its own colours, non-UTF-8 bytes), never wrapped or cropped.
A log line is written once it is whole: a status drawn after half a line
would be erased with it. A partial line left waiting (`checking for
gcc... ` while the check runs) is shown after HOLD seconds, the status
taken away until the line ends.
"""

import io
import os
import threading
import time

# rich is imported only when a status is drawn (open_status): it takes
# 0.1-0.2 s to import, which `events` and `why` should not pay.

# How long a partial log line may wait for its end before it is shown.
HOLD = 0.3


class _Raw:
    """Log text as the build wrote it: no markup, wrapping or cropping."""

    def __init__(self, text):
        self.text = text

    def __rich_console__(self, console, options):
        from rich.segment import Segment
        yield Segment(self.text)


def status_text(d: dict) -> str:
    """The status line's words, from a progress dict (session.py, replayer)."""
    parts = [f"nixrec {d.get('elapsed', 0):.0f}s"]
    if "processes" in d:
        parts.append(f"{d['processes']} processes ({d.get('alive', 0)} running)")
    if "events" in d:
        parts.append(f"{d['events']} events")
    if "refused" in d:
        parts.append(f"{d['refused']} refused")
    current, phase = d.get("current"), d.get("phase")
    if current:
        parts.append(current)         # the program last exec'd
    if phase and (not current or phase != "building"):
        parts.append(phase)           # replay's target; record's end; the start
    return "[" + " | ".join(parts) + "]"


class LiveStatus:
    """The status under the log on `stream` (a binary stream: stderr's)."""

    def __init__(self, stream):
        from rich.console import Console
        from rich.constrain import Constrain
        from rich.live import Live
        from rich.text import Text
        self._text, self._constrain = Text, Constrain
        # surrogateescape both ways: the log's bytes come out as they went in.
        self.out = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape",
                                    write_through=True)
        self.console = Console(file=self.out, highlight=False, markup=False, emoji=False)
        self.live = Live(Text(""), console=self.console, transient=True, auto_refresh=False,
                         redirect_stdout=False, redirect_stderr=False)
        self.lock = threading.RLock()
        self.partial = ""            # the end of the log, not a whole line yet
        self.partial_since = 0.0
        self.mid_line = False        # a partial line is shown: no status until it ends
        self.shown = False           # the Live display is on the screen
        # rich's answer: a status is drawn only on a real terminal.
        self.on_terminal = self.console.is_terminal and not self.console.is_dumb_terminal

    def log(self, data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        with self.lock:
            if not self.on_terminal:
                self.out.write(text)           # a file or a pipe: the log alone
                return
            if self.mid_line:
                end = text.rfind("\n")
                if end < 0:
                    self.out.write(text)
                    return
                self.out.write(text[:end + 1])
                text, self.mid_line = text[end + 1:], False
                self.live.start(refresh=True)
                self.shown = True
            self._lines(self.partial + text)

    def _lines(self, text: str) -> None:
        """Print the whole lines of `text` above the status; keep the rest."""
        end = text.rfind("\n")
        if end >= 0:
            self.console.print(_Raw(text[:end + 1]), end="", crop=False, soft_wrap=True)
            text = text[end + 1:]
        if text and not self.partial:
            self.partial_since = time.monotonic()
        self.partial = text

    def status(self, d: dict) -> None:
        """Show the progress dict `d` (status_text); also the moment a
        partial log line that waited HOLD seconds is shown."""
        if not self.on_terminal:
            return
        with self.lock:
            # One column short of the width: a line that fills the last
            # column leaves some terminals about to wrap, and the status
            # would then be erased from the wrong row.
            text = self._text(status_text(d), no_wrap=True, overflow="ellipsis")
            self.live.update(self._constrain(text, width=max(10, self._columns() - 1)))
            if self.mid_line:
                return
            if self.partial and time.monotonic() - self.partial_since > HOLD:
                self._hide()
                self.out.write(self.partial)
                self.partial, self.mid_line = "", True
                return
            if not self.shown:
                self.live.start(refresh=True)
                self.shown = True
            else:
                self.live.refresh()

    def _columns(self) -> int:
        """The terminal's width now, asked of the terminal itself: rich
        believes COLUMNS when it is set, and an exported COLUMNS goes stale
        when the window is resized (or is a parent's, 80, in a narrower pane)."""
        try:
            cols = os.get_terminal_size(self.out.fileno()).columns
        except OSError:
            return self.console.width
        self.console.width = cols
        return cols

    def _hide(self) -> None:
        if self.shown:
            self.live.stop()          # transient: rich erases the status
            self.shown = False

    def clear(self) -> None:
        """Take the status away for good and write what the log still holds."""
        with self.lock:
            self._hide()
            if self.partial:
                self.out.write(self.partial)
                self.partial = ""
            self.mid_line = False
            self.out.flush()

    def close(self) -> None:
        """clear(), then let go of the stream (the wrapper would close it)."""
        with self.lock:
            self.clear()
            self.out.detach()


def open_status(stream):
    """A LiveStatus on `stream` (sys.stderr) when rich would draw a live
    display there (a terminal, not TERM=dumb), else None: then the log
    alone is written, as it comes, with no escape code of the status."""
    if not stream.isatty():
        return None
    from rich.console import Console
    console = Console(file=stream)
    if not console.is_terminal or console.is_dumb_terminal:
        return None
    return LiveStatus(stream.buffer)
