"""Bad input through every verb that takes it: one clear line, the documented code.

Exit codes (README): 0 ok, 1 build failed, 2 bad input, 3 host cannot, 70
internal. A damaged trace that still has events is data, not bad input: the
verbs answer (exit 0) and say the trace is partial; only a file with no trace
to read is exit 2. Nothing here may end in a traceback or exit 70.
"""

import json
import os
import struct

import pytest

from nixfix import FIXTURES, instantiate, run_nixrec
from nixrec.recorder.nix import drv as drvmod

TRACE_VERBS = ("events", "why", "deps", "graph")


def run(verb, path, tmp_path, *extra):
    args = [verb, path, *extra]
    if verb == "graph":
        args += ["-o", str(tmp_path / "g.json")]
    return run_nixrec(*args, timeout=120)


def err_lines(p):
    return p.stderr.decode(errors="replace").splitlines()


def assert_one_line(p, code, *words):
    """Exit `code`, exactly one stderr line `nixrec: ...` naming `words`."""
    lines = err_lines(p)
    assert p.returncode == code, (p.returncode, lines)
    assert len(lines) == 1 and lines[0].startswith("nixrec: "), lines
    assert "internal error" not in lines[0] and "Traceback" not in lines[0]
    for w in words:
        assert w in lines[0], lines


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory):
    """A small real trace: the failing `network` fixture."""
    drv = instantiate(str(FIXTURES / "failing" / "default.nix"), "network")
    trace = tmp_path_factory.mktemp("good") / "network.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q")
    assert p.returncode == 1, p.stderr
    return trace.read_bytes()


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# -- traces that are not traces: exit 2 ------------------------------------------

def _with_version(data, version):
    return data[:8] + struct.pack("<I", version) + data[12:]


UNREADABLE = {
    "empty": (lambda d: b"", "is empty"),
    "not-a-trace": (lambda d: b"hello, world\n" * 10, "not a nixrec trace"),
    "truncated-header": (lambda d: d[:40], "truncated header"),
    "flipped-header": (lambda d: d[:30] + bytes([d[30] ^ 0x40]) + d[31:], "corrupt"),
    "old-version": (lambda d: _with_version(d, 0), "not supported"),
    "newer-format": (lambda d: _with_version(d, 99), "trace format v99 is newer"),
}


@pytest.mark.parametrize("verb", TRACE_VERBS)
@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_trace_is_one_line_exit_2(good_trace, tmp_path, case, verb):
    mangle, words = UNREADABLE[case]
    path = write(tmp_path, f"{case}.nixrec", mangle(good_trace))
    assert_one_line(run(verb, path, tmp_path), 2, words)


@pytest.mark.parametrize("verb", TRACE_VERBS)
def test_missing_trace_and_directory(tmp_path, verb):
    assert_one_line(run(verb, str(tmp_path / "nope.nixrec"), tmp_path), 2, "does not exist")
    assert_one_line(run(verb, str(tmp_path), tmp_path), 2)


# -- damaged but readable: the verbs answer and say it is partial -----------------

def _flip_in_chunk(data):
    i = data.index(b"CHNK") + 40          # inside the first chunk's lz4 block
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


DAMAGED = {
    "truncated": (lambda d: d[:len(d) * 2 // 3], "recording interrupted"),
    "no-footer": (lambda d: d[:-24], ""),
    "flipped-chunk": (_flip_in_chunk, "corrupt"),
}


@pytest.mark.parametrize("verb", TRACE_VERBS)
@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_trace_is_read_as_far_as_it_goes(good_trace, tmp_path, case, verb):
    mangle, words = DAMAGED[case]
    path = write(tmp_path, f"{case}.nixrec", mangle(good_trace))
    p = run(verb, path, tmp_path)
    text = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    assert p.returncode == 0, (p.returncode, text)
    assert "Traceback" not in text and "internal error" not in text
    assert words in text, text


def test_events_json_on_a_damaged_trace_is_valid_json(good_trace, tmp_path):
    path = write(tmp_path, "cut.nixrec", good_trace[:len(good_trace) * 2 // 3])
    p = run_nixrec("events", path, "--json")
    assert p.returncode == 0
    for line in p.stdout.splitlines():
        json.loads(line)


# -- derivations: record and drv ---------------------------------------------------

@pytest.fixture(scope="module")
def base_drv():
    path = instantiate(str(FIXTURES / "failing" / "default.nix"), "network")
    with open(path, "rb") as f:
        return drvmod.parse(f.read())


def drv_file(tmp_path, d, name="x.drv"):
    path = tmp_path / name
    path.write_bytes(drvmod.unparse(d))
    return str(path)


def test_input_drv_missing(base_drv, tmp_path):
    d = drvmod.parse(drvmod.unparse(base_drv))
    d.input_drvs = {"/nix/store/" + "a" * 32 + "-gone.drv": ["out"]}
    path = drv_file(tmp_path, d)
    assert_one_line(run_nixrec("record", path, "-o", tmp_path / "t.nixrec", "-q"), 2,
                    "input derivation not in the store")
    assert run_nixrec("drv", path).returncode == 0     # a valid derivation to show


def test_input_src_missing(base_drv, tmp_path):
    d = drvmod.parse(drvmod.unparse(base_drv))
    d.input_srcs = list(d.input_srcs) + ["/nix/store/" + "b" * 32 + "-gone"]
    p = run_nixrec("record", drv_file(tmp_path, d), "-o", tmp_path / "t.nixrec", "-q")
    assert_one_line(p, 2, "b" * 32)


def test_builder_that_does_not_exist_is_a_build_failure(base_drv, tmp_path):
    d = drvmod.parse(drvmod.unparse(base_drv))
    d.builder = "/nix/store/" + "c" * 32 + "-nope/bin/sh"
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv_file(tmp_path, d), "-o", trace, "-q")
    lines = err_lines(p)
    # Nix: "executing '/nix/store/...-nope/bin/sh': No such file or directory".
    assert p.returncode == 1, lines
    assert f"executing '{d.builder}': No such file or directory" in lines[0], lines
    for verb in TRACE_VERBS:
        assert run(verb, str(trace), tmp_path).returncode == 0, verb


def test_system_that_is_not_this_one(base_drv, tmp_path):
    d = drvmod.parse(drvmod.unparse(base_drv))
    d.system = "aarch64-darwin"
    path = drv_file(tmp_path, d)
    assert_one_line(run_nixrec("record", path, "-o", tmp_path / "t.nixrec"), 2,
                    "is for aarch64-darwin")
    assert run_nixrec("drv", path).returncode == 0


def test_non_utf8_env_value_and_path(base_drv, tmp_path):
    d = drvmod.parse(drvmod.unparse(base_drv))
    d.env["WEIRD"] = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    path = drv_file(tmp_path, d, name="caf\udce9.drv")
    p = run_nixrec("drv", path)
    assert p.returncode == 0 and b"WEIRD=caf\\xe9 \\xff" in p.stdout, p.stdout
    assert run_nixrec("drv", path, "--json").returncode == 0
    trace = tmp_path / "weird.nixrec"
    rec = run_nixrec("record", path, "-o", trace, "-q")
    assert rec.returncode == 1, err_lines(rec)        # the fixture's own failure
    ev = run_nixrec("events", trace, "--json")
    env = [e for e in map(json.loads, ev.stdout.splitlines()) if e["kind"] == "exec"][0]
    assert any(v.startswith("WEIRD=caf") for v in env["args"]["env"])
    for verb in TRACE_VERBS:
        assert run(verb, str(trace), tmp_path).returncode == 0, verb


def test_non_utf8_trace_path(base_drv, tmp_path):
    trace = tmp_path / "w\udcff.nixrec"
    rec = run_nixrec("record", drv_file(tmp_path, base_drv), "-o", trace, "-q")
    assert rec.returncode == 1, err_lines(rec)


def test_non_utf8_input_path(base_drv, tmp_path):
    d = drvmod.parse(drvmod.unparse(base_drv))
    d.input_srcs = list(d.input_srcs) + ["/nix/store/" + "d" * 32 + "-\udcff"]
    p = run_nixrec("record", drv_file(tmp_path, d), "-o", tmp_path / "t.nixrec", "-q")
    assert_one_line(p, 2, "d" * 32)


DRV_GARBAGE = {
    "empty": b"",
    "not-aterm": b"hello",
    "truncated": None,            # filled from the real .drv
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("case", sorted(DRV_GARBAGE))
@pytest.mark.parametrize("verb", ("drv", "record"))
def test_garbage_drv_is_one_line_exit_2(base_drv, tmp_path, case, verb):
    data = DRV_GARBAGE[case]
    if data is None:
        data = drvmod.unparse(base_drv)[:100]
    path = write(tmp_path, "bad.drv", data)
    args = (verb, path) if verb == "drv" else (verb, path, "-o", tmp_path / "t.nixrec")
    assert_one_line(run_nixrec(*args), 2)


def test_record_missing_target_and_bad_output_dir(tmp_path, base_drv):
    assert_one_line(run_nixrec("record", tmp_path / "nope.drv"), 2, "no such file")
    path = drv_file(tmp_path, base_drv)
    missing_dir = tmp_path / "no-such-dir"
    assert_one_line(run_nixrec("record", path, "-o", missing_dir / "t.nixrec"), 2,
                    "cannot create trace")
    assert not missing_dir.exists()
