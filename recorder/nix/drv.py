"""The Derivation model: .drv ATerm and JSON parse + unparse (nix-sandbox.md §1).

Strings. A .drv file is bytes and an env value may hold any byte (0..255, NUL
included). Every string field here is a `str` decoded from those bytes with
UTF-8 and errors='surrogateescape': valid UTF-8 reads as ordinary text, and
each byte that is not part of valid UTF-8 becomes one lone surrogate
U+DC80..U+DCFF. Encoding back with the same error handler gives the original
bytes, so bytes -> str -> bytes is exact for every input (`to_bytes`).
A str built by hand that holds other lone surrogates cannot be encoded, and
unparse raises ValueError for it.

Canonical form. Nix writes one form only: no whitespace, no trailing newline,
outputs / inputDrvs / their output names / inputSrcs / env sorted byte-wise,
escapes only for " \\ LF CR TAB in builder, args and env ("printString"), and
the other fields raw ("printUnquotedString"). `parse` accepts exactly that
form and rejects anything else with the byte offset, so that
unparse(parse(b)) == b holds for every file parse accepts, not only for the
ones Nix wrote. This is stricter than Nix's own reader (which takes `\\a` as
`a`, raw newlines and any order); a file Nix never writes is more likely a
hand edit or corruption than something a recording should silently normalise.

JSON (drvjson.py). `parse_json` reads Nix 2.8 `nix show-derivation` output (keyed by .drv
path), the 2.18..2.32 variants and v4 `nix derivation show`
({"version":4,"derivations":{basename: ...}}). `to_show_json` builds exactly
the object 2.8 prints and `dump_show_json` prints it the way 2.8 does
(2-space indent, control bytes as \\u00XX, other bytes raw).
"""

import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from nixrec.recorder.errors import BadInput

STORE_DIR = "/nix/store"
DYN_VERSION = "xp-dyn-drv"   # the only DrvWithVersion version Nix knows
# The biggest .drv files in nixpkgs are a few MiB (huge inline scripts);
# anything past this is not a derivation and reading it whole would stall.
MAX_DRV_BYTES = 64 * 1024 * 1024


def to_str(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def to_bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _sort_key(s: str) -> bytes:
    # Nix sorts std::string byte-wise (unsigned); str order differs for the
    # surrogates that stand for non-UTF-8 bytes, so always compare bytes.
    return to_bytes(s)


# ---------------------------------------------------------------- the model

@dataclass
class Output:
    """One output tuple (name is the key in Derivation.outputs).

    Input-addressed: path set, hash_algo and hash "". Fixed-output: all set
    (hash_algo like "sha256" or "r:sha256", hash lowercase hex). Floating CA:
    path "", hash_algo set, hash "". Deferred: all "". Impure: hash "impure".
    """
    path: str
    hash_algo: str = ""
    hash: str = ""


@dataclass
class DynNode:
    """An xp-dyn-drv inputDrvs node written in tuple form:
    `(["out",...],[("outName",node),...])`; a child node is a sorted list of
    output names or another DynNode. Kept as plain data so it round-trips."""
    outputs: List[str]
    children: Dict[str, Union[List[str], "DynNode"]] = field(default_factory=dict)


Node = Union[List[str], DynNode]


@dataclass
class Derivation:
    outputs: Dict[str, Output]
    input_drvs: Dict[str, Node]
    input_srcs: List[str]
    system: str
    builder: str
    args: List[str]
    env: Dict[str, str]
    version: Optional[str] = None   # None: "Derive(...)"; DYN_VERSION: DrvWithVersion

    @property
    def name(self) -> str:
        # Structured-attrs derivations carry `name` only inside __json.
        if "name" in self.env:
            return self.env["name"]
        try:
            sa = self.structured_attrs
        except BadInput:
            return ""
        return str(sa.get("name", "")) if isinstance(sa, dict) else ""

    @property
    def is_fixed_output(self) -> bool:
        # Nix 2.8 `DerivationType::CAFixed`: the single output "out" has a
        # path, a hash algorithm and a hash (the sandbox then keeps the network).
        o = self.outputs.get("out")
        return (len(self.outputs) == 1 and o is not None and bool(o.path)
                and bool(o.hash_algo) and bool(o.hash) and o.hash != "impure")

    @property
    def structured_attrs(self) -> Optional[dict]:
        raw = self.env.get("__json")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise BadInput(f"env __json (structured attrs) is not valid JSON: {e}")

    def bool_attr(self, name: str, drv_path: str, default: bool = False) -> bool:
        """Nix 2.8's ParsedDerivation::getBoolAttr: under structured attrs a
        JSON boolean (anything else is Nix's error), else true only for the
        env value "1" (what a Nix `true` becomes; "yes" is false)."""
        sa = self.structured_attrs
        if isinstance(sa, dict):
            if name not in sa:
                return default
            if not isinstance(sa[name], bool):
                raise BadInput(f"attribute '{name}' of derivation "
                               f"'{os.path.basename(drv_path)}' must be a Boolean")
            return sa[name]
        value = self.env.get(name)
        return default if value is None else value == "1"

    def strings_attr(self, name: str) -> Optional[List[str]]:
        """An env attribute as a list of words (getStringsAttr without
        structured attrs), or None when it is not set. Nix splits on
        " \t\n\r" only (tokenizeString), not on all Unicode spaces."""
        value = self.env.get(name)
        return None if value is None else [w for w in re.split(r"[ \t\n\r]+", value) if w]

    @property
    def pass_as_file(self) -> List[str]:
        # Nix ignores passAsFile under structured attrs (initEnv only honours it
        # when there is no __json), so report nothing there either.
        if "__json" in self.env:
            return []
        return self.strings_attr("passAsFile") or []

    @property
    def output_paths(self) -> Dict[str, str]:
        return {n: o.path for n, o in self.outputs.items()}


# ---------------------------------------------------------------- ATerm parse

class DrvSyntaxError(BadInput):
    """A .drv that is not in the form Nix writes; `offset` is the byte."""

    def __init__(self, offset: int, reason: str):
        super().__init__(f"at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


_UNESCAPE = {ord('"'): b'"', ord("\\"): b"\\", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_RUN_QUOTED = re.compile(rb'[^"\\\n\r\t]*')   # printString never leaves these raw
_RUN_RAW = re.compile(rb'[^"\\]*')              # printUnquotedString writes anything raw


def _show(data: bytes, pos: int) -> str:
    """A short, one-line, printable excerpt of what was found at pos."""
    chunk = data[pos:pos + 16]
    return repr(chunk)[1:] if chunk else "end of file"


def _byte(c: int) -> str:
    return repr(bytes([c]))[2:-1]   # 'a', '\\n', '\\x00': printable, one line


class _Parser:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def fail(self, reason: str, pos: int = None):
        raise DrvSyntaxError(self.pos if pos is None else pos, reason)

    def peek(self, tok: bytes) -> bool:
        return self.data.startswith(tok, self.pos)

    def expect(self, tok: bytes) -> None:
        if self.peek(tok):
            self.pos += len(tok)
            return
        rest = self.data[self.pos:]
        if len(rest) < len(tok) and tok.startswith(rest):
            self.fail(f"truncated: file ends, expected {tok.decode()!r}", len(self.data))
        self.fail(f"expected {tok.decode()!r}, found {_show(self.data, self.pos)}")

    def string(self, quoted: bool) -> str:
        start = self.pos
        self.expect(b'"')
        parts, run = [], _RUN_QUOTED if quoted else _RUN_RAW
        while True:
            m = run.match(self.data, self.pos)
            parts.append(m.group())
            self.pos = m.end()
            if self.pos >= len(self.data):
                self.fail(f"truncated: the file ends inside the string opened at byte {start}")
            c = self.data[self.pos]
            if c == 0x22:
                self.pos += 1
                return to_str(b"".join(parts))
            if c != 0x5C:
                self.fail(f"raw '{_byte(c)}' inside a string (Nix writes it escaped)")
            if not quoted:
                self.fail("backslash in a field Nix writes unescaped (paths, names, system)")
            if self.pos + 1 >= len(self.data):
                self.fail("truncated: file ends after a backslash", len(self.data))
            esc = _UNESCAPE.get(self.data[self.pos + 1])
            if esc is None:
                self.fail(f"unknown escape '\\{_byte(self.data[self.pos + 1])}' "
                          "(Nix writes only \\\" \\\\ \\n \\r \\t)")
            parts.append(esc)
            self.pos += 2

    def items(self, item) -> list:
        """`[` item {`,` item} `]`; self.starts gets each item's offset."""
        self.expect(b"[")
        out, starts = [], []
        self.starts = starts
        if self.peek(b"]"):
            self.pos += 1
            return out
        while True:
            starts.append(self.pos)
            out.append(item())
            self.starts = starts
            if self.peek(b"]"):
                self.pos += 1
                return out
            self.expect(b",")

    def sorted_keys(self, pairs, what: str):
        """Refuse unsorted or repeated keys: Nix writes std::map order."""
        starts = self.starts   # offsets of the list just read by items()
        keys = [_sort_key(k) for k, *_ in pairs]
        for i, (a, b) in enumerate(zip(keys, keys[1:])):
            if a >= b:
                why = "repeated" if a == b else "out of order"
                self.fail(f"{what} {to_str(b)!r} {why} (Nix writes them sorted, once)",
                          starts[i + 1])
        return pairs

    def str_list(self, quoted: bool, ordered: bool, what: str) -> List[str]:
        xs = self.items(lambda: self.string(quoted))
        if ordered:
            self.sorted_keys([(x,) for x in xs], what)
        return xs

    def tuple_(self, *fields):
        self.expect(b"(")
        vals = []
        for i, f in enumerate(fields):
            if i:
                self.expect(b",")
            vals.append(f())
        self.expect(b")")
        return tuple(vals)

    def output(self):
        s = lambda: self.string(False)
        name, path, algo, h = self.tuple_(s, s, s, s)
        return name, Output(path, algo, h)

    def node(self, dynamic: bool) -> Node:
        if not (dynamic and self.peek(b"(")):
            return self.str_list(False, True, "output name")
        outs, kids = self.tuple_(
            lambda: self.str_list(False, True, "output name"),
            lambda: self.keyed(lambda: self.tuple_(
                lambda: self.string(False), lambda: self.node(True)), "dynamic output"))
        return DynNode(outs, dict(kids))

    def keyed(self, item, what: str):
        return self.sorted_keys(self.items(item), what)

    def derivation(self) -> Derivation:
        version = None
        if self.peek(b"DrvWithVersion("):
            self.pos += len(b"DrvWithVersion(")
            vpos = self.pos
            version = self.string(False)
            if version != DYN_VERSION:
                self.fail(f"unknown derivation version {version!r}", vpos)
            self.expect(b",")
        elif self.peek(b"Derive("):
            self.pos += len(b"Derive(")
        elif not self.data:
            self.fail("empty file, not a derivation")
        elif b"Derive(".startswith(self.data) or b"DrvWithVersion(".startswith(self.data):
            self.fail("truncated: file ends inside 'Derive('", len(self.data))
        else:
            self.fail("not a derivation: expected 'Derive(' or 'DrvWithVersion(', "
                      f"found {_show(self.data, 0)}")
        outputs = self.keyed(self.output, "output")
        self.expect(b",")
        dyn = version is not None
        drvs = self.keyed(lambda: self.tuple_(
            lambda: self.string(False), lambda: self.node(dyn)), "input derivation")
        self.expect(b",")
        srcs = self.str_list(False, True, "input source")
        self.expect(b",")
        system = self.string(False)
        self.expect(b",")
        builder = self.string(True)
        self.expect(b",")
        args = self.str_list(True, False, "arg")
        self.expect(b",")
        env = self.keyed(lambda: self.tuple_(
            lambda: self.string(True), lambda: self.string(True)), "env key")
        self.expect(b")")
        if self.pos != len(self.data):
            self.fail(f"trailing bytes after the derivation: {_show(self.data, self.pos)}"
                      " (Nix writes no trailing newline)")
        return Derivation(dict(outputs), dict(drvs), srcs, system, builder, args,
                          dict(env), version)


def parse(data: bytes) -> Derivation:
    """Parse .drv bytes; raises DrvSyntaxError (a BadInput) with the byte offset."""
    return _Parser(bytes(data)).derivation()


# ---------------------------------------------------------------- ATerm unparse

_ESCAPE = {ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def _q(s: str) -> bytes:
    """printString: escape only " \\ LF CR TAB, every other byte raw."""
    return b'"' + to_bytes(s.translate(_ESCAPE)) + b'"'


def _u(s: str) -> bytes:
    """printUnquotedString: raw. A quote or backslash here would make a file
    that no reader (Nix included) reads back the same, so refuse it."""
    if '"' in s or "\\" in s:
        raise ValueError(f"{s!r}: a quote or backslash cannot appear in an unescaped .drv field")
    return b'"' + to_bytes(s) + b'"'


def _list(xs) -> bytes:
    return b"[" + b",".join(xs) + b"]"


def _names(xs) -> bytes:
    return _list(_u(x) for x in sorted(set(xs), key=_sort_key))


def _node(n: Node, dyn: bool) -> bytes:
    if isinstance(n, DynNode):
        if not dyn:
            raise ValueError("a dynamic inputDrvs node needs version='xp-dyn-drv'")
        kids = sorted(n.children.items(), key=lambda kv: _sort_key(kv[0]))
        return (b"(" + _names(n.outputs) + b","
                + _list(b"(" + _u(k) + b"," + _node(v, dyn) + b")" for k, v in kids) + b")")
    return _names(n)


def unparse(d: Derivation) -> bytes:
    """The exact bytes Nix writes for this derivation (sorted, no newline)."""
    by_key = lambda kv: _sort_key(kv[0])  # noqa: E731
    dyn = d.version is not None
    outs = _list(b"(" + b",".join((_u(n), _u(o.path), _u(o.hash_algo), _u(o.hash))) + b")"
                 for n, o in sorted(d.outputs.items(), key=by_key))
    drvs = _list(b"(" + _u(p) + b"," + _node(n, dyn) + b")"
                 for p, n in sorted(d.input_drvs.items(), key=by_key))
    body = b",".join((
        outs, drvs, _names(d.input_srcs), _u(d.system), _q(d.builder),
        _list(_q(a) for a in d.args),
        _list(b"(" + _q(k) + b"," + _q(v) + b")" for k, v in sorted(d.env.items(), key=by_key)),
    ))
    head = b"Derive(" if not dyn else b"DrvWithVersion(" + _u(d.version) + b","
    return head + body + b")"


# ---------------------------------------------------------------- files

def _read_capped(path: str) -> bytes:
    """Read a user-given file, turning every way it can be wrong into one line."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file")
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}")
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{path}: is a directory, not a .drv or .json file")
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{path}: not a regular file")
    if st.st_size > MAX_DRV_BYTES:
        raise BadInput(f"{path}: {st.st_size / 2**20:.1f} MiB is too big for a derivation "
                       f"(limit {MAX_DRV_BYTES >> 20} MiB); not reading it")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DRV_BYTES + 1)   # the size may change under us
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}")
    if len(data) > MAX_DRV_BYTES:
        raise BadInput(f"{path}: grew past {MAX_DRV_BYTES >> 20} MiB while being read; "
                       "not a derivation")
    if not data:
        raise BadInput(f"{path} at byte 0: empty file, not a derivation")
    return data


def _is_json(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


def load_all(path: str) -> List[Tuple[str, Derivation]]:
    """(drv path, Derivation) for each derivation in a .drv or JSON file."""
    data = _read_capped(path)
    if _is_json(data):
        from nixrec.recorder.nix.drvjson import parse_json
        return parse_json(data, path)
    try:
        d = parse(data)
    except DrvSyntaxError as e:
        raise BadInput(f"{path} {e}")
    return [(os.path.abspath(path), d)]


def load(path: str) -> Derivation:
    """The one derivation in a .drv file (or a JSON file holding exactly one)."""
    found = load_all(path)
    if len(found) != 1:
        raise BadInput(f"{path}: holds {len(found)} derivations, expected one")
    return found[0][1]
