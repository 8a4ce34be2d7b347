"""TraceWriter: appends events to a .nixrec file, one self-contained chunk at a time.

Crash safety comes from the order of writes, not from fsync: the header, then
each chunk written whole as soon as it ends, then the index and the footer
last. What a SIGKILLed recorder leaves is what it wrote (the page cache holds
it; only a machine crash loses more). So that it loses at most the last
~0.1 s of events, not the chunk being filled (up to `chunk_events` events or
`max_chunk_age` seconds), the events of that chunk go to the file in pieces
(tag TAIL) as soon as the oldest of them is `piece_age` old: each piece holds
only what was added since the last one (ChunkEncoder.piece), and the finished
chunk is written over them. Small chunks would do the same and cost 2-3x the
bytes per event (each chunk has its own string table: docs/trace-format.md).
fsync runs once, at close.
"""

import errno as _errno
import os
import time

from nixrec.recorder.errors import EXIT_BAD_INPUT, EXIT_HOST, NixrecError
from nixrec.recorder.tracefile import format as fmt
from nixrec.recorder.tracefile.model import Event, Process
from nixrec.recorder.tracefile.procs import ProcessTracker

# Errors that mean "the user gave a path we cannot create" rather than "the host
# ran out of something while writing": they exit 2 (bad input), the rest 3.
_PATH_ERRNOS = {_errno.ENOENT, _errno.ENOTDIR, _errno.EACCES, _errno.EISDIR,
                _errno.EROFS, _errno.EPERM, _errno.ENAMETOOLONG}

# How old the oldest event in memory may get before it goes to the file as
# a piece: a SIGKILLed recorder loses what is younger. 40 ms, with the
# watchdog's 20 ms tick and the C loop's 10 ms (fastpath.FLUSH_SECONDS),
# keeps the loss under 100 ms (issue 17); GNU hello writes ~25 pieces a
# second, each a few KiB.
PIECE_AGE = 0.04
# A chunk ends at chunk_events or when this old. It was 1 s while the chunk
# in memory was what a crash lost; with pieces it only spares a slow build a
# long run of pieces. 1 s made the bytes per event follow the build's speed:
# GNU hello on a loaded VM (1,760 events/s) took 7.39 B/event in 1-s chunks,
# and a slow hello trace re-chunked took 8.02 at 1 s, 5.57 at 10 s, 5.44 in
# 8192-event chunks (docs/performance.md, issue 17).
MAX_CHUNK_AGE = 10.0


class TraceWriteError(NixrecError):
    """The trace file cannot be written; the chunks already written stay readable.
    `errno`: the OS's (ENOSPC: the caller may say what filled the disk)."""

    exit_code = EXIT_HOST
    errno = None


# A chunk also ends at this many bytes of event arguments: a log's writes keep
# up to 64 KB each, and 8192 of them made 40 MB chunks that the recorder and
# every reader hold whole (a 2 GiB log: `why` at 390 MB, issue 23).
CHUNK_BYTES = 8 << 20


class TraceWriter:
    """Writes one recording. Memory: the chunk being filled, the chunk list and
    the table entries of processes still running (those of exited processes go
    to the file in PROC blocks of `proc_block` entries), never past events.

        with TraceWriter(path, header) as w:
            for ev in events:
                w.append(ev)
            w.close(summary, processes)
    """

    def __init__(self, path, header: dict, chunk_events: int = 8192,
                 max_chunk_age: float = MAX_CHUNK_AGE, proc_block: int = 4096,
                 piece_age: float = PIECE_AGE, name=None):
        self.path = os.fspath(path)
        # What messages call it: the recorder writes to a temporary name and
        # renames it into place (destination.py); the user knows the final one.
        self.name = os.fspath(name) if name is not None else self.path
        self.chunk_events = max(1, int(chunk_events))
        # Chunks end at 8192 events (what lz4 and the string table need to
        # reach ~5.6 bytes per event) or MAX_CHUNK_AGE; the pieces bound
        # what a crash loses.
        self.max_chunk_age = max_chunk_age
        self.piece_age = piece_age
        self.bytes_written = 0             # the end of the finished chunks and blocks
        self._tail = 0                     # the end of the pieces after them
        self._marks = (0, 0, 0)            # what of the chunk the pieces hold
        self._unwritten_since = None       # monotonic time of the oldest event not in the file
        self.chunks = []                   # [offset, first_seq, count] per chunk
        self.proc_blocks = []              # offset of each PROC block
        self.proc_block = max(1, int(proc_block))
        self._exited = []                  # procs whose table entry is final
        self._next_seq = 1
        self._tracker = ProcessTracker()
        self._enc = fmt.ChunkEncoder()
        self._chunk_started = time.monotonic()
        self._closed = False
        self._failed = None
        prefix = fmt.pack_prefix_and_header(header)   # an unpackable header fails here
        self._fd = self._open()
        self._write(prefix)

    # -- appending -------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def append(self, event: Event) -> int:
        """Store `event`; give it the next seq if its seq is 0; return its seq."""
        if self._failed or self._closed:
            self._check_usable()
        given = event.seq
        if given and given != self._next_seq:
            raise ValueError(f"event seq {given} is out of order "
                             f"(the next seq is {self._next_seq})")
        event.seq = self._next_seq
        try:
            self._enc.add(event, self._tracker.argv0(event.proc))
        except Exception:
            event.seq = given
            raise
        self._tracker.see(event)
        if event.kind == "exit":
            self._exited.append(event.proc)
        self._next_seq += 1
        # time.monotonic() is ~50 ns, small next to encoding one event, so it
        # runs on every append: a slow trickle of events is written on time too.
        now = time.monotonic()
        if self._unwritten_since is None:
            self._unwritten_since = now
        if len(self._enc) >= self.chunk_events or now - self._chunk_started > self.max_chunk_age \
                or self._enc.args_bytes >= CHUNK_BYTES:
            self.flush()
        elif now - self._unwritten_since >= self.piece_age:
            self._write_piece()
        return event.seq

    def due(self, now: float) -> bool:
        """Is something to be written by now? (a cheap look, no lock needed:
        tick() looks again)."""
        since = self._unwritten_since
        return since is not None and now - since >= self.piece_age

    def tick(self) -> None:
        """For an idle tracer loop (the recorder's watchdog, every 20 ms):
        write what waits as a piece once it is piece_age old, or end the chunk
        once it is max_chunk_age old."""
        if self._closed or self._failed or not len(self._enc):
            return
        now = time.monotonic()
        if now - self._chunk_started > self.max_chunk_age:
            self.flush()
        elif self.due(now):
            self._write_piece()

    def _write_piece(self) -> None:
        """Append what the chunk gained since the last piece, after the pieces
        before it (none is ever written over until the chunk is whole)."""
        n = len(self._enc)
        done = self._marks[0]
        if n > done:
            data = fmt.pack_piece(self._next_seq - n, n - done, self._enc.piece(self._marks))
            self._write_at(data, self._tail)
            self._tail += len(data)
            self._marks = self._enc.marks()
        self._unwritten_since = None

    def flush(self) -> None:
        """End the current chunk now and write it (no-op when it is empty)."""
        self._check_usable()
        n = len(self._enc)
        self._chunk_started = time.monotonic()
        if not n:
            return
        first = self._next_seq - n
        data = fmt.pack_chunk(first, n, self._enc.payload())
        offset = self.bytes_written
        if self._tail > offset:
            # The chunk goes where its pieces are. A kill in the middle of
            # that write (a write is cut between pages when a fatal signal
            # comes) would lose both, so first a whole copy as one piece,
            # past the end of both; the truncate then drops the copy.
            copy = fmt.pack_piece(first, n, self._enc.piece())
            self._write_at(copy, max(self._tail, offset + len(data)))
            self._write_at(data, offset, cut=False)
            self._truncate(offset + len(data))
        else:
            self._write_at(data, offset)
        self._enc = fmt.ChunkEncoder()
        self.bytes_written = self._tail = offset + len(data)
        self._marks, self._unwritten_since = (0, 0, 0), None
        self.chunks.append([offset, first, n])
        if len(self._exited) >= self.proc_block:
            self._write_procs()

    def _write_procs(self) -> None:
        """Move the table entries of exited processes from memory to a PROC
        block. After its exit event nothing changes a process's entry (tree
        paths are never reused), and its chunk is already written."""
        procs, execs = self._tracker.procs, self._tracker.execs
        done, self._exited = self._exited, []
        entries = [_process_dict(procs.pop(p)) for p in done if p in procs]
        hist = {p: [list(e) for e in execs.pop(p)] for p in done if p in execs}
        offset = self.bytes_written
        self._write(fmt.pack_procs(entries, hist))
        self.proc_blocks.append(offset)

    # -- closing ---------------------------------------------------------------

    def close(self, summary: dict = None, processes=None) -> None:
        """Write the last chunk, the index and the footer, fsync and close.

        `processes`: the recorder's process table (list of Process); when None
        the table folded from the appended events is stored.
        """
        if self._closed:
            return
        if self._failed:
            self._close_fd()
            return
        try:
            self.flush()
            index_offset = self.bytes_written
            self._write(fmt.pack_index(self._index(summary, processes)))
            self._write(fmt.pack_footer(index_offset, self.last_seq))
            self._fsync()
        finally:
            self._close_fd()

    def abandon(self) -> None:
        """Write what is buffered and close without an index: the trace then
        reads as "recording interrupted after event N", which is the truth."""
        if self._closed:
            return
        try:
            if not self._failed:
                self.flush()
        finally:
            self._close_fd()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            try:
                self.abandon()
            except NixrecError:
                pass            # keep the original exception, it says more
        return False

    def _index(self, summary, processes) -> dict:
        # The recorder's own table (`processes`), when given, is the whole
        # table: the readers then take only the exec histories from the PROC
        # blocks written meanwhile ("processes_whole").
        whole = processes is not None
        if processes is None:
            processes = list(self._tracker.procs.values())
        return {
            "chunks": self.chunks,
            "last_seq": self.last_seq,
            "summary": summary if summary is not None else {},
            "processes": [_process_dict(p) for p in processes],
            "execs": {proc: [list(e) for e in hist]
                      for proc, hist in self._tracker.execs.items()},
            "proc_blocks": self.proc_blocks,
            "processes_whole": whole,
        }

    # -- the OS ----------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed:
            raise self._failed
        if self._closed:
            raise ValueError(f"trace {self.path} is already closed")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                           0o644)
        except OSError as e:
            code = EXIT_BAD_INPUT if e.errno in _PATH_ERRNOS else EXIT_HOST
            err = TraceWriteError(f"cannot create trace {self.name}: {e.strerror}", code)
            err.errno = e.errno
            raise err from None

    def _write(self, data: bytes) -> None:
        """Write all of `data` at the end of the finished part (no piece is
        waiting then), or undo the torn part and raise."""
        self._write_at(data, self.bytes_written)
        self.bytes_written = self._tail = self.bytes_written + len(data)

    def _write_at(self, data: bytes, offset: int, cut=True) -> None:
        """Write all of `data` at `offset`, or cut the file there (cut=False:
        leave it as it is) and raise."""
        start, view = offset, memoryview(data)
        try:
            while view:
                n = os.pwrite(self._fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as e:
            self._fail(e, start if cut else None)

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as e:
            self._fail(e, None)

    def _fail(self, e: OSError, cut=None):
        # Cut the torn part (best effort) so the file ends where the last
        # whole chunk, block or piece does (a disk-full trace keeps the
        # pieces written before); the reader would cope anyway, but a clean
        # end reads faster. cut None: a chunk torn over its pieces, whose
        # whole copy lies past it, is left for the reader.
        if cut is not None:
            try:
                os.ftruncate(self._fd, cut)
            except OSError:
                pass
        self._failed = TraceWriteError(f"cannot write trace {self.name}: {e.strerror}")
        self._failed.errno = e.errno
        raise self._failed from None

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            if e.errno != _errno.EINVAL:      # EINVAL: a pipe or special file
                self._fail(e, None)

    def _close_fd(self) -> None:
        self._closed = True
        try:
            os.close(self._fd)
        except OSError:
            pass


def _process_dict(p) -> dict:
    return p.as_dict() if isinstance(p, Process) else dict(p)
