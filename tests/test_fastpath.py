"""The tracer's C loop (recorder/fastpath.c) against its Python loop.

The C loop handles most stops (a call with one path, its exit, wait4,
redirected writes to fd 1/2, forks, exits, signals, exec events) and Python
the rest; with NIXREC_FASTPATH=0 Python handles every stop. Both must record
the same events: the same builds are recorded both ways, through the CLI, and
their events compared one by one (all but the time). Each fixture is a
sequential build, so the order of its events is the same on every run.

The fixtures cover what the C loop decides by itself: lookups answered from
the answers predict.py taught it (record.nix lookups), an ENOENT on a dangling
link (explained by Python while the process is held: symlinkOut), failed and
successful opens in /build and /usr, an exec of
a missing interpreter, a refused setuid chmod, the network, wait4 statuses.
(`killed` is not among them: its two exits race, in either loop.)
"""

import json
import os
import subprocess

import pytest

from nixfix import NIXREC, instantiate, missing, nix_env

pytestmark = pytest.mark.e2e

CASES = [
    ("record.nix", "lookups"),
    ("record.nix", "tries"),
    ("failing/default.nix", "symlinkOut"),
    ("failing/default.nix", "deepProbes"),
    ("failing/default.nix", "envShebang"),
    ("failing/default.nix", "setuid"),
    ("failing/default.nix", "network"),
    ("failing/default.nix", "killOutside"),
]


def _record(drv, out, fast: bool):
    env = nix_env()
    env["NIXREC_FASTPATH"] = "1" if fast else "0"
    p = subprocess.run([str(NIXREC), "record", drv, "-o", str(out)], env=env,
                       capture_output=True, timeout=120)
    assert p.returncode in (0, 1), p.stderr.decode(errors="replace")[-2000:]
    return p.returncode


def _events(trace):
    p = subprocess.run([str(NIXREC), "events", str(trace), "--json"], env=nix_env(),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.decode().splitlines():
        ev = json.loads(line)
        ev.pop("time", None)
        out.append(ev)
    return out


def _summary(trace):
    from nixrec.recorder.tracefile import open_trace
    r = open_trace(str(trace))
    try:
        return dict(r.summary)
    finally:
        r.close()


@pytest.fixture(scope="module")
def built():
    from nixrec.recorder import fastpath
    if not fastpath.available():
        missing(f"{fastpath.LIBRARY} is not built (bash scripts/setup.sh builds it with gcc)")


@pytest.mark.parametrize("nixfile,attr", CASES, ids=[a for _, a in CASES])
def test_c_loop_records_the_events_the_python_loop_records(built, tmp_path, nixfile, attr):
    drv = instantiate(nixfile, attr)
    py = _record(drv, tmp_path / "py.nixrec", fast=False)
    c = _record(drv, tmp_path / "c.nixrec", fast=True)
    assert py == c
    # The C loop did handle stops (else this would compare Python with itself).
    summary = _summary(tmp_path / "c.nixrec")
    assert summary["stops_c"] > 0
    assert _summary(tmp_path / "py.nixrec")["stops_c"] == 0
    a, b = _events(tmp_path / "py.nixrec"), _events(tmp_path / "c.nixrec")
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"event {i + 1} differs"
    assert len(a) == len(b)


def test_c_loop_hands_a_dangling_link_to_python_and_it_is_explained(built, tmp_path):
    drv = instantiate("failing/default.nix", "symlinkOut")
    _record(drv, tmp_path / "c.nixrec", fast=True)
    words = [e for e in _events(tmp_path / "c.nixrec")
             if e.get("path") == "/build/words" and e["syscall"] == "openat"]
    assert words, "wc's open of the dangling link is in the trace"
    assert all(e["errno"] == "ENOENT" and e["args"].get("link_target") == "/usr/share/dict/words"
               for e in words)


def test_a_library_that_is_not_built_leaves_the_python_loop(tmp_path, monkeypatch):
    from nixrec.recorder import fastpath
    monkeypatch.setattr(fastpath, "LIBRARY", str(tmp_path / "absent.so"))
    monkeypatch.setattr(fastpath, "_lib", None)
    assert not fastpath.available()


def test_a_library_of_another_version_is_not_used(tmp_path, monkeypatch):
    from nixrec.recorder import fastpath
    src = tmp_path / "old.c"
    src.write_text("int fp_abi(void) { return 0; }\n")
    so = tmp_path / "old.so"
    p = subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src)], capture_output=True)
    if p.returncode != 0:
        missing("gcc cannot build a shared library here")
    monkeypatch.setattr(fastpath, "LIBRARY", str(so))
    monkeypatch.setattr(fastpath, "_lib", None)
    assert not fastpath.available()
