"""`why`, `deps` and `graph` on real recordings of fixtures/hostile builds:
builds killed for a limit (`limit`), refused kill/ptrace (`process`), and a
real trace cut short (graph says it is partial, as why, deps and events do).

Needs Nix, the fixture busybox and (for `processes`) fixtures/hostile/.bin/escape;
without them the tests skip with the reason, except under CI=true (style.md §8).
"""

import json
import subprocess

import pytest

from nixfix import FIXTURES, nixrec_json, missing, nix_env, require_busybox, require_nix, run_nixrec

HOSTILE = FIXTURES / "hostile"


def _drv(attr, *args):
    require_nix()
    require_busybox()
    p = subprocess.run(["nix-instantiate", str(HOSTILE / "default.nix"), "-A", attr,
                        *args], capture_output=True, env=nix_env())
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """record(attr, *flags) -> trace path; each recording once per module."""
    base = tmp_path_factory.mktemp("hostile")
    done = {}

    def record(attr, *flags, drv_args=()):
        key = (attr, flags)
        if key not in done:
            trace = base / f"{attr}{len(done)}.nixrec"
            p = run_nixrec("record", _drv(attr, *drv_args), "-o", trace, "-q", *flags,
                           timeout=120)
            assert p.returncode == 1, p.stderr.decode(errors="replace")
            done[key] = trace
        return done[key]
    return record


def why(trace):
    return nixrec_json("why", trace)


def chain(rep):
    return [e["proc"] for e in rep["failure_chain"]]


LIMITS = {
    # name: (attr, record flags, killed reason, Nix setting, argv[0] of the running process)
    "timeout": ("forever", ("--timeout", "2"), "timed out after 2 seconds",
                "timeout", "sleep"),
    "silence": ("forever", ("--max-silent-time", "1"),
                "timed out after 1 seconds of silence", "max-silent-time", "sleep"),
    "log-size": ("flood", ("--max-log-size", "100000"),
                 "killed after writing more than 100000 bytes of log output",
                 "max-build-log-size", "tr"),
    "processes": ("forkBomb", ("--max-processes", "200"),
                  "killed after running more than 200 processes at once", None, "sh"),
    # (killed at the pty's EOF: before or just after sh started `sleep 5`)
    "closed-output": ("closeOutput", (), "killed when it closed its standard output "
                      "and error (as Nix does)", None, ("sh", "sleep")),
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(LIMITS))
def test_a_build_killed_for_a_limit_names_the_limit(recorded, name):
    attr, flags, reason, setting, argv0 = LIMITS[name]
    rep = why(recorded(attr, *flags))
    assert rep["killed"] == reason and rep["exit_signal"] == "SIGKILL"
    c = rep["root_causes"][0]
    assert (c["kind"], c["limit"], c.get("setting")) == ("limit", reason, setting), c
    # The process that was running ends the chain, and the cause is in it.
    assert chain(rep)[0] == "1" and c["proc"] == chain(rep)[-1]
    assert c["argv"][0].rsplit("/", 1)[-1] in (argv0 if isinstance(argv0, tuple) else (argv0,)), \
        c["argv"]
    if setting:
        assert setting in c["summary"] and f"`{setting}`" in c["hint"]
    assert not any(k["kind"] == "signal" for k in rep["root_causes"])
    text = run_nixrec("why", recorded(attr, *flags)).stdout.decode()
    assert f"build failed (SIGKILL: {reason})" in text


@pytest.fixture(scope="module")
def processes_trace(recorded):
    if not (HOSTILE / ".bin" / "escape").exists():
        p = subprocess.run(["bash", str(HOSTILE / "prepare.sh")], capture_output=True,
                           text=True)
        if p.returncode != 0:
            missing(f"fixtures/hostile/prepare.sh failed: {p.stderr.strip()}")
    # A pid no process has in the sandbox (its PID namespace counts from 1).
    return recorded("processes", drv_args=("--argstr", "hostPid", "99999"))


@pytest.mark.e2e
def test_refused_ptrace_is_the_cause(processes_trace):
    rep = why(processes_trace)
    c = rep["root_causes"][0]
    assert (c["kind"], c["syscall"], c["target_pid"], c["errno"]) == \
        ("process", "ptrace", 1, "EPERM"), c
    assert c["proc"] == chain(rep)[-1]
    assert not any(k["kind"] == "missing-executable" for k in rep["root_causes"])


@pytest.mark.e2e
def test_deps_lists_the_processes_the_build_tried_to_reach(processes_trace):
    p = run_nixrec("deps", processes_trace, "--json")
    assert p.returncode == 0, p.stderr
    got = {(g["target_pid"], g["access"], g["errno"])
           for g in json.loads(p.stdout)["undeclared"] if g["category"] == "process"}
    assert got == {(99999, "signal", "ESRCH"), (99999, "ptrace", "ESRCH"),
                   (1, "ptrace", "EPERM")}
    text = run_nixrec("deps", processes_trace).stdout.decode()
    assert "Other processes (signals and ptrace refused):" in text
    assert "pid 99999 (SIGTERM)  signal refused ESRCH x2" in text


# -- graph on a real trace cut short -------------------------------------------------

def chunk_offsets(data):
    from nixrec.recorder.tracefile.format import CHUNK_TAG
    out, i = [], data.find(CHUNK_TAG)
    while i >= 0:
        out.append(i)
        i = data.find(CHUNK_TAG, i + 1)
    return out


@pytest.fixture(scope="module")
def busy_trace(recorded):
    """`busy` cut off by --timeout, with at least two 8192-event chunks (a
    chunk also ends at 10 s). 3 s make tens of thousands of events on a quiet
    machine but only ~5,000 on one loaded by other work (seen at load 8): the
    cut then comes later. busy itself runs far longer than a loaded 12 s."""
    for seconds in ("3", "6", "12"):
        trace = recorded("busy", "--timeout", seconds)
        if len(chunk_offsets(trace.read_bytes())) >= 2:
            break
    return trace


@pytest.mark.e2e
@pytest.mark.parametrize("cut", ["chunk-boundary", "mid-chunk"])
def test_graph_says_a_trace_is_partial(busy_trace, tmp_path, cut):
    data = busy_trace.read_bytes()
    offsets = chunk_offsets(data)
    assert len(offsets) >= 2, offsets
    at = offsets[-1] if cut == "chunk-boundary" else offsets[-1] + 20
    trace = tmp_path / f"{cut}.nixrec"
    trace.write_bytes(data[:at])
    warn = [ln for ln in run_nixrec("events", trace).stderr.decode().splitlines()
            if "interrupted after event" in ln]
    assert warn, "events should say where the recording stops"
    n = warn[0].split("interrupted after event ")[1].split(";")[0].split()[0]
    out = tmp_path / "g.json"
    p = run_nixrec("graph", trace, "-o", out)
    err = p.stderr.decode().splitlines()
    assert p.returncode == 0, err
    assert err[0] == f"nixrec: warning: partial trace: recording interrupted after event {n}"
    assert err[1].startswith(f"wrote {out}")
    g = json.loads(out.read_text())
    assert "interrupted" in g["graph"]["partial"]
    assert any(nd["id"] == "proc:1" for nd in g["nodes"])
    # A complete trace: no warning.
    p = run_nixrec("graph", busy_trace, "-o", out)
    assert p.returncode == 0 and "partial" not in p.stderr.decode()
