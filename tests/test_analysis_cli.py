"""`nixrec why/deps/graph` as a user runs them, on trace files from the real writer."""

import json
import os
import subprocess
import sys

import pytest

from test_analysis_rootcause import zlib_build, network_build

NIXREC = os.path.join(os.path.dirname(sys.executable), "nixrec")


def write_trace(t, path, summary=None, interrupted=False):
    from nixrec.recorder.tracefile.writer import TraceWriter
    w = TraceWriter(str(path), t.header)
    for ev in t.events:
        ev.seq = 0
        w.append(ev)
    if interrupted:
        w.abandon()
    else:
        w.close(summary or {"exit_status": 2, "exit_signal": None,
                            "events": len(t.events), "processes": 4})
    return str(path)


def run(*args):
    return subprocess.run([NIXREC, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def zlib_trace(tmp_path):
    return write_trace(zlib_build(), tmp_path / "t.nixrec")


def test_why_json(zlib_trace):
    p = run("why", zlib_trace, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["status"] == "failed" and rep["exit_code"] == 2
    top = rep["root_causes"][0]
    assert top["kind"] == "undeclared-host-path" and top["path"] == "/usr/include/zlib.h"
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.1", "1.1.1", "1.1.1.1"]
    assert rep["replay"] == f"nixrec replay {zlib_trace} --until {top['seq']}"


def test_why_text(zlib_trace):
    p = run("why", zlib_trace)
    assert p.returncode == 0, p.stderr
    assert "root cause: cc1 (1.1.1.1) could not open /usr/include/zlib.h" in p.stdout


def test_why_on_an_interrupted_trace_says_so(tmp_path):
    t = network_build()
    path = write_trace(t, tmp_path / "i.nixrec", interrupted=True)
    p = run("why", path)
    assert p.returncode == 0, p.stderr
    assert "partial trace" in p.stdout.splitlines()[0]
    assert "network" in p.stdout or "1.1.1.1:80" in p.stdout


def test_deps_json_and_markdown(zlib_trace):
    p = run("deps", zlib_trace, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert {"undeclared", "unused_inputs"} <= set(rep)
    assert any(g.get("path") == "/usr/include/zlib.h" for g in rep["undeclared"])
    p = run("deps", zlib_trace, "--markdown")
    assert p.stdout.startswith("# Undeclared accesses")


@pytest.mark.parametrize("ext", ["dot", "graphml", "json"])
def test_graph_formats(zlib_trace, tmp_path, ext):
    out = tmp_path / f"g.{ext}"
    p = run("graph", zlib_trace, "-o", str(out), "--failure", "--fold-store")
    assert p.returncode == 0, p.stderr
    assert out.stat().st_size > 0


def test_bad_input_is_one_line_exit_2(tmp_path, zlib_trace):
    for args in (["why", str(tmp_path / "nope.nixrec")],
                 ["graph", zlib_trace, "-o", str(tmp_path / "g.png")],
                 ["deps", zlib_trace, "--json", "--markdown"]):
        p = run(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_graph_on_an_interrupted_trace_says_so(tmp_path):
    path = write_trace(network_build(), tmp_path / "i.nixrec", interrupted=True)
    out = tmp_path / "g.dot"
    p = run("graph", path, "-o", str(out))
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines[0].startswith("nixrec: warning: partial trace: recording interrupted")
    assert lines[1].startswith(f"wrote {out}") and len(lines) == 2
    assert "// partial trace: recording interrupted" in out.read_text()
