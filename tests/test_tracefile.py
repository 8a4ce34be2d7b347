"""The trace format: round trips, random access, damage of every kind, the golden v1 trace."""

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixrec.recorder.errors import BadInput, NixrecError
from nixrec.recorder.tracefile import (
    Event, TraceWriteError, TraceWriter, open_trace,
)
from nixrec.recorder.tracefile import format as fmt
from nixrec.recorder.tracefile import reader as reader_mod

from tracebuild import TraceBuilder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "fixtures", "golden")


# -- helpers -------------------------------------------------------------------

def sample_builder(files=6) -> TraceBuilder:
    """A small build: sh -> make -> gcc -> cc1 per file, with misses and output."""
    t = TraceBuilder()
    sh = t.builder(argv=["sh", "-c", "make"])
    make = t.fork(sh, argv=["make"], path="/bin/make")
    for i in range(files):
        cc = t.fork(make, argv=["gcc", f"f{i}.c"], path="/bin/gcc")
        cc1 = t.fork(cc, argv=["cc1", f"f{i}.c"], path="/libexec/cc1")
        t.open(cc1, f"f{i}.c")
        t.open(cc1, "/usr/include/zlib.h", errno="ENOENT" if i == 3 else None)
        t.write(cc1, 2, b"warning: x\n")
        t.exit(cc1, 0)
        t.wait(cc, cc1)
        t.exit(cc, 0)
    t.connect(make, "1.1.1.1:80", errno="ENETUNREACH")
    t.exit(make, 2)
    t.wait(sh, make)
    t.exit(sh, 2)
    return t


def save(t, path, chunk_events, proc_block=4096):
    t.save(path, header={"drv": "x"}, summary={"ok": True}, chunk_events=chunk_events,
           proc_block=proc_block)
    with open(path, "rb") as f:
        return f.read()


def layout(data: bytes):
    """(data_start, [(offset, end, first_seq, count)], index_offset) of a whole trace."""
    _, _, header_len, _ = fmt.PREFIX.unpack_from(data)
    start = fmt.PREFIX.size + header_len
    index_offset, _ = fmt.parse_footer(data[-fmt.FOOTER_SIZE:])
    chunks, off = [], start
    while off < index_offset:
        procs = fmt.parse_index_head(data[off:off + fmt.INDEX_HEAD.size], fmt.PROCS_TAG)
        if procs is not None:                 # a v2 process-table block
            off += fmt.INDEX_HEAD.size + procs[0]
            continue
        comp_len, _, first, count, _ = fmt.parse_chunk_head(data[off:off + fmt.CHUNK_HEAD_SIZE])
        end = off + fmt.CHUNK_HEAD_SIZE + comp_len
        chunks.append((off, end, first, count))
        off = end
    return start, chunks, index_offset


def read_all(path):
    r = open_trace(path)
    return r, list(r.events())


# -- round trip ------------------------------------------------------------------

I64 = st.integers(min_value=-2**63, max_value=2**63 - 1)
# Paths as the OS hands them to the tracer: any bytes, os.fsdecode'd (so
# non-UTF-8 names arrive as surrogateescape), plus any ordinary text.
paths = st.one_of(st.binary(max_size=40).map(os.fsdecode),
                  st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
scalars = st.one_of(st.none(), st.booleans(), I64, paths, st.binary(max_size=60))
arg_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
events_st = st.builds(
    Event,
    kind=st.sampled_from(["syscall", "exec", "fork", "exit", "signal", "output"]),
    proc=st.sampled_from(["1", "1.1", "1.2", "1.1.1", "1.10.3"]),
    pid=st.integers(min_value=0, max_value=2**31),
    syscall=st.one_of(st.none(), st.sampled_from(["openat", "execve", "write"]), paths),
    path=st.one_of(st.none(), paths), path2=st.one_of(st.none(), paths),
    flags=st.one_of(st.none(), I64), result=st.one_of(st.none(), I64),
    errno=st.one_of(st.none(), st.sampled_from(["ENOENT", "EACCES"])),
    args=st.dictionaries(paths, arg_values, max_size=4),
    time=st.integers(min_value=0, max_value=2**62),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=st.lists(events_st, max_size=40), chunk=st.integers(min_value=1, max_value=9))
def test_round_trip_any_events(evs, chunk):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.nixrec")
        header = {"drv": "Derive(...)", "blob": b"\x00\xff", "n": [1, 2]}
        with TraceWriter(path, header, chunk_events=chunk) as w:
            for ev in evs:
                w.append(ev)
            w.close({"done": 1}, [])
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
        r, got = read_all(path)
        assert got == evs
        assert r.header == header and r.summary == {"done": 1}
        assert r.complete and r.problems == [] and r.last_seq == len(evs)


def proc_blocks(data: bytes):
    """[(offset, end)] of the PROC blocks of a whole v2 trace."""
    start, chunks, index_offset = layout(data)
    ends = {start} | {c[1] for c in chunks}
    out = []
    for off in sorted(ends):
        head = fmt.parse_index_head(data[off:off + fmt.INDEX_HEAD.size], fmt.PROCS_TAG)
        while head is not None:
            end = off + fmt.INDEX_HEAD.size + head[0]
            out.append((off, end))
            off = end
            head = fmt.parse_index_head(data[off:off + fmt.INDEX_HEAD.size], fmt.PROCS_TAG)
    return out


# proc_block=2: the process table of exited processes goes to the file as the
# recording goes (format v2); 4096: a small build keeps it all in the index.
@pytest.mark.parametrize("proc_block", [4096, 2])
def test_round_trip_builder_and_processes(tmp_path, proc_block):
    t = sample_builder()
    data = save(t, tmp_path / "t.nixrec", 7, proc_block)
    assert (len(proc_blocks(data)) > 2) == (proc_block == 2)
    r, got = read_all(tmp_path / "t.nixrec")
    assert got == t.events
    assert r.processes == {p.proc: p for p in t.processes}
    assert r.processes["1.1.2.1"].argv == ["cc1", "f1.c"]
    assert r.processes["1.1"].exit_status == 2 and r.processes["1.1"].parent == "1"


def test_argv0_at_follows_fork_and_exec(tmp_path):
    t = TraceBuilder()
    sh = t.builder(argv=["/bin/sh", "-c", "x"])
    child = t.fork(sh)                        # runs sh until it execs
    before = t.stat(child, "/a")
    ex = t.exec(child, ["/usr/bin/cc1", "x.c"])
    after = t.stat(child, "/b")
    save(t, tmp_path / "t.nixrec", 2)
    r = open_trace(tmp_path / "t.nixrec")
    assert r.argv0_at(child, before.seq) == "sh"
    assert r.argv0_at(child, ex.seq) == "cc1"
    assert r.argv0_at(r.processes[child], after.seq) == "cc1"
    assert r.argv0_at("9.9", 3) is None


def test_argv0_at_without_index_uses_the_chunk(tmp_path):
    t = sample_builder()
    data = save(t, tmp_path / "t.nixrec", 5)
    _, _, index_offset = layout(data)
    (tmp_path / "cut.nixrec").write_bytes(data[:index_offset])
    whole, cut = open_trace(tmp_path / "t.nixrec"), open_trace(tmp_path / "cut.nixrec")
    for ev in t.events:
        assert cut.argv0_at(ev.proc, ev.seq) == whole.argv0_at(ev.proc, ev.seq)
    assert cut._folded is None        # answered from single chunks, no full scan


# -- random access -----------------------------------------------------------------

def test_events_from_any_seq_equals_tail(tmp_path, monkeypatch):
    t = sample_builder(files=30)
    save(t, tmp_path / "t.nixrec", 13)
    r, full = read_all(tmp_path / "t.nixrec")
    n = len(full)
    for start in range(1, n + 2):
        assert list(r.events(start)) == full[start - 1:]
        assert r.event(start) == (full[start - 1] if start <= n else None)
    assert list(r.events(20, 45)) == full[19:45]

    decoded = []
    real = fmt.decode_chunk
    monkeypatch.setattr(fmt, "decode_chunk", lambda raw, first: decoded.append(first)
                        or real(raw, first))
    r2 = open_trace(tmp_path / "t.nixrec")
    assert next(r2.events(n - 2)).seq == n - 2
    assert decoded == [((n - 3) // 13) * 13 + 1]      # only the chunk holding n-2


def test_random_access_without_index_walks_headers_only(tmp_path, monkeypatch):
    t = sample_builder(files=20)
    data = save(t, tmp_path / "t.nixrec", 10)
    _, _, index_offset = layout(data)
    (tmp_path / "cut.nixrec").write_bytes(data[:index_offset])
    decoded = []
    real = fmt.decode_chunk
    monkeypatch.setattr(fmt, "decode_chunk", lambda raw, first: decoded.append(first)
                        or real(raw, first))
    r = open_trace(tmp_path / "cut.nixrec")
    assert r.event(95) == t.events[94]
    assert decoded == [91]


# -- damage ------------------------------------------------------------------------

@pytest.mark.parametrize("proc_block", [4096, 2])
def test_truncation_at_every_byte(tmp_path, proc_block):
    t = sample_builder(files=3)
    data = save(t, tmp_path / "t.nixrec", 6, proc_block)
    start, chunks, index_offset = layout(data)
    assert len(chunks) >= 4
    cut_path = tmp_path / "cut.nixrec"
    for cut in range(len(data) + 1):
        cut_path.write_bytes(data[:cut])
        if cut < start:
            with pytest.raises(BadInput) as e:
                open_trace(cut_path)
            assert "\n" not in str(e.value)
            continue
        r, got = read_all(cut_path)
        k = sum(c[3] for c in chunks if c[1] <= cut)
        assert got == t.events[:k], cut
        index_end = len(data) - fmt.FOOTER_SIZE
        # A whole index is enough, even with the footer torn off.
        assert r.complete == (cut >= index_end), cut
        if r.complete:
            assert r.summary == {"ok": True} and r.problems == []
        else:
            assert r.problems == [f"recording interrupted after event {k}"], cut
            assert r.summary is None and r.last_seq == k
        if r.complete or k == len(t.events):
            assert r.processes == {p.proc: p for p in t.processes}, cut
        r.processes                          # rebuilt by folding: must not raise
        r.close()


@pytest.mark.parametrize("proc_block", [4096, 2])
def test_bit_flip_anywhere_never_raises(tmp_path, proc_block):
    t = sample_builder(files=2)
    data = save(t, tmp_path / "t.nixrec", 6, proc_block)
    start, chunks, index_offset = layout(data)
    blocks = proc_blocks(data)
    path = tmp_path / "flip.nixrec"
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x04
        path.write_bytes(bytes(bad))
        try:
            r, got = read_all(path)
        except BadInput as e:
            assert pos < start, pos           # only header damage is fatal
            assert "\n" not in str(e)
            continue
        problems = r.problems
        hit = [i for i, c in enumerate(chunks) if c[0] <= pos < c[1]]
        if hit:
            i = hit[0]
            off, _, first, count = chunks[i]
            assert any(p.startswith(f"chunk {i + 1} at offset {off} is corrupt")
                       and p.endswith(f"skipped events {first}-{first + count - 1}")
                       for p in problems), (pos, problems)
            assert got == t.events[:first - 1] + t.events[first - 1 + count:]
        else:
            assert got == t.events, pos       # index, footer or PROC block damage
            # A bad PROC block: said, and the table folded from the events.
            if any(o <= pos < e for o, e in blocks):
                assert any(p.startswith("process table block at offset") for p in problems) \
                    or not r.complete, (pos, problems)
            assert r.processes == {p.proc: p for p in t.processes}, pos
        r.processes


def test_flipped_payload_is_reported_and_skipped(tmp_path):
    t = sample_builder(files=3)
    data = save(t, tmp_path / "t.nixrec", 6)
    _, chunks, _ = layout(data)
    off, end, first, count = chunks[2]
    bad = bytearray(data)
    bad[end - 3] ^= 0xFF
    (tmp_path / "b.nixrec").write_bytes(bytes(bad))
    r, got = read_all(tmp_path / "b.nixrec")
    assert r.problems == [f"chunk 3 at offset {off} is corrupt (checksum mismatch); "
                          f"skipped events {first}-{first + count - 1}"]
    assert r.complete
    assert [e.seq for e in got] == [s for s in range(1, len(t.events) + 1)
                                    if not first <= s < first + count]


def test_bad_chunk_header_without_index_resyncs(tmp_path):
    t = sample_builder(files=3)
    data = save(t, tmp_path / "t.nixrec", 6)
    _, chunks, index_offset = layout(data)
    off, _, first, count = chunks[1]
    bad = bytearray(data[:index_offset])           # interrupted and damaged
    bad[off + 6] ^= 0x01
    (tmp_path / "b.nixrec").write_bytes(bytes(bad))
    r, got = read_all(tmp_path / "b.nixrec")
    last = chunks[-1][2] + chunks[-1][3] - 1
    assert r.problems == [
        f"chunk 2 at offset {off} is corrupt (bad chunk header); "
        f"skipped events {first}-{first + count - 1}",
        f"recording interrupted after event {last}"]
    assert len(got) == last - count


@pytest.mark.parametrize("content, message", [
    (b"", "is empty, not a nixrec trace"),
    (b"hello world, not a trace at all", "is not a nixrec trace (bad magic)"),
    (fmt.MAGIC[:5], "truncated header"),
    (fmt.MAGIC + b"\x01\x00", "truncated header"),
    (fmt.PREFIX.pack(fmt.MAGIC, 7, 0, 0), "trace format v7 is newer than this nixrec "
                                          "(reads up to v2)"),
    (fmt.PREFIX.pack(fmt.MAGIC, 1, 10, 0) + b"x" * 10, "header is corrupt"),
])
def test_unreadable_files_are_one_line_bad_input(tmp_path, content, message):
    p = tmp_path / "bad.nixrec"
    p.write_bytes(content)
    with pytest.raises(BadInput) as e:
        open_trace(p)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        open_trace(tmp_path / "nope.nixrec")
    with pytest.raises(BadInput, match="is a directory"):
        open_trace(tmp_path)


def test_format_version_is_read_from_one_constant(tmp_path):
    p = tmp_path / "t.nixrec"
    with TraceWriter(p, {}) as w:
        w.close()
    assert struct.unpack_from("<I", p.read_bytes(), 8)[0] == fmt.FORMAT_VERSION


# -- the writer ----------------------------------------------------------------------

def test_writer_rejects_out_of_order_seq_and_use_after_close(tmp_path):
    w = TraceWriter(tmp_path / "t.nixrec", {})
    assert w.append(Event("syscall", "1")) == 1
    with pytest.raises(ValueError, match="out of order"):
        w.append(Event("syscall", "1", seq=5))
    assert w.append(Event("syscall", "1", seq=2)) == 2
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.append(Event("syscall", "1"))


def test_unpackable_args_fail_at_append_not_at_flush(tmp_path):
    w = TraceWriter(tmp_path / "t.nixrec", {}, chunk_events=4)
    w.append(Event("syscall", "1"))
    ev = Event("syscall", "1", args={"x": object()})
    with pytest.raises(TypeError):
        w.append(ev)
    assert ev.seq == 0
    w.append(Event("syscall", "1"))
    w.close()
    assert [e.seq for e in open_trace(tmp_path / "t.nixrec").events()] == [1, 2]


def test_cannot_create_is_one_line_error(tmp_path):
    with pytest.raises(TraceWriteError) as e:
        TraceWriter(tmp_path / "no" / "dir" / "t.nixrec", {})
    assert "cannot create trace" in str(e.value) and e.value.exit_code == 2


def test_exception_in_with_block_leaves_an_interrupted_trace(tmp_path):
    p = tmp_path / "t.nixrec"
    with pytest.raises(RuntimeError):
        with TraceWriter(p, {"h": 1}, chunk_events=3) as w:
            for i in range(7):
                w.append(Event("syscall", "1", syscall="getpid", result=i))
            raise RuntimeError("tracer bug")
    r, got = read_all(p)
    assert len(got) == 7 and not r.complete
    assert r.problems == ["recording interrupted after event 7"]


def test_old_chunk_is_flushed_by_time(tmp_path):
    p = tmp_path / "t.nixrec"
    w = TraceWriter(p, {}, chunk_events=10_000, max_chunk_age=0.05)
    w.append(Event("syscall", "1"))
    assert len(list(open_trace(p).events())) == 0
    time.sleep(0.1)
    w.append(Event("syscall", "1"))         # this append sees the old chunk and flushes
    r = open_trace(p)
    assert [e.seq for e in r.events()] == [1, 2] and r.interrupted_after == 2
    w.close()


def _event(i):
    return Event("syscall", "1" if i % 3 else "1.1", pid=100 + i % 3, syscall="openat",
                 path=f"/p/{i % 17}", result=3, args={"fd": i}, time=i * 10)


def _as_killed(p):
    """The file as a recorder killed now would leave it (the writer stays open)."""
    copy = str(p) + ".killed"
    with open(p, "rb") as f, open(copy, "wb") as g:
        g.write(f.read())
    return open_trace(copy)


def test_pieces_hold_the_chunk_being_filled(tmp_path):
    # piece_age 0: every append writes a piece; the file read at any moment
    # has every event, in chunks and then in the pieces of the next one.
    p = tmp_path / "t.nixrec"
    w = TraceWriter(p, {"h": 1}, chunk_events=30, piece_age=0.0)
    for i in range(1, 101):
        w.append(_event(i))
        r = _as_killed(p)
        got = list(r.events())
        assert [(e.seq, e.proc, e.pid, e.path, e.args, e.time) for e in got] == \
            [(j, *(lambda e: (e.proc, e.pid, e.path, e.args, e.time))(_event(j)))
             for j in range(1, i + 1)], i
        assert r.problems == [f"recording interrupted after event {i}"]
        assert r.argv0_at("1", i) is None
    w.close()
    r = open_trace(p)
    assert r.complete and r.problems == [] and r.last_seq == 100
    data = open(p, "rb").read()
    assert fmt.TAIL_TAG not in data          # a whole trace has no piece left
    assert [c[2] for c in w.chunks] == [30, 30, 30, 10]


def test_pieces_wait_for_their_age(tmp_path):
    p = tmp_path / "t.nixrec"
    w = TraceWriter(p, {}, chunk_events=10_000, piece_age=0.05)
    w.append(_event(1))
    w.tick()
    assert _as_killed(p).last_seq == 0        # younger than piece_age: in memory
    assert not w.due(time.monotonic())
    time.sleep(0.06)
    assert w.due(time.monotonic())
    w.tick()                                  # the idle tracer's tick writes it
    assert _as_killed(p).last_seq == 1 and not w.due(time.monotonic())
    w.append(_event(2))
    time.sleep(0.06)
    w.append(_event(3))                       # an append finds 2 old: 2 and 3 go
    r = _as_killed(p)
    assert [e.seq for e in r.events()] == [1, 2, 3]
    w.close()


class _Killed(Exception):
    pass


def _tear(monkeypatch, tag):
    """The next write of a `tag` block stops half way, as a SIGKILL in the
    middle of a write(2) leaves it (the kernel stops between pages)."""
    from nixrec.recorder.tracefile import writer as writer_mod
    real = os.pwrite

    def torn(fd, data, offset):
        if bytes(data[:4]) == tag:
            monkeypatch.setattr(writer_mod.os, "pwrite", real)
            real(fd, bytes(data[:len(data) // 2]), offset)
            raise _Killed()
        return real(fd, data, offset)
    monkeypatch.setattr(writer_mod.os, "pwrite", torn)


def test_kill_while_a_chunk_is_written_over_its_pieces(tmp_path, monkeypatch):
    p = tmp_path / "t.nixrec"
    w = TraceWriter(p, {}, chunk_events=30, piece_age=0.0)
    for i in range(1, 30):
        w.append(_event(i))
    _tear(monkeypatch, fmt.CHUNK_TAG)
    with pytest.raises(_Killed):
        w.append(_event(30))                  # the chunk is whole: written over its pieces
    r = open_trace(p)
    assert [e.seq for e in r.events()] == list(range(1, 31))
    assert r.problems == ["recording interrupted after event 30"]


def test_kill_while_a_piece_is_written(tmp_path, monkeypatch):
    p = tmp_path / "t.nixrec"
    w = TraceWriter(p, {}, chunk_events=30, piece_age=0.0)
    for i in range(1, 41):
        w.append(_event(i))
    _tear(monkeypatch, fmt.TAIL_TAG)
    with pytest.raises(_Killed):
        w.append(_event(41))
    r = open_trace(p)
    assert [e.seq for e in r.events()] == list(range(1, 41))
    assert r.problems == ["recording interrupted after event 40"]


KILLED_WRITER = textwrap.dedent("""
    import sys
    from nixrec.recorder.tracefile import Event, TraceWriter
    w = TraceWriter(sys.argv[1], {"child": True}, chunk_events=100)
    i = 0
    while True:
        i += 1
        w.append(Event("syscall", "1.%d" % (i % 7 + 1), pid=i % 7 + 10, syscall="openat",
                       path="/nix/store/x/%d" % (i % 50), result=i, time=i * 3))
""")


def test_sigkilled_writer_reads_to_last_complete_chunk(tmp_path):
    p = tmp_path / "k.nixrec"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(p)])
    try:
        deadline = time.time() + 30
        while time.time() < deadline and (not p.exists() or p.stat().st_size < 20_000):
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    r, got = read_all(p)
    assert not r.complete and r.summary is None
    assert r.last_seq >= 100 and len(got) == r.last_seq
    assert r.problems == [f"recording interrupted after event {r.last_seq}"]
    for ev in got:
        i = ev.seq
        assert (ev.proc, ev.pid, ev.path, ev.result, ev.time) == \
            (f"1.{i % 7 + 1}", i % 7 + 10, f"/nix/store/x/{i % 50}", i, i * 3)


def test_disk_full_keeps_written_chunks(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    if not mounted:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot mount a tmpfs (needs root) and CI=true")
        pytest.skip("cannot mount a tmpfs for the disk-full test (needs root)")
    try:
        path = mnt / "t.nixrec"
        w = TraceWriter(path, {}, chunk_events=20)
        with pytest.raises(TraceWriteError) as e:
            for i in range(100_000):
                w.append(Event("output", "1", syscall="write",
                               args={"fd": 1, "data": os.urandom(200)}))
        assert str(e.value) == f"cannot write trace {path}: No space left on device"
        written = sum(c[2] for c in w.chunks)
        w.close()
        r, got = read_all(path)
        assert written > 0 and len(got) == written and r.last_seq == written
        assert r.problems == [f"recording interrupted after event {written}"]
        r.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- golden ---------------------------------------------------------------------------

def _jsonable(v):
    sys.path.insert(0, GOLDEN)
    try:
        import make_golden
    finally:
        sys.path.remove(GOLDEN)
    return make_golden.jsonable(v)


@pytest.mark.parametrize("version", [1, 2])
def test_golden_reads_exactly(version):
    """v1 as the first writer made it; v2 with its process table in PROC blocks
    of 4 entries (several of them). The same build, read to the same content."""
    with open(os.path.join(GOLDEN, f"v{version}.expected.json")) as f:
        want = json.load(f)
    r = open_trace(os.path.join(GOLDEN, f"v{version}.nixrec"))
    assert want["format_version"] == version
    assert r.complete and r.problems == []
    assert _jsonable(r.header) == want["header"]
    assert _jsonable(r.summary) == want["summary"]
    assert r.last_seq == want["last_seq"] == len(want["events"])
    assert r.chunk_count == -(-want["last_seq"] // want["chunk_events"])
    assert [_jsonable(e.as_dict()) for e in r.events()] == want["events"]
    procs = [_jsonable(p.as_dict()) for _, p in sorted(r.processes.items())]
    assert procs == want["processes"]
    assert [_jsonable(e.as_dict()) for e in r.events(150, 160)] == want["events"][149:160]
    # Spot checks that read as prose, for whoever breaks this test.
    assert r.event(1).args["argv"] == ["sh", "-c", "make -j1"]
    assert r.processes["1.1.7"].exit_signal == "SIGKILL"
    cafe = [e for e in r.events() if e.path and "caf" in e.path]
    assert os.fsencode(cafe[0].path) == b"/build/src/caf\xe9.txt"
    missing = [e for e in r.events() if e.path and e.path.endswith("zlib.h")]
    assert {r.argv0_at(e.proc, e.seq) for e in missing} == {"cc1"}


def test_errors_derive_from_nixrec_error():
    assert issubclass(TraceWriteError, NixrecError)
    assert reader_mod.open_trace is open_trace
