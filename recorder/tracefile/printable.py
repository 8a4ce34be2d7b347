"""Text the build chose, made safe to print: the one escaping function.

Paths, argv, log lines and addresses in a trace are whatever the build wrote.
Printed raw, `/usr/include/\\e]0;PWNED\\azlib.h` sets the terminal's title,
`ESC [2J` clears it, `\\r` overwrites what nixrec said, and a newline in an
argv forges a line of nixrec's own. Every verb passes such text through
escape() before it reaches a terminal (docs/security.md, "Hostile text").

It lives beside the trace format because every part prints trace text:
`events` (recorder/cli), the analysis verbs and replay's messages.
"""

import functools
import re

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# C0, DEL, C1 (a terminal in UTF-8 mode may read U+009B as CSI), surrogates
# (bytes that were not UTF-8: os.fsdecode's U+DC80..U+DCFF) and Unicode's
# invisible reordering controls (bidi embeddings, overrides, isolates: they
# make a terminal show text in another order than it has, CVE-2021-42574).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:                 # a byte that was not UTF-8
        return f"\\x{o - 0xDC00:02x}"
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


@functools.lru_cache(maxsize=8)
def _with(chars):
    return re.compile(_UNSAFE.pattern[:-1] + re.escape("".join(sorted(chars))) + "]")


def escape(value, keep: str = "", extra: dict = None) -> str:
    """`value` (str or bytes) with every control character as a visible escape
    (\\n, \\t, \\r, \\xNN, \\uNNNN); the characters in `keep` stay as they are
    (a renderer's own line layout), those in `extra` get the escape given
    there (a quoted string's `"` and backslash)."""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "surrogateescape")
    else:
        text = str(value)
    if extra:
        pattern = _with(frozenset(extra))
    else:
        pattern = _UNSAFE
        if pattern.search(text) is None:
            return text                       # the common case: nothing to do

    def one(m):
        ch = m.group()
        if ch in keep:
            return ch
        return extra[ch] if extra and ch in extra else _escape_char(ch)
    return pattern.sub(one, text)


def json_text(text: str) -> str:
    """JSON made with ensure_ascii=False, its control characters as \\uNNNN
    (json escapes C0 itself; DEL, C1 and bidi controls it leaves raw, and
    they can only be inside its strings, where \\uNNNN means the same)."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def escape_all(obj):
    """A copy of a report (dicts, lists, strings) with every string escape()d:
    what a text renderer formats when every string in it is the build's or
    safe to escape (nixrec's own words have no control characters)."""
    if isinstance(obj, str):
        return escape(obj)
    if isinstance(obj, dict):
        return {k: escape_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(escape_all(v) for v in obj)
    if isinstance(obj, (bytes, bytearray)):
        return escape(obj)
    return obj


# The streamed log keeps the build's colours (SGR: `ESC [ digits ; m`, what Nix's
# own log filter keeps) and its line layout (\n, \t, and \r for progress
# bars); any other control byte or sequence is shown escaped.
_SGR = re.compile(rb"\x1b\[[0-9;]{0,32}m")
_LOG_UNSAFE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]"
                         rb"|\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]")
# An escape sequence cut by the end of a write waits this long for its end.
_HELD = 40


class LogFilter:
    """The build's log as `record` and `replay` stream it to the terminal:
    bytes in, the same bytes out but for control characters (see _SGR)."""

    def __init__(self, write):
        self.write = write
        self.held = b""

    def __call__(self, data: bytes) -> None:
        data = self.held + bytes(data)
        cut = data.rfind(b"\x1b", max(0, len(data) - _HELD))
        if cut >= 0 and not _SGR.match(data, cut) and b"\n" not in data[cut:] \
                and re.fullmatch(rb"\x1b(\[[0-9;]*)?", data[cut:]):
            data, self.held = data[:cut], data[cut:]     # maybe an SGR, not ended yet
        else:
            self.held = b""
        if data:
            self.write(_shown_log(data))


def _shown_log(data: bytes) -> bytes:
    out, at = [], 0
    for m in _SGR.finditer(data):
        out.append(_LOG_UNSAFE.sub(_byte_escape, data[at:m.start()]))
        out.append(m.group())
        at = m.end()
    out.append(_LOG_UNSAFE.sub(_byte_escape, data[at:]))
    return b"".join(out)


def _byte_escape(m) -> bytes:
    ch = m.group().decode("utf-8")
    return _escape_char(ch).encode()


__all__ = ["escape", "escape_all", "json_text", "LogFilter"]
