"""Fuzz the two parsers of untrusted bytes: the .drv parser and the trace reader.

Any input must end in a value or in BadInput/NixrecError (one line for the
user), never another exception (exit 70). Seeds are real files: a fixture
.drv and a small synthetic trace, mutated by hypothesis. Kept under ~30 s.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nixrec.recorder.nix import drv as drvmod
from nixrec.recorder.errors import NixrecError
from nixrec.recorder.tracefile import open_trace
from nixrec.recorder.tracefile.model import Event
from nixrec.recorder.tracefile.writer import TraceWriter

FAST = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

DRV_SEED = (b'Derive([("out","/nix/store/yq0l3xk7jcm7hpx38fgdqc9ihwm52imm-probe","","")],'
            b'[("/nix/store/0rwr55nn0rhmf29mk6h4cdc8wg9cnz8k-dep.drv",["dev","out"])],'
            b'["/nix/store/dfpbg6yyzr5ybw9m1k7c2i0qlnwbs5ky-busybox"],"x86_64-linux",'
            b'"/nix/store/dfpbg6yyzr5ybw9m1k7c2i0qlnwbs5ky-busybox/bin/sh",["-c","echo \\"hi\\"\\n"],'
            b'[("big","x\\ty"),("builder","/bin/sh"),("name","probe"),("out","/nix/store/yq0l3x'
            b'k7jcm7hpx38fgdqc9ihwm52imm-probe"),("passAsFile","big"),("system","x86_64-linux")])')
JSON_SEED = (b'{"/nix/store/0rwr55nn0rhmf29mk6h4cdc8wg9cnz8k-p.drv":{"outputs":{"out":{"path":'
             b'"/nix/store/yq0l3xk7jcm7hpx38fgdqc9ihwm52imm-p"}},"inputSrcs":[],"inputDrvs":{},'
             b'"system":"x86_64-linux","builder":"/bin/sh","args":[],"env":{"a":"b"}}}')


@st.composite
def mutated(draw, seed: bytes):
    """The seed with a few byte flips, cuts, insertions and deletions."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "set", "cut", "insert", "delete")))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


def _parse_drv(data: bytes):
    try:
        d = drvmod.parse(data)
    except NixrecError:
        return
    drvmod.unparse(d)          # what parses must print back without an exception


def test_drv_seed_parses():
    assert drvmod.parse(DRV_SEED).env["name"] == "probe"


@FAST
@given(mutated(DRV_SEED))
def test_drv_parser_mutations(data):
    _parse_drv(data)


@FAST
@given(st.binary(max_size=200))
def test_drv_parser_random_bytes(data):
    _parse_drv(data)


def _load_file(tmp_path, name, load, data):
    """A file loader given any bytes: a value or NixrecError, nothing else."""
    path = tmp_path / name
    path.write_bytes(data)
    try:
        load(str(path))
    except NixrecError:
        pass


@FAST
@given(mutated(JSON_SEED))
def test_drv_load_json_mutations(tmp_path, data):
    _load_file(tmp_path, "x.json", drvmod.load_all, data)


@FAST
@given(mutated(DRV_SEED))
def test_drv_load_file_mutations(tmp_path, data):
    _load_file(tmp_path, "x.drv", drvmod.load, data)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    """A small trace with several chunks, an index and varied events."""
    path = tmp_path_factory.mktemp("fuzz") / "seed.nixrec"
    header = {"drv_path": "/nix/store/x.drv", "plan": {"inputs": []}, "closure": []}
    with TraceWriter(path, header, chunk_events=6) as w:
        w.append(Event("exec", "1", 1, "execve", path="/bin/sh", result=0,
                       args={"argv": ["sh", "-c", "x"], "env": ["A=\udcff"]}))
        for i in range(12):
            w.append(Event("syscall", "1", 1, "openat", path=f"/build/f{i}", flags=0,
                           result=-1, errno="ENOENT"))
        w.append(Event("fork", "1", 1, "clone", result=2, args={"child": "1.1"}))
        w.append(Event("output", "1.1", 2, "write", result=3, args={"fd": 2, "data": b"hi\n"}))
        w.append(Event("exit", "1.1", 2, None, result=1, args={"status": 1, "signal": None}))
        w.append(Event("exit", "1", 1, None, result=1, args={"status": 1, "signal": None}))
        w.close({"exit_status": 1})
    return path.read_bytes()


def _read_all(path):
    try:
        r = open_trace(path)
    except NixrecError:
        return
    with r:
        _ = (r.summary, r.complete, r.problems, r.processes, r.interrupted_after)
        for ev in r.events():
            r.argv0_at(ev.proc, ev.seq)
        r.event(3)
        list(r.events(from_seq=5, to_seq=9))


@FAST
@given(data=st.data())
def test_trace_reader_mutations(tmp_path, small_trace, data):
    mangled = data.draw(mutated(small_trace))
    path = tmp_path / "m.nixrec"
    path.write_bytes(mangled)
    _read_all(str(path))


@FAST
@given(data=st.data())
def test_trace_reader_cuts(tmp_path, small_trace, data):
    cut = data.draw(st.integers(0, len(small_trace)))
    path = tmp_path / "c.nixrec"
    path.write_bytes(small_trace[:cut])
    _read_all(str(path))


def test_the_seed_trace_reads(tmp_path, small_trace):
    path = tmp_path / "s.nixrec"
    path.write_bytes(small_trace)
    with open_trace(str(path)) as r:
        assert r.complete and r.last_seq == 17 and r.problems == []
        assert os.fspath(path) == r.path
