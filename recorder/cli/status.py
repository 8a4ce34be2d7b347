"""The live status line of `record` and `replay`, drawn by rich under the
streaming build log: elapsed time, processes, events, refused calls, the
current command or phase.

rich does the terminal work: it tells a terminal from a file, a pipe or
TERM=dumb (where nothing of the status is written, only the log's own
bytes), renders the status cut to the terminal's width, and makes the
control sequences that take it away. Under each block of log the status is
written again as rich rendered it at its last update: rich's Live display
re-renders at every line it prints, measured 216-540 us per log line against
3.7 for this (a configure prints thousands, on the tracer's GIL; issue 17,
docs/performance.md). Two threads feed it (the pty pump's log, the
watchdog's status); a lock keeps their writes whole. bench/status_cost.py
measures both ways.

The log goes to the terminal as the build wrote it (bytes in, the same
bytes out: its own colours, non-UTF-8 bytes), never wrapped or cropped;
its control characters other than colours, newlines, tabs and \r were
escaped before it got here (printable.LogFilter, record and replay).
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
        from rich.control import Control, ControlType
        from rich.text import Text
        self._text, self._constrain = Text, Constrain
        # surrogateescape both ways: the log's bytes come out as they went in.
        self.out = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape",
                                    write_through=True)
        self.console = Console(file=self.out, highlight=False, markup=False, emoji=False)
        # What takes the status line away: back to its start, erase it.
        self._erase = Control(ControlType.CARRIAGE_RETURN,
                              (ControlType.ERASE_IN_LINE, 2)).segment.text
        self.lock = threading.RLock()
        self.drawn = None            # the status as rich rendered it (None: none yet)
        self.shown = False           # it is on the screen, the cursor after it
        self.at_line_start = True    # (before the first status) the log ended a line
        self.partial = ""            # the end of the log, not a whole line yet
        self.partial_since = 0.0
        self.mid_line = False        # a partial line is shown: no status until it ends

    def log(self, data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        with self.lock:
            if self.drawn is None:
                self.out.write(text)             # no status yet: as it comes
                self.at_line_start = text.endswith("\n") if text else self.at_line_start
                return
            if self.mid_line:
                end = text.rfind("\n")
                if end < 0:
                    self.out.write(text)
                    return
                self.out.write(text[:end + 1])   # the shown line ended: status again
                text, self.mid_line = text[end + 1:], False
            self._lines(self.partial + text)

    def _lines(self, text: str) -> None:
        """Write the whole lines of `text` above the status; keep the rest."""
        end = text.rfind("\n")
        if end >= 0:
            self.out.write((self._erase if self.shown else "") + text[:end + 1] + self.drawn)
            self.shown = True
            text = text[end + 1:]
        if text and not self.partial:
            self.partial_since = time.monotonic()
        self.partial = text

    def status(self, d: dict) -> None:
        """Show the progress dict `d` (status_text); also the moment a
        partial log line that waited HOLD seconds is shown."""
        with self.lock:
            self.drawn = self._render(status_text(d))
            if self.mid_line:
                return
            if not self.shown and not self.at_line_start:
                self.mid_line = True             # the log is in the middle of a line
                return
            if self.partial and time.monotonic() - self.partial_since > HOLD:
                self.out.write((self._erase if self.shown else "") + self.partial)
                self.partial, self.shown, self.mid_line = "", False, True
                return
            self.out.write((self._erase if self.shown else "") + self.drawn)
            self.shown = True

    def _render(self, words: str) -> str:
        """The status line as rich renders it: one line, cut with an ellipsis
        one column short of the width (a line that fills the last column
        leaves some terminals about to wrap, and the erase would then take
        the wrong row)."""
        text = self._text(words, no_wrap=True, overflow="ellipsis")
        with self.console.capture() as cap:
            self.console.print(self._constrain(text, width=max(10, self._columns() - 1)),
                               end="")
        # (a renderable's lines end with a newline: the status's must not)
        return cap.get().split("\n", 1)[0]

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

    def clear(self) -> None:
        """Take the status away and write what the log still holds."""
        with self.lock:
            if self.shown:
                self.out.write(self._erase)
            self.out.write(self.partial)
            self.at_line_start = not self.partial and not self.mid_line
            self.partial, self.shown, self.mid_line = "", False, False
            self.drawn = None
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
