"""open_trace / TraceReader: random access to a .nixrec file, whole or damaged.

A damaged trace is data, not an error: a missing index means the recording was
interrupted (every complete chunk is still read), a chunk with a bad checksum is
reported by number and offset and skipped. Only a file that is not a trace at
all, or whose header cannot be read, raises BadInput (one line).
"""

import bisect
import os
import stat

from nixrec.recorder.errors import BadInput
from nixrec.recorder.tracefile import format as fmt
from nixrec.recorder.tracefile.model import Process
from nixrec.recorder.tracefile.procs import ProcessTracker, argv0_at, argv0_of
from nixrec.recorder.tracefile.phases import PhaseTracker, split_runs

# Decoded chunks kept around: `event(seq)` and `argv0_at` calls cluster, and
# one chunk of 8192 events is a few MB of Python objects. Unless they are a
# log's writes of up to 64 KB each: past _CACHE_BYTES of payload only the
# chunk in use is kept (a 2 GiB log has 40 MB chunks; four took `why` to 390 MB).
_CACHE_CHUNKS = 4
_CACHE_BYTES = 32 << 20
_RESYNC_WINDOW = 1 << 20


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters
_malloc_tuned = False


def _keep_big_buffers() -> None:
    """Have glibc's malloc serve a chunk's decompressed buffer (up to 8 MB,
    format.CHUNK_BYTES) from its heap and keep it for the next chunk, rather
    than map fresh zeroed pages for each: reading a 2 GiB log spent 1.8 s of
    its 3.2 s of CPU in the kernel faulting them in, 0.06 s so (issue 23).
    Freed memory is reused, not grown: peak RSS went from 67 to 75 MB."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, AttributeError):
        pass                    # not glibc: slower, the same result


def open_trace(path) -> "TraceReader":
    """Open a trace for reading, or raise BadInput saying in one line why not."""
    path = os.fspath(path)
    _keep_big_buffers()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInput(f"trace {path} does not exist") from None
    except OSError as e:
        raise BadInput(f"cannot read trace {path}: {e.strerror}") from None
    try:
        return TraceReader(path, fd)
    except BaseException:
        os.close(fd)
        raise


class _Chunk:
    """Where one chunk is and which events it holds; `bad` says why it is
    unusable. `pieces`: for the chunk a killed recorder was filling, the
    offsets of the pieces that hold it (writer.py), else None."""

    __slots__ = ("number", "offset", "first_seq", "count", "bad", "pieces")

    def __init__(self, number, offset, first_seq, count, bad=None, pieces=None):
        self.number, self.offset, self.first_seq, self.count = number, offset, first_seq, count
        self.bad = bad
        self.pieces = pieces

    @property
    def last_seq(self):
        return self.first_seq + self.count - 1


class _Loaded:
    """A decoded chunk: its events and, per process, the program history inside it."""

    __slots__ = ("events", "execs", "size")

    def __init__(self, events, starts, size=0):
        self.events = events
        self.size = size                # payload bytes (the cache's bound)
        first = events[0].seq if events else 0
        # Entry at first-1 (not first): the start value must lose to an exec at `first`.
        self.execs = {proc: [(first - 1, a)] for proc, a in starts.items()}
        for ev in events:
            if ev.kind == "exec" and not ev.failed:
                self.execs.setdefault(ev.proc, []).append(
                    (ev.seq, argv0_of(ev.args.get("argv"))))


class TraceReader:
    """A trace opened for reading (use open_trace). See docs/trace-format.md."""

    def __init__(self, path: str, fd: int):
        self.path, self._fd = path, fd
        try:
            self._open(fd)
        except BaseException:
            # open_trace closes fd; __del__ must not close it again later,
            # when its number may belong to another file.
            self._fd = None
            raise

    def _open(self, fd: int) -> None:
        path = self.path
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(f"{path} is a directory, not a trace")
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"{path} is not a regular file, not a trace")
        self._size = st.st_size
        self.header, self._data_start = self._read_header()
        self.summary = None
        self._phases = None
        self.complete = False
        self.last_seq = 0
        self._chunks = []
        self._index_processes = None
        self._execs = None
        self._folded = None
        self._procs = None
        self._head_problems = []         # about the index, before any chunk line
        self._chunk_problems = {}        # chunk number -> line
        self._verified = False
        self._cache = {}
        self._first_seqs = None
        self._interrupted = False
        # Called with each chunk problem line as it is found (the CLI warns
        # as it goes rather than after printing a million events).
        self.on_problem = None
        if not self._load_index_from_footer():
            self._walk()

    # -- opening ---------------------------------------------------------------

    def _pread(self, n: int, offset: int) -> bytes:
        return os.pread(self._fd, n, offset)

    def _read_header(self):
        path, size = self.path, self._size
        if size == 0:
            raise BadInput(f"{path} is empty, not a nixrec trace")
        prefix = self._pread(fmt.PREFIX.size, 0)
        if prefix[:len(fmt.MAGIC)] != fmt.MAGIC[:len(prefix)]:
            raise BadInput(f"{path} is not a nixrec trace (bad magic)")
        if len(prefix) < fmt.PREFIX.size:
            raise BadInput(f"{path}: truncated header ({size} bytes)")
        _, version, header_len, want = fmt.PREFIX.unpack(prefix)
        if version > fmt.FORMAT_VERSION:
            raise BadInput(f"{path}: trace format v{version} is newer than this nixrec "
                           f"(reads up to v{fmt.FORMAT_VERSION})")
        if version < fmt.OLDEST_VERSION:
            raise BadInput(f"{path}: trace format v{version} is not supported "
                           f"(reads v{fmt.OLDEST_VERSION} to v{fmt.FORMAT_VERSION})")
        end = fmt.PREFIX.size + header_len
        if end > size:
            raise BadInput(f"{path}: truncated header ({size} of at least {end} bytes)")
        body = self._pread(header_len, fmt.PREFIX.size)
        if fmt.crc(body) != want:
            raise BadInput(f"{path}: the trace header is corrupt (checksum mismatch)")
        try:
            header = fmt.unpack(body)
        except Exception:
            header = None
        if not isinstance(header, dict):
            raise BadInput(f"{path}: the trace header is corrupt (not a msgpack map)")
        return header, end

    def _load_index_from_footer(self) -> bool:
        if self._size < self._data_start + fmt.FOOTER_SIZE:
            return False
        foot = fmt.parse_footer(self._pread(fmt.FOOTER_SIZE, self._size - fmt.FOOTER_SIZE))
        if foot is None:
            return False
        index_offset, _ = foot
        if self._try_index(index_offset):
            return True
        self._head_problems.append(f"index at offset {index_offset} is corrupt; "
                                   "events found by walking the chunks")
        self._walk(interrupted=False)       # the footer says the recording ended
        return True

    def _block(self, offset: int, tag: bytes):
        """The unpacked msgpack of the index or PROC block (`tag`) at `offset`,
        or None unless it is whole and intact."""
        if not self._data_start <= offset < self._size:
            return None
        head = fmt.parse_index_head(self._pread(fmt.INDEX_HEAD.size, offset), tag)
        if head is None:
            return None
        comp_len, raw_len, want = head
        start = offset + fmt.INDEX_HEAD.size
        if start + comp_len > self._size:
            return None
        try:
            return fmt.unpack(fmt.decode_block(self._pread(comp_len, start), raw_len, want))
        except Exception:
            return None

    def _try_index(self, offset: int) -> bool:
        """Load the index at `offset` if it is whole and intact."""
        index = self._block(offset, fmt.INDEX_TAG)
        if index is None:
            return False
        try:
            chunks = [_Chunk(i + 1, off, first, n)
                      for i, (off, first, n) in enumerate(index["chunks"])]
            last_seq = int(index["last_seq"])
            processes = list(index["processes"])
            execs = {proc: [tuple(e) for e in hist] for proc, hist in index["execs"].items()}
            summary = index.get("summary") or {}
            blocks = [int(b) for b in index.get("proc_blocks") or ()]
            whole = bool(index.get("processes_whole"))
        except Exception:     # any malformed index is "no index": we walk instead
            return False
        # v2: the entries of processes that exited during the recording.
        spilled = []
        for off in blocks:
            got = self._read_procs(off)
            if got is None:
                self._head_problems.append(
                    f"process table block at offset {off} is corrupt; the process "
                    "table is folded from the events")
                processes = execs = None
                break
            entries, hist = got
            if not whole:
                spilled.extend(entries)
            for proc, h in hist.items():
                execs[proc] = h + execs.get(proc, [])
        if processes is not None and spilled:
            processes = spilled + processes
        # Only a whole, well-formed index replaces what a walk may have found.
        self._chunks, self.last_seq, self.summary = chunks, last_seq, summary
        self._index_processes, self._execs = processes, execs
        self.complete = True
        return True

    def _read_procs(self, off: int):
        """([process dicts], {proc: exec history}) of the PROC block at `off`, or None."""
        block = self._block(off, fmt.PROCS_TAG)
        try:
            entries, hist = block
            return list(entries), {p: [tuple(e) for e in h] for p, h in hist.items()}
        except Exception:
            return None

    def _walk(self, interrupted: bool = True) -> None:
        """Find the chunks of a trace without a usable index, reading headers only."""
        off, expected = self._data_start, 1
        while off + fmt.CHUNK_HEAD_SIZE <= self._size:
            head = self._pread(fmt.CHUNK_HEAD_SIZE, off)
            h = fmt.parse_chunk_head(head)
            if h is None and head[:4] == fmt.INDEX_TAG and self._try_index(off):
                return            # only the footer was lost: the index is whole
            p = fmt.parse_index_head(head, fmt.PROCS_TAG) if h is None else None
            if p is not None and off + fmt.INDEX_HEAD.size + p[0] <= self._size:
                off += fmt.INDEX_HEAD.size + p[0]     # a PROC block: the events
                continue                               # say the same, fold them
            if h is not None and h[2] == expected and \
                    off + fmt.CHUNK_HEAD_SIZE + h[0] <= self._size:
                self._chunks.append(_Chunk(len(self._chunks) + 1, off, h[2], h[3]))
                expected += h[3]
                off += fmt.CHUNK_HEAD_SIZE + h[0]
                continue
            if h is not None and off + fmt.CHUNK_HEAD_SIZE + h[0] > self._size:
                break             # the torn last chunk of an interrupted recording
            if head[:4] == fmt.TAIL_TAG:
                break             # the pieces of the chunk it was filling
            nxt = self._resync(off + 1, expected)
            if nxt is None:
                break
            bad_to, next_first = nxt
            self._chunks.append(_Chunk(len(self._chunks) + 1, off, expected,
                                       next_first - expected, bad="bad chunk header"))
            off, expected = bad_to, next_first
        if interrupted:
            expected += self._adopt_pieces(off, expected)
        self.last_seq = expected - 1
        if interrupted:
            self._interrupted = True
            self._head_problems.append(f"recording interrupted after event {self.last_seq}")

    def _adopt_pieces(self, off: int, expected: int) -> int:
        """The chunk a killed recorder was filling, from its pieces after
        `off`: -> how many events it adds after `expected` - 1.

        The pieces of a chunk follow each other, each starting where the one
        before ended. A whole copy of a finished chunk (one piece) is there
        when the recorder died while writing that chunk over its pieces: it
        stands in for the last chunk if that one is torn."""
        pieces = self._pieces(off)
        last = self._chunks[-1] if self._chunks else None
        if last is not None and not last.bad and last.pieces is None:
            whole = [p for p in pieces if p[1] == last.first_seq and p[2] == last.count
                     and p[3][0] == 0]
            if whole and self._check(last, decode=False, report=False) is None:
                self._chunks[-1] = _Chunk(last.number, whole[0][0], last.first_seq,
                                          last.count, pieces=[whole[0][0]])
        best = []
        for i, start in enumerate(pieces):
            if start[1] != expected or start[3] != (0, 0, 0):
                continue
            run, marks = [start], start[4]
            for p in pieces[i + 1:]:
                if p[1] == expected and p[3] == marks:
                    run.append(p)
                    marks = p[4]
            if sum(p[2] for p in run) > sum(p[2] for p in best):
                best = run
        if not best:
            return 0
        count = sum(p[2] for p in best)
        self._chunks.append(_Chunk(len(self._chunks) + 1, best[0][0], expected, count,
                                   pieces=[p[0] for p in best]))
        return count

    def _pieces(self, off: int) -> list:
        """[(offset, chunk's first seq, count, marks from, marks after)] of
        every intact piece from `off` on, in file order (a piece's marks say
        where in the chunk's events, strings and starts it begins)."""
        found = []
        while off < self._size:
            window = self._pread(_RESYNC_WINDOW + fmt.CHUNK_HEAD_SIZE, off)
            at = window.find(fmt.TAIL_TAG)
            while 0 <= at < _RESYNC_WINDOW:       # the rest: the next window's
                h = fmt.parse_chunk_head(window[at:at + fmt.CHUNK_HEAD_SIZE], fmt.TAIL_TAG)
                raw = self._piece_payload(off + at, h) if h is not None else None
                marks = fmt.piece_marks(raw) if raw is not None else None
                if marks is not None:
                    found.append((off + at, h[2], h[3]) + marks)
                at = window.find(fmt.TAIL_TAG, at + 1)
            off += _RESYNC_WINDOW
        return found

    def _piece_payload(self, offset: int, h):
        comp_len, raw_len, _, _, want = h
        if offset + fmt.CHUNK_HEAD_SIZE + comp_len > self._size:
            return None
        try:
            return fmt.decode_block(self._pread(comp_len, offset + fmt.CHUNK_HEAD_SIZE),
                                    raw_len, want)
        except fmt.FormatError:
            return None

    def _resync(self, off: int, expected: int):
        """(offset, first_seq) of the next good chunk after damaged bytes, or None."""
        while off < self._size:
            window = self._pread(_RESYNC_WINDOW + fmt.CHUNK_HEAD_SIZE, off)
            at = window.find(fmt.CHUNK_TAG)
            while at >= 0:
                h = fmt.parse_chunk_head(window[at:at + fmt.CHUNK_HEAD_SIZE])
                if h is not None and h[2] >= expected and \
                        off + at + fmt.CHUNK_HEAD_SIZE + h[0] <= self._size:
                    return off + at, h[2]
                at = window.find(fmt.CHUNK_TAG, at + 1)
            off += _RESYNC_WINDOW
        return None

    # -- problems ----------------------------------------------------------------

    @property
    def interrupted_after(self):
        """The last seq of an interrupted recording, or None if it ended properly."""
        return self.last_seq if self._interrupted else None

    @property
    def problems(self) -> list:
        """Every problem, one line each; checks every chunk's checksum once."""
        if not self._verified:
            self._verified = True
            for chunk in self._chunks:
                self._check(chunk, decode=False, inflate=False)
        return self.problems_seen

    @property
    def problems_seen(self) -> list:
        """The problems found so far without extra reading (cheap; for the CLI)."""
        chunk_lines = [self._chunk_problems[k] for k in sorted(self._chunk_problems)]
        index_lines = [p for p in self._head_problems if not p.startswith("recording")]
        tail = [p for p in self._head_problems if p.startswith("recording")]
        return index_lines + chunk_lines + tail

    def _report(self, chunk: _Chunk, why: str) -> None:
        chunk.bad = chunk.bad or why
        if chunk.number in self._chunk_problems:
            return
        span = (f"event {chunk.first_seq}" if chunk.count == 1
                else f"events {chunk.first_seq}-{chunk.last_seq}")
        line = self._chunk_problems[chunk.number] = (
            f"chunk {chunk.number} at offset {chunk.offset} is corrupt ({chunk.bad}); "
            f"skipped {span}")
        if self.on_problem is not None:
            self.on_problem(line)

    # -- chunks ------------------------------------------------------------------

    def _check(self, chunk: _Chunk, decode: bool, report: bool = True, inflate: bool = True):
        """The chunk's payload bytes (decoded to _Loaded if `decode`), or None if bad.
        inflate=False only checks the compressed block's checksum (`problems`: a
        2 GiB log is 2 GiB to decompress, 9 MB to checksum; a block whose
        checksum holds is the one written, and decompresses)."""
        if chunk.pieces is not None:
            return self._check_pieces(chunk, decode)
        if chunk.bad:
            self._report(chunk, chunk.bad)
            return None
        h = fmt.parse_chunk_head(self._pread(fmt.CHUNK_HEAD_SIZE, chunk.offset))
        if h is None or h[2] != chunk.first_seq or h[3] != chunk.count:
            if report:
                self._report(chunk, "bad chunk header")
            return None
        comp_len, raw_len, _, _, want = h
        block = self._pread(comp_len, chunk.offset + fmt.CHUNK_HEAD_SIZE)
        if not inflate:
            if fmt.crc(block) != want:
                self._report(chunk, "checksum mismatch")
                return None
            return block
        try:
            raw = fmt.decode_block(block, raw_len, want)
            if not decode:
                return raw
            events, starts = fmt.decode_chunk(raw, chunk.first_seq)
        except fmt.FormatError as e:
            if report:
                self._report(chunk, str(e))
            return None
        return _Loaded(events, starts, len(raw))

    def _check_pieces(self, chunk: _Chunk, decode: bool):
        """As _check, for the chunk a killed recorder left in pieces (found
        intact by _pieces: a failure here is a file changed since)."""
        raws = []
        for off in chunk.pieces:
            h = fmt.parse_chunk_head(self._pread(fmt.CHUNK_HEAD_SIZE, off), fmt.TAIL_TAG)
            raw = self._piece_payload(off, h) if h is not None else None
            if raw is None:
                self._report(chunk, "bad piece")
                return None
            raws.append(raw)
        if not decode:
            return raws
        try:
            events, starts = fmt.merge_pieces(raws, chunk.first_seq)
        except fmt.FormatError as e:
            self._report(chunk, str(e))
            return None
        return _Loaded(events, starts)

    def _load(self, chunk: _Chunk):
        loaded = self._cache.get(chunk.number)
        if loaded is None:
            # Room first, so a big chunk is not loaded while big ones are kept.
            while self._cache and (len(self._cache) >= _CACHE_CHUNKS or sum(
                    c.size for c in self._cache.values()) > _CACHE_BYTES):
                self._cache.pop(next(iter(self._cache)))
            loaded = self._check(chunk, decode=True)
            if loaded is None:
                return None
            self._cache[chunk.number] = loaded
        return loaded

    def _chunk_index(self, seq: int) -> int:
        """Index in self._chunks of the chunk holding `seq` (or the one after it)."""
        if self._first_seqs is None:        # the chunk list is fixed once open
            self._first_seqs = [c.first_seq for c in self._chunks]
        return max(0, bisect.bisect_right(self._first_seqs, seq) - 1)

    # -- events ------------------------------------------------------------------

    @property
    def chunk_count(self) -> int:
        return len(self._chunks)

    def events(self, from_seq: int = 1, to_seq: int = None):
        """The events with from_seq <= seq <= to_seq, in order; skips bad chunks.

        Seeks straight to the chunk holding from_seq; nothing before it is read.
        """
        from_seq = max(1, from_seq or 1)
        for chunk in self._chunks[self._chunk_index(from_seq):]:
            if to_seq is not None and chunk.first_seq > to_seq:
                return
            if chunk.last_seq < from_seq:
                continue
            loaded = self._load(chunk)
            if loaded is None:
                continue
            for ev in loaded.events:
                if ev.seq < from_seq:
                    continue
                if to_seq is not None and ev.seq > to_seq:
                    return
                yield ev
            loaded = None       # not held while the next chunk loads (_CACHE_BYTES)

    def event(self, seq: int):
        """The event numbered `seq`, or None if it is not in the trace (or in a bad chunk)."""
        return next(self.events(seq, seq), None)

    def __iter__(self):
        return self.events()

    # -- processes ---------------------------------------------------------------

    @property
    def processes(self) -> dict:
        """{tree path: Process}: from the index, or folded from the events without one."""
        if self._index_processes is not None:
            if self._procs is None:
                self._procs = {d["proc"]: _process(d) for d in self._index_processes}
            return self._procs
        return self._fold().procs

    def argv0_at(self, proc, seq: int):
        """The program (argv[0], no directories) `proc` was running at event `seq`.

        An exec at `seq` counts (the event shows the new program). `proc` is a
        tree path or a Process. None when unknown.
        """
        proc = proc.proc if isinstance(proc, Process) else proc
        if self._execs is not None:
            return argv0_at(self._execs, proc, seq)
        if self._folded is None and self._chunks:
            # No index: the chunk holding seq knows what proc ran at its start.
            chunk = self._chunks[self._chunk_index(seq)]
            loaded = self._load(chunk) if chunk.first_seq <= seq <= chunk.last_seq else None
            if loaded is not None and proc in loaded.execs:
                return argv0_at(loaded.execs, proc, seq)
        return argv0_at(self._fold().execs, proc, seq)

    @property
    def phases(self) -> list:
        """The stdenv phases (phases.py): the summary's, or folded from the
        events for a trace recorded before the recorder kept them (their
        refused calls are then unknown, None: which calls the sandbox refused
        is the recorder's rule, from the plan). A recorder before issue 22
        kept nixpkgs' two announcements of a phase as two runs: folded again."""
        if self._phases is None:
            kept = (self.summary or {}).get("phases")
            if isinstance(kept, list) and not split_runs(kept):
                self._phases = kept
            else:
                tracker = PhaseTracker()
                for ev in self.events():
                    tracker.see(ev)
                self._phases = [dict(p, refused=None) for p in tracker.result()]
        return self._phases

    def _fold(self) -> ProcessTracker:
        if self._folded is None:
            tracker = ProcessTracker()
            for ev in self.events():
                tracker.see(ev)
            self._folded = tracker
        return self._folded

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_PROCESS_FIELDS = frozenset(Process.__slots__)


def _process(d: dict) -> Process:
    # Unknown keys are fields a newer writer of the same format version added.
    return Process(**{k: v for k, v in d.items() if k in _PROCESS_FIELDS})
