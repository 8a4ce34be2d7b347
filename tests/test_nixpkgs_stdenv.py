"""Phases, replay and `why` on nixpkgs' *real* stdenv (issue 22).

fixtures/nixpkgs/default.nix builds zlib and GNU hello the way nixpkgs'
stdenv.mkDerivation does, with ../shared/corpus/nixpkgs-stdenv/setup.sh (read
from there, never copied) and the host's tools (initialPath = "/usr"). Each
fixture is recorded once per module and built by real Nix 2.8 once, and the
two are compared: the same phases announced, the same outcome. zlib, not
hello, wherever it proves the same (hello's configure alone takes a minute
under the tracer).
"""

import os
import re
import shutil
import subprocess

import pytest

from nixfix import FIXTURES, HOST_TREES, events, missing, nix_env, nixrec_json, run_nixrec, \
    require_busybox, require_nix

from nixrec.recorder.build import NixLines
from nixrec.recorder.tracefile.phases import PhaseTracker, split_runs
from tracebuild import TraceBuilder

NIXPKGS = FIXTURES / "nixpkgs" / "default.nix"
SETUP = FIXTURES.parent.parent / "shared" / "corpus" / "nixpkgs-stdenv" / "setup.sh"
ALL = ["unpackPhase", "patchPhase", "configurePhase", "buildPhase", "checkPhase",
       "installPhase", "fixupPhase", "installCheckPhase", "distPhase"]


# --- unit: one run per runPhase, whatever it announces ---------------------------------

def _announcing(writes, fail=False):
    """A builder making `writes` (phase announcements and other lines), one
    child per phase, in order."""
    t = TraceBuilder()
    t.builder(argv=["bash", "-e", "default-builder.sh"], path="/bin/bash",
              env={"doCheck": "1"})
    for fd, text in writes:
        t.write("1", fd, text)
        if text.startswith("Running phase:") or text.strip() in ("building", "configuring"):
            child = t.fork("1", argv=["make"])
            t.exit(child, 0)
            t.wait("1", child)
    t.exit("1", 2 if fail else 0)
    return t


def _fold(t):
    tr = PhaseTracker()
    for ev in t.events:
        tr.see(ev)
    return tr.result()


def _nix(name):
    return 2, f'@nix {{ "action": "setPhase", "phase": "{name}" }}\n'


def test_setphase_then_running_phase_in_two_writes_is_one_run():
    t = _announcing([_nix("unpackPhase"), (1, "Running phase: unpackPhase\n"),
                     (1, "unpacking source archive x\n"),
                     _nix("buildPhase"), (1, "Running phase: buildPhase\n")], fail=True)
    ph = _fold(t)
    ran = [p for p in ph if p["first"] is not None]
    assert [p["name"] for p in ran] == ["unpackPhase", "buildPhase"]
    # The run starts at its first announcement (the @nix write) and ends
    # before the next phase's first one.
    assert t.events[ran[0]["first"] - 1].args["data"].startswith(b"@nix")
    assert ran[0]["last"] == ran[1]["first"] - 1
    assert ran[0]["processes"] == 1
    # After the failed phase, in order: not reached (never "skipped" before it).
    assert [(p["name"], p["status"]) for p in ph] == \
        [("unpackPhase", "ran"), ("patchPhase", "skipped"), ("configurePhase", "skipped"),
         ("buildPhase", "failed"), ("checkPhase", "not reached"),
         ("installPhase", "not reached"), ("fixupPhase", "not reached"),
         ("installCheckPhase", "not reached"), ("distPhase", "not reached")]


def test_an_older_stdenvs_setphase_and_header_are_one_run_and_a_phase_run_twice_is_two():
    old = _fold(_announcing([_nix("configurePhase"), (1, "configuring\n"),
                             _nix("buildPhase"), (1, "building\n")]))
    assert [(p["name"], p["style"]) for p in old if p["first"]] == \
        [("configurePhase", "structured"), ("buildPhase", "structured")]
    twice = _fold(_announcing([_nix("buildPhase"), (1, "Running phase: buildPhase\n"),
                               _nix("buildPhase"), (1, "Running phase: buildPhase\n")]))
    assert [p["name"] for p in twice if p["first"]] == ["buildPhase", "buildPhase"]


def test_a_trace_whose_summary_split_each_phase_is_folded_again(tmp_path):
    from nixrec.recorder.tracefile import open_trace
    t = _announcing([_nix("unpackPhase"), (1, "Running phase: unpackPhase\n"),
                     _nix("buildPhase"), (1, "Running phase: buildPhase\n")])
    good = _fold(t)
    # What a recorder before issue 22 kept: each phase twice, a 1-event twin first.
    split = []
    for p in good:
        if p["first"] is not None:
            split.append(dict(p, style="structured", last=p["first"], events=1))
            p = dict(p, style="plain", first=p["first"] + 1, events=p["events"] - 1)
        split.append(p)
    assert split_runs(split) and not split_runs(good)
    with open_trace(t.save(tmp_path / "old.nixrec", summary={"phases": split})) as r:
        assert [(p["name"], p["first"], p["last"]) for p in r.phases] == \
            [(p["name"], p["first"], p["last"]) for p in good]


def test_the_log_drops_nix_lines_as_nix_does_whatever_the_chunks():
    text = (b'a\n@nix { "action": "setPhase", "phase": "x" }\nRunning phase: x\n'
            b'@nixos is a word\n@ni\nend without newline')
    want = b'a\nRunning phase: x\n@nixos is a word\n@ni\nend without newline'
    for size in (1, 2, 3, 5, 7, len(text)):
        f = NixLines()
        got = b"".join(f.feed(text[i:i + size]) for i in range(0, len(text), size))
        assert got + f.held == want, size
    # A prompt with no newline shows at once; only a line's "@nix " start waits.
    f = NixLines()
    assert f.feed(b"$ ") == b"$ " and f.feed(b"@nix ") == b"@nix "
    assert f.feed(b"\n@n") == b"\n" and f.held == b"@n"


# --- end to end: real Nix 2.8 and nixrec on the same derivations --------------------------

def _require_all():
    require_nix()
    require_busybox()
    if not SETUP.exists():
        missing(f"{SETUP} is missing (the team's shared corpus, beside the clone)")
    for tool in ("/bin/bash", "/usr/bin/gcc", "/usr/bin/make", "nix-build"):
        if not (os.path.exists(tool) or shutil.which(tool)):
            missing(f"{tool} is missing (apt-get install bash gcc make nix-bin)")


class _Builds:
    """Each fixture recorded by nixrec, and built by real Nix, once."""

    def __init__(self, out):
        self.out, self.recorded, self.built = out, {}, {}

    def record(self, attr):
        if attr not in self.recorded:
            path = self.out / f"{attr}.nixrec"
            p = run_nixrec("record", NIXPKGS, "-A", attr, "--extra-sandbox-paths", HOST_TREES,
                           "-o", path, timeout=300)
            assert path.exists(), p.stderr
            self.recorded[attr] = (path, p)
        return self.recorded[attr]

    def nix(self, attr):
        """Real nix-build's exit status and log; outputs deleted first, so
        that Nix builds (a valid output prints no log)."""
        if attr not in self.built:
            env = nix_env()
            drv = subprocess.run(["nix-instantiate", str(NIXPKGS), "-A", attr],
                                 capture_output=True, env=env, check=True).stdout.strip()
            outs = subprocess.run(["nix-store", "-q", "--outputs", drv], capture_output=True,
                                  env=env, check=True).stdout.split()
            subprocess.run(["nix-store", "--delete", *outs], capture_output=True, env=env)
            p = subprocess.run(["nix-build", "--option", "sandbox", "true", "--option",
                                "build-users-group", "", "--option", "substituters", "",
                                "--option", "extra-sandbox-paths", HOST_TREES,
                                "--no-out-link", drv], capture_output=True, env=env,
                               timeout=300)
            self.built[attr] = (p.returncode, p.stderr.decode("utf-8", "replace"))
        return self.built[attr]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    _require_all()
    return _Builds(tmp_path_factory.mktemp("nixpkgs"))


def _phases(trace):
    return nixrec_json("phases", trace)


ANNOUNCED = re.compile(r"^Running phase: (\w+)$", re.M)


@pytest.mark.parametrize("attr,failed,skipped", [
    ("zlibOk", None, {"distPhase": "doDist is not set"}),
    ("noBuild", None, {"buildPhase": "dontBuild is set", "checkPhase": "doCheck is not set",
                       "installCheckPhase": "doInstallCheck is not set",
                       "distPhase": "doDist is not set"}),
    ("unpackFails", "unpackPhase", {}),
    ("postPatchFails", "patchPhase", {}),
    ("preConfigureFails", "configurePhase", {}),
    ("buildFails", "buildPhase", {}),
    ("checkFails", "checkPhase", {}),
    ("installFails", "installPhase", {"buildPhase": "dontBuild is set",
                                      "checkPhase": "doCheck is not set"})])
def test_the_same_phases_and_outcome_as_real_nix_each_once_in_order(builds, attr, failed,
                                                                      skipped):
    trace, rec = builds.record(attr)
    code, log = builds.nix(attr)
    rep = _phases(trace)
    rows = rep["phases"]
    ran = [p["name"] for p in rows if p["first"] is not None]
    # Real Nix's log: each phase once (the @nix line consumed), as nixrec's.
    assert ANNOUNCED.findall(log) == ran, log
    assert len(set(ran)) == len(ran)
    assert [p["name"] for p in rows] == ALL            # every phase once, in order
    if failed is None:
        assert code == 0 and rep["failed"] is None and rec.returncode == 0, log
    else:
        assert code == 100 and rep["failed"] == failed == ran[-1], log
        assert rec.returncode == 1
        after = [p["status"] for p in rows[ALL.index(failed) + 1:]]
        assert after and set(after) == {"not reached"}
        assert nixrec_json("why", trace)["phase"]["name"] == failed
    assert {p["name"]: p["why"] for p in rows if p["status"] == "skipped"} == skipped
    # The streamed log is nix-build's: no @nix line, the same announcements.
    streamed = rec.stderr.decode("utf-8", "replace")
    assert "@nix" not in streamed and "@nix" not in log
    assert ANNOUNCED.findall(streamed) == ran


def test_each_phase_spans_its_events_and_two_outputs_are_built(builds):
    trace, rec = builds.record("zlibOk")
    rows = [p for p in _phases(trace)["phases"] if p["first"] is not None]
    for p, nxt in zip(rows, rows[1:]):
        assert p["last"] == nxt["first"] - 1 and p["events"] > 2, p
    build = next(p for p in rows if p["name"] == "buildPhase")
    inside = events(trace, "--phase", "buildPhase")
    assert (inside[0]["seq"], inside[-1]["seq"], len(inside)) == \
        (build["first"], build["last"], build["events"])
    # bash's dup2 for the first write's redirection (>&$NIX_LOG_FD) comes
    # first: it belongs to the phase it announces.
    writes = [e["args"]["data"] for e in inside if e["kind"] == "output"]
    assert writes[0].startswith("@nix") and writes[1] == "Running phase: buildPhase\n"
    assert any(os.path.basename(e["path"] or "") == "cc1" for e in inside
               if e["kind"] == "exec")
    assert b"output dev: " in rec.stderr and b"output out: " in rec.stderr
    assert os.path.exists(f"{trace}.d/outputs") and len(os.listdir(f"{trace}.d/outputs")) == 2


def test_until_phase_end_configure_has_the_makefile(builds):
    trace, _ = builds.record("zlibOk")
    conf = next(p for p in _phases(trace)["phases"] if p["name"] == "configurePhase")
    p = run_nixrec("replay", trace, "--until-phase-end", "configurePhase", "-q", "--exec",
                   "ls; echo phase=$curPhase", timeout=180)
    assert p.returncode == 0, p.stderr
    assert b"Makefile\n" in p.stdout and b"phase=configurePhase\n" in p.stdout
    assert (f"the last event of phase configurePhase (events {conf['first']}-{conf['last']})"
            .encode()) in p.stderr and conf["last"] - conf["first"] > 100


def test_why_names_the_failing_test_in_checkphase_not_a_hook_lookup(builds):
    trace, _ = builds.record("checkFails")
    why = nixrec_json("why", trace)
    assert why["phase"]["name"] == "checkPhase"
    assert why["phase"]["command"][0] == "make" and "check" in why["phase"]["command"]
    top = why["root_causes"][0]
    assert top["kind"] == "phase-output" and top["argv"][0].endswith("example")
    assert "bad uncompress" in top["summary"]
    assert any("zlib test FAILED" in e for e in top["evidence"])
    # stdenv's `type -p postPatch`-style lookups are in the trace, never a cause.
    assert events(trace, "--path", "/usr/bin/postPatch")
    for c in why["root_causes"]:
        assert not re.search(r"/bin/(pre|post)[A-Z]|/bin/\w+Hook", c.get("path") or ""), c
    text = run_nixrec("why", trace).stdout.decode()
    assert "root cause: example (" in text and "@nix" not in text


@pytest.mark.parametrize("attr,phase,words", [
    ("postPatchFails", "patchPhase", "doesn't match anything in file 'Makefile.in'"),
    ("preConfigureFails", "configurePhase", "CMakeLists.txt.txt")])
def test_why_on_a_failing_hook_points_inside_its_phase(builds, attr, phase, words):
    trace, _ = builds.record(attr)
    why = nixrec_json("why", trace)
    assert why["phase"]["name"] == phase and why["phase"]["command"] is None
    top = why["root_causes"][0]
    assert words in top["summary"], top
    assert why["phase"]["first"] <= top["seq"] <= why["phase"]["last"]


def test_runphase_in_the_replayed_state_fails_as_the_build_did_without_nix_lines(builds):
    trace, _ = builds.record("checkFails")
    p = run_nixrec("replay", trace, "--until-phase", "checkPhase", "-q", "--exec",
                   "runPhase checkPhase; echo not-here", timeout=180)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 2, out
    assert "Running phase: checkPhase" in out and "bad uncompress" in out
    assert "@nix" not in out and "not-here" not in out


def test_exec_after_a_divergence_never_runs_the_phase_command(builds):
    trace, _ = builds.record("clockStamp")
    p = run_nixrec("replay", trace, "--until-phase", "installPhase", "-q", "--exec",
                   "echo RAN", timeout=180)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    assert "replay diverged" in err
    assert "did not reach phase installPhase" in err and "the command was not run" in err
    assert b"RAN" not in p.stdout


def test_errors_in_replayed_functions_cite_stdenv_setup_lines_as_the_build_did(builds):
    trace, _ = builds.record("postPatchFails")
    _, log = builds.nix("postPatchFails")
    # Nix's log: bash's complaint about runPhase's eval, at its line in $stdenv/setup.
    said = re.search(r"^(/nix/store/\S+/setup): line (\d+): pop_var_context.*$", log, re.M)
    assert said, log
    p = run_nixrec("replay", trace, "--until-phase", "patchPhase", "-q", "--exec",
                   "shopt -s extdebug; declare -F runPhase; shopt -u extdebug; "
                   "runPhase patchPhase", timeout=180)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, err
    assert said.group(0) in err.splitlines() and "/proc/self/fd" not in err
    assert "doesn't match anything in file 'Makefile.in'" in err
    name, line, where = p.stdout.decode().splitlines()[0].split()
    assert (name, where) == ("runPhase", said.group(1)) and int(line) > 1000


def test_the_state_over_the_setup_keeps_unchanged_functions_at_their_lines(tmp_path):
    """shellstate's script with the setup: a function the shell did not
    change is the setup's own (file and line); a changed or new one is the
    captured text; one the shell no longer has is gone; and so are the
    setup's variables the shell did not have."""
    from nixrec.replayer.shellstate import State
    if not os.path.exists("/bin/bash"):
        missing("/bin/bash is missing")
    setup = tmp_path / "setup"
    setup.write_text("set -eu\nfromSetup=1\n\nkept() {\n    echo kept\n}\n"
                     "changed() {\n    echo old\n}\ngone() { :; }\n")
    dump = subprocess.run(
        ["/bin/bash", "-c", f"source {setup}; changed() {{ echo new; }}; new() {{ echo n; }}; "
         "unset -f gone; declare -f"], capture_output=True, text=True, check=True).stdout
    names = re.findall(r"^(\S+) \(\) $", dump, re.M)
    st = State(['declare -- mine="x"'], dump, ["set -o errexit"], 0.0)
    script = st.script(interactive=False, setup=str(setup))
    script += ("shopt -s extdebug; declare -F kept changed new; shopt -u extdebug; "
               "declare -F gone || echo no-gone; echo ${fromSetup-unset} $mine; changed\n")
    f = tmp_path / "state.sh"
    f.write_text(script)
    out = subprocess.run(["/bin/bash", "--norc", str(f)], capture_output=True,
                         text=True).stdout.splitlines()
    assert names == ["changed", "kept", "new"]
    assert out[0] == f"kept 4 {setup}"
    assert out[1].startswith("changed ") and not out[1].endswith(str(setup))
    assert out[2].startswith("new ") and out[3:] == ["no-gone", "unset x", "new"]


def test_a_phase_stop_is_the_announcements_write_even_after_an_extra_log_line():
    """A live phase that took 30 s or more writes stdenv's footer ("buildPhase
    completed in 31 seconds") before the next announcement, where the recorded
    one wrote nothing: the stop is still the announcement's write."""
    from types import SimpleNamespace
    from nixrec.replayer.matcher import Loc
    from nixrec.replayer.targets import Target
    said = b'@nix { "action": "setPhase", "phase": "checkPhase" }\n'
    t = Target(SimpleNamespace(kind="output", args={"data": said}, seq=35533),
               Loc("1", 284, 2), 35533)
    out = lambda data: SimpleNamespace(kind="output", args={"data": data})   # noqa: E731
    assert not t.hit(Loc("1", 284, 2), out(b"buildPhase completed in 31 seconds\n"))
    assert t.hit(Loc("1", 284, 3), out(said))
    assert not t.hit(Loc("1.2", 284, 3), out(said))
    # Without the live event (or another kind of target): by position, as before.
    assert t.hit(Loc("1", 284, 2)) and t.hit(Loc("1", 285))
