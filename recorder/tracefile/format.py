"""The byte layout of a .nixrec file: the one place that knows it (docs/trace-format.md).

    prefix   MAGIC, version, header length, header crc32        (PREFIX, 20 bytes)
    header   msgpack dict given by the recorder (opaque here)
    chunk*   CHUNK_HEAD (32 bytes) + lz4 block of one msgpack chunk payload,
             and (v2) between chunks, process-table blocks: PROCS_HEAD (16 bytes)
             + lz4 block of msgpack [process dicts, {proc: exec history}]
    piece*   only in a file whose recorder died: the chunk it was filling, as
             pieces (the chunk head's layout, tag TAIL) appended every few
             tens of milliseconds, which a finished chunk writes over
    index    INDEX_HEAD (16 bytes) + lz4 block of one msgpack dict
    footer   FOOTER (24 bytes): where the index starts, the last seq

Everything is little-endian. Every part carries its own crc32 so a reader can
tell a torn or flipped chunk from a good one and skip only that chunk.
writer.py and reader.py use these helpers and never pack bytes themselves.
"""

import itertools
import struct
import zlib

import lz4.block
import msgpack

from nixrec.recorder.tracefile.model import Event

# THE format version. Bump it on any change a v1 reader would misread, and add
# a fixtures/golden/vN.nixrec for the old one (style.md, "Trace file").
# v2 (issue 6): the process table of processes that have exited is written
# in PROC blocks between chunks as the recording goes (the index lists them),
# so the recorder's memory follows the live processes, not all of them. A v1
# reader would take the index's short table for the whole one: hence v2.
FORMAT_VERSION = 2
OLDEST_VERSION = 1

# PNG-style magic: the high byte and the \n catch 7-bit and newline-mangling
# transfers (a trace pasted through a text channel), not only wrong files.
MAGIC = b"\x89NIXREC\n"
PREFIX = struct.Struct("<8sIII")          # magic, version, header_len, header_crc

CHUNK_TAG = b"CHNK"
# tag, compressed len, raw len, first seq, event count, payload crc; then a crc
# of those 28 bytes, so a walker can trust a length before seeking over it.
CHUNK_FIELDS = struct.Struct("<4sIIQII")
CHUNK_HEAD_SIZE = CHUNK_FIELDS.size + 4
# A piece of the chunk being filled (crash safety, docs/trace-format.md): the
# chunk head's layout, first seq = the chunk's, count = the piece's events.
# A reader of v2 before pieces skips them as the torn end of the file.
TAIL_TAG = b"TAIL"

INDEX_TAG = b"INDX"
INDEX_HEAD = struct.Struct("<4sIII")      # tag, compressed len, raw len, crc of block
PROCS_TAG = b"PROC"                       # same head layout as the index

FOOTER_TAG = b"NXRE"
FOOTER_FIELDS = struct.Struct("<QQ")      # index offset, last seq
FOOTER = struct.Struct("<QQI4s")          # ... + crc of the two fields + tag
FOOTER_SIZE = FOOTER.size

# Strings are stored as the bytes the OS gave (UTF-8, surrogateescape), so a
# non-UTF-8 file name read back equals os.fsdecode() of its bytes.
_STR_ERRORS = "surrogateescape"

# Order of the columns in a chunk payload (after the string table and count).
COLUMNS = ("kind", "proc", "pid", "dt", "syscall", "result", "errno",
           "path", "flags", "path2", "args")


class FormatError(Exception):
    """A part of the file is not what the layout says; the reader turns it into a problem."""


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def new_packer() -> msgpack.Packer:
    return msgpack.Packer(unicode_errors=_STR_ERRORS, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False, unicode_errors=_STR_ERRORS,
                           strict_map_key=False, use_list=True)


def safe_str(s: str) -> str:
    """`s` if it can be stored, else with its unstorable lone surrogates as '?'.

    os.fsdecode never yields those (only U+DC80..U+DCFF), so only a str built by
    hand can lose anything here.
    """
    try:
        s.encode("utf-8", _STR_ERRORS)
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


# -- prefix + header ---------------------------------------------------------

def pack_prefix_and_header(header: dict) -> bytes:
    body = new_packer().pack(header)
    return PREFIX.pack(MAGIC, FORMAT_VERSION, len(body), crc(body)) + body


# -- chunks ------------------------------------------------------------------

def pack_chunk(first_seq: int, count: int, payload: bytes, tag: bytes = CHUNK_TAG) -> bytes:
    """The bytes of one chunk (or, tag=TAIL_TAG, of one piece): its header,
    then the lz4 block of `payload`."""
    block = lz4.block.compress(payload, store_size=False)
    fields = CHUNK_FIELDS.pack(tag, len(block), len(payload), first_seq,
                               count, crc(block))
    return fields + struct.pack("<I", crc(fields)) + block


def pack_piece(first_seq: int, count: int, piece: bytes) -> bytes:
    """A piece of the chunk starting at first_seq: `count` events (ChunkEncoder.piece)."""
    return pack_chunk(first_seq, count, piece, TAIL_TAG)


def parse_chunk_head(head: bytes, tag: bytes = CHUNK_TAG):
    """(comp_len, raw_len, first_seq, count, payload_crc), or None if not a good
    head (of a chunk, or with tag=TAIL_TAG of a piece)."""
    if len(head) < CHUNK_HEAD_SIZE:
        return None
    fields = head[:CHUNK_FIELDS.size]
    (want,) = struct.unpack_from("<I", head, CHUNK_FIELDS.size)
    if crc(fields) != want:
        return None
    got, comp_len, raw_len, first_seq, count, payload_crc = CHUNK_FIELDS.unpack(fields)
    if got != tag or first_seq < 1:
        return None
    return comp_len, raw_len, first_seq, count, payload_crc


def decode_block(block: bytes, raw_len: int, want_crc: int) -> bytes:
    if crc(block) != want_crc:
        raise FormatError("checksum mismatch")
    try:
        raw = lz4.block.decompress(block, uncompressed_size=raw_len)
    except Exception as e:  # lz4 raises LZ4BlockError; any failure means bad bytes
        raise FormatError(f"lz4: {e}") from None
    if len(raw) != raw_len:
        raise FormatError("wrong decompressed length")
    return raw


class ChunkEncoder:
    """Builds one chunk's payload: column arrays plus a per-chunk string table.

    Columns rather than one array per event: runs of alike values (kinds, nil
    flags, small time deltas) sit next to each other, which lz4 compresses far
    better (the later target is <= 8 bytes/event). Each chunk has its own
    string table, so any chunk decodes without the ones before it.
    """

    def __init__(self):
        self._packer = new_packer()
        self.strings = {}              # str -> ref
        self.table = []                # ref -> str as stored
        self.cols = {name: [] for name in COLUMNS[:-1]}
        # The column lists by name, for add (called for every event).
        (self._kind, self._proc, self._pid, self._dt, self._syscall, self._result,
         self._errno, self._path, self._flags, self._path2) = (self.cols[n] for n in COLUMNS[:-1])
        self.args = []                 # msgpack bytes of each event's args (or nil)
        self.args_bytes = 0            # their total: a log's writes make big chunks
        self._last_pid = {}            # proc ref -> pid, to store repeats as nil
        self._last_time = 0
        self.argv0_at_start = []       # [proc ref, argv0 ref or nil, ...] (see add)

    def __len__(self):
        return len(self.args)

    def _ref(self, s):
        if s is None:
            return None
        ref = self.strings.get(s)
        if ref is None:
            ref = self.strings[s] = len(self.table)
            self.table.append(safe_str(s))
        return ref

    def add(self, ev: Event, argv0_before) -> None:
        """Append `ev`; `argv0_before` is its process's program before this event.

        The first time a process shows up in the chunk we store what it was
        running, so `argv0_at` works on a chunk alone (an interrupted trace
        has no index to ask).
        """
        # Pack args first: a value msgpack cannot store fails here, at the
        # append that brought it, not at the flush that would lose the chunk.
        args = self._pack_args(ev.args) if ev.args else b"\xc0"      # msgpack nil
        # _ref, inlined: kind, call, errno and most paths are in the table
        # already (the recorder's hot path: every event comes through here).
        strings, ref = self.strings, self._ref
        proc = strings.get(ev.proc)
        if proc is None:
            proc = ref(ev.proc)
        last_pid = self._last_pid
        if proc not in last_pid:
            self.argv0_at_start += [proc, ref(argv0_before)]
            last_pid[proc] = None
        pid = ev.pid
        self._pid.append(None if last_pid[proc] == pid else pid)
        last_pid[proc] = pid
        kind = strings.get(ev.kind)
        self._kind.append(ref(ev.kind) if kind is None else kind)
        self._proc.append(proc)
        self._dt.append(ev.time - self._last_time)
        self._last_time = ev.time
        call = strings.get(ev.syscall)
        self._syscall.append(ref(ev.syscall) if call is None else call)
        self._result.append(ev.result)
        err = strings.get(ev.errno)
        self._errno.append(ref(ev.errno) if err is None else err)
        path = strings.get(ev.path)
        self._path.append(ref(ev.path) if path is None else path)
        self._flags.append(ev.flags)
        self._path2.append(ref(ev.path2))
        self.args.append(args)
        self.args_bytes += len(args)

    def _pack_args(self, args) -> bytes:
        # Keys go through the string table: the same dozen names repeat.
        return self._packer.pack({self._ref(k): v for k, v in args.items()})

    def payload(self) -> bytes:
        p = self._packer
        n = len(self.args)
        parts = [p.pack_array_header(3 + len(COLUMNS)), p.pack(self.table), p.pack(n),
                 p.pack(self.argv0_at_start)]
        parts += [p.pack(self.cols[name]) for name in COLUMNS[:-1]]
        parts += [p.pack_array_header(n), b"".join(self.args)]
        return b"".join(parts)

    def marks(self):
        """(events, strings, starts) so far: where the next piece begins."""
        return len(self.args), len(self.table), len(self.argv0_at_start)

    def piece(self, since=(0, 0, 0)) -> bytes:
        """The payload of a piece: what was added after `since` (marks()).

        [events from, strings from, starts from, the new strings, the new
        starts, then each column's new values]: the slices of the lists the
        chunk's own payload will hold, so a piece costs what its events add,
        not what the whole chunk holds (a piece is written every few tens of
        milliseconds). A piece's refs index the chunk's whole table: pieces
        decode in a row from the first (merge_pieces).
        """
        e, t, s = since
        p = self._packer
        parts = [p.pack_array_header(5 + len(COLUMNS)), p.pack(e), p.pack(t), p.pack(s),
                 p.pack(self.table[t:]), p.pack(self.argv0_at_start[s:])]
        parts += [p.pack(self.cols[name][e:]) for name in COLUMNS[:-1]]
        args = self.args[e:]
        parts += [p.pack_array_header(len(args)), b"".join(args)]
        return b"".join(parts)


def decode_chunk(raw: bytes, first_seq: int):
    """(events, argv0 at chunk start {proc: argv0}) from a chunk payload."""
    try:
        table, n, starts, *cols = unpack(raw)
    except Exception as e:
        raise FormatError(f"bad payload: {e}") from None
    if len(cols) != len(COLUMNS) or any(len(c) != n for c in cols):
        raise FormatError("bad payload: column lengths differ")
    try:
        return _events_from_columns(table, n, cols, first_seq), _starts(table, starts)
    except (LookupError, TypeError, AttributeError, ValueError) as e:
        raise FormatError(f"bad payload: {e}") from None


def piece_marks(raw: bytes):
    """((events, strings, starts) of the chunk before the piece, and after
    it) from a piece payload, or None if it is not one."""
    try:
        e, t, s, strings, starts, *cols = unpack(raw)
        before = int(e), int(t), int(s)
        return before, (before[0] + len(cols[0]), before[1] + len(strings),
                        before[2] + len(starts))
    except Exception:
        return None


def merge_pieces(raws: list, first_seq: int):
    """(events, argv0 at chunk start) from a run of piece payloads, the first
    one starting the chunk and each starting where the one before ended."""
    table, starts, cols, n = [], [], [[] for _ in COLUMNS], 0
    for raw in raws:
        try:
            e, t, s, strings, new_starts, *new_cols = unpack(raw)
        except Exception as err:
            raise FormatError(f"bad piece: {err}") from None
        if (e, t, s) != (n, len(table), len(starts)) or len(new_cols) != len(COLUMNS):
            raise FormatError("bad piece: not the next one")
        count = len(new_cols[0])
        if any(len(c) != count for c in new_cols):
            raise FormatError("bad piece: column lengths differ")
        table += strings
        starts += new_starts
        for col, new in zip(cols, new_cols):
            col += new
        n += count
    try:
        return _events_from_columns(table, n, cols, first_seq), _starts(table, starts)
    except (LookupError, TypeError, AttributeError, ValueError) as err:
        raise FormatError(f"bad piece: {err}") from None


def _starts(table, starts) -> dict:
    return {table[starts[i]]: (None if starts[i + 1] is None else table[starts[i + 1]])
            for i in range(0, len(starts), 2)}


def _events_from_columns(table, n, cols, first_seq):
    # Column at a time, in comprehensions rather than a call per value: the
    # reader's cost is most of `why` on a large trace (docs/performance.md).
    kinds, procs, pids, dts, syscalls, results, errnos, paths, flags, paths2, args = cols

    def strs(col):
        return [None if r is None else table[r] for r in col]

    procs = [table[r] for r in procs]
    last_pid = {}
    for i, pid in enumerate(pids):       # a pid is stored only when it changes
        if pid is None:
            pids[i] = last_pid[procs[i]]
        else:
            last_pid[procs[i]] = pid
    args = [{table[k]: v for k, v in a.items()} if a else {} for a in args]
    return [Event(*e) for e in zip(
        [table[r] for r in kinds], procs, pids, strs(syscalls), strs(paths), strs(paths2),
        flags, results, strs(errnos), args, itertools.accumulate(dts),
        range(first_seq, first_seq + n))]


# -- index + footer ------------------------------------------------------------

def _pack_block(tag: bytes, obj) -> bytes:
    """An index or PROC block: INDEX_HEAD, then obj packed and compressed."""
    raw = new_packer().pack(obj)
    block = lz4.block.compress(raw, store_size=False)
    return INDEX_HEAD.pack(tag, len(block), len(raw), crc(block)) + block


def pack_index(index: dict) -> bytes:
    return _pack_block(INDEX_TAG, index)


def parse_index_head(head: bytes, tag=INDEX_TAG):
    """(comp_len, raw_len, crc) of an index head (or of a PROC block's with
    tag=PROCS_TAG), or None."""
    if len(head) < INDEX_HEAD.size:
        return None
    got, comp_len, raw_len, want = INDEX_HEAD.unpack_from(head)
    return (comp_len, raw_len, want) if got == tag else None


def pack_procs(processes: list, execs: dict) -> bytes:
    """A PROC block: finished processes' table entries and exec histories (v2)."""
    return _pack_block(PROCS_TAG, [processes, execs])


def pack_footer(index_offset: int, last_seq: int) -> bytes:
    fields = FOOTER_FIELDS.pack(index_offset, last_seq)
    return FOOTER.pack(index_offset, last_seq, crc(fields), FOOTER_TAG)


def parse_footer(data: bytes):
    """(index_offset, last_seq), or None if `data` is not a good footer."""
    if len(data) != FOOTER_SIZE:
        return None
    index_offset, last_seq, want, tag = FOOTER.unpack(data)
    if tag != FOOTER_TAG or crc(FOOTER_FIELDS.pack(index_offset, last_seq)) != want:
        return None
    return index_offset, last_seq
