"""The build's log as lines, in time linear in the log and memory bounded per line.

Output events are the build's writes to its log, cut wherever it called
write(2): a line can span thousands of events, and a progress bar (tools draw
them because Nix gives the builder a pty) redraws one line with `\\r` tens of
thousands of times without a newline. Joining each write to the line so far
and splitting again was quadratic in such a line: 80,000 redraws took `why`
153 s, 2 GiB without a newline past 15 minutes (issue 23).

Here each write is looked at once, as bytes: a line not ended yet keeps only
its visible text (what follows its last `\\r`, as a terminal shows it), at
most HEAD bytes from its start and TAIL from its end; of the lines one write
ends, only the last `keep` non-blank ones are decoded (the callers keep a
tail of lines, so the ones before would be dropped anyway).
"""

import re

# A line keeps its first HEAD and last TAIL bytes: the words the rules look for
# ("fatal error: zlib.h: No such file") are at a line's start, a progress
# bar's final state at its end. Raise them if a cause is cut out of a line.
HEAD = 1024
TAIL = 1024
CUT = " [...] "

# Nix gives the builder a pseudo-terminal, so gcc, make and friends colour their
# messages; the rules read the words ("fatal error: zlib.h: ..."), not the
# colours. An OSC (`ESC ] ... BEL`) is bounded so that a lone `ESC ]` does not
# make the search scan the rest of a long line every time.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b\n]{0,512}(?:\x07|\x1b\\)")


def plain(text: str) -> str:
    """A log's text without its colours (Nix gives the builder a pty)."""
    return _ANSI.sub("", text)


class _Pending:
    """The visible text of one process's line not ended yet, bounded."""

    __slots__ = ("head", "tail", "cut")

    def __init__(self):
        self.head, self.tail, self.cut = b"", b"", False

    def add(self, s: bytes) -> None:
        # Called for every write of a long line (352,000 for a 2 GiB one):
        # locals, and no copy of more than TAIL bytes.
        head, tail = self.head, self.tail
        body = s.rstrip(b"\r")
        ends_cr = (tail or head).endswith(b"\r")
        if not body:                    # only \r: a redraw begins, or a CR LF ends
            if not s or ends_cr:
                return
            s = b"\r"
        elif ends_cr or b"\r" in body:   # redrawn: only what follows the last \r shows
            head, tail, self.cut = b"", b"", False
            s = s[body.rfind(b"\r") + 1:]
        if len(head) < HEAD and not tail:
            room = HEAD - len(head)
            head += s[:room]
            s = s[room:]
        if s:
            over = len(tail) + len(s) - TAIL
            if over > 0:
                self.cut = True
                tail = s[-TAIL:] if len(s) >= TAIL else tail[over:] + s
            else:
                tail += s
        self.head, self.tail = head, tail

    def text(self) -> str:
        raw = self.head
        if self.tail:
            raw = raw + (CUT.encode() if self.cut else b"") + self.tail
        return line_text(raw)

    def __bool__(self):
        return bool(self.head or self.tail)


def line_text(raw: bytes) -> str:
    """A line's bytes as the text shown: decoded, its last redraw, no colours."""
    raw = raw.rstrip(b"\r")
    r = raw.rfind(b"\r")
    if r >= 0:
        raw = raw[r + 1:]
    if len(raw) > HEAD + TAIL + len(CUT):
        raw = raw[:HEAD] + CUT.encode() + raw[-TAIL:]
    return plain(raw.decode("utf-8", "replace"))


class LineSplitter:
    """Per process, the lines of its writes as they end. feed() returns the
    last `keep` non-blank lines one write ends; flush() what is left unended.
    Lines starting "@nix " are messages to Nix (stdenv's setPhase), which its
    log never shows: they are not log lines here either."""

    def __init__(self, keep: int):
        self.keep = keep
        self._pending = {}

    def feed(self, proc, data) -> list:
        if not data:
            return []
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        pending = self._pending.get(proc)
        last = data.rfind(b"\n")
        if last < 0:
            if pending is None:
                pending = self._pending[proc] = _Pending()
            pending.add(data)
            return []
        lines, first = self._ended(data, last)
        if first is not None:
            # The walk back reached the first line: it began in earlier writes.
            if pending is not None:
                pending.add(data[:first])
                head = pending.text()
            else:
                head = line_text(data[:first])
            if head.strip():
                lines.insert(0, head)
        self._pending.pop(proc, None)
        if last + 1 < len(data):
            self._pending[proc] = p = _Pending()
            p.add(data[last + 1:])
        return [ln for ln in lines if not ln.startswith("@nix ")]

    def _ended(self, data: bytes, last: int):
        """(the last `keep` non-blank lines that end in data[:last + 1] after
        its first newline, where the first line ends or None): walking back
        from the end, so a 64 KB write of short lines costs `keep` lines."""
        out = []
        end = last
        while len(out) < self.keep:
            start = data.rfind(b"\n", 0, end)
            if start < 0:
                out.reverse()
                return out, end            # data[:end] is the first line
            text = line_text(data[start + 1:end])
            if text.strip():
                out.append(text)
            end = start
        out.reverse()
        return out, None

    def flush(self) -> dict:
        """{proc: its unended line's text}, non-blank ones; forgets them."""
        out = {}
        for proc, p in self._pending.items():
            text = p.text()
            if text.strip():
                out[proc] = text
        self._pending = {}
        return out
