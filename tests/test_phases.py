"""stdenv phases: found in the trace, listed by `nixrec phases`, used by
`events --phase`, `why` and `replay --until-phase` (issue 18).

Unit tests on synthetic traces first; then end-to-end tests on the stdenv
fixtures (fixtures/stdenv/default.nix), built with the host's bash and
toolchain exposed into the sandbox, each checked against real Nix 2.8 too.
"""

import os
import re
import shutil
import subprocess

import pytest

from nixfix import FIXTURES, HOST_TREES, events, missing, nix_env, nixrec_json, run_nixrec, \
    require_busybox, require_nix
from tracebuild import TraceBuilder

from nixrec.recorder.errors import BadInput
from nixrec.recorder.tracefile import open_trace
from nixrec.recorder.tracefile.phases import PhaseTracker, announcement, lookup

STDENV = FIXTURES / "stdenv" / "default.nix"


# --- unit: announcements and the phase list ------------------------------------------

def test_the_three_announcement_forms_and_nothing_else():
    assert announcement("Running phase: buildPhase") == ("buildPhase", "plain")
    assert announcement('@nix {"action":"setPhase","phase":"checkPhase"}') == \
        ("checkPhase", "structured")
    assert announcement('@nix { "action": "setPhase", "phase": "myPhase" }') == \
        ("myPhase", "structured")
    assert announcement("installing") == ("installPhase", "old")
    assert announcement("unpacking sources") == ("unpackPhase", "old")
    for line in ("Running phase: ", "running phase: buildPhase", "building foo",
                 '@nix {"action":"msg","msg":"x"}', "@nix {not json", "x Running phase: a"):
        assert announcement(line) is None, line


def _stdenv_trace(env, phases_run, fail_in=None, style="plain"):
    """A builder announcing phases_run (each with one child), failing in fail_in."""
    t = TraceBuilder()
    t.builder(argv=["bash", "-e", "default-builder.sh"], path="/bin/bash", env=env)
    say = {"plain": "Running phase: {}\n",
           "structured": '@nix {{"action":"setPhase","phase":"{}"}}\n'}[style]
    for name in phases_run:
        t.write("1", 2, say.format(name))
        child = t.fork("1", argv=["make", name])
        t.open(child, "/build/src/x", errno="EACCES" if name == "buildPhase" else None)
        t.exit(child, 2 if name == fail_in else 0)
        t.wait("1", child)
        if name == fail_in:
            break
    t.exit("1", 2 if fail_in else 0)
    return t


def _fold(t, refused=lambda ev: ev.errno == "EACCES"):
    tr = PhaseTracker()
    for ev in t.events:
        tr.see(ev, refused(ev))
    return tr.result()


def test_phases_bounds_counts_skipped_and_not_reached():
    t = _stdenv_trace({"dontConfigure": "1", "doCheck": "1"},
                      ["unpackPhase", "patchPhase", "buildPhase", "checkPhase"],
                      fail_in="checkPhase")
    ph = {p["name"]: p for p in _fold(t)}
    assert [p["name"] for p in _fold(t)][:5] == ["unpackPhase", "patchPhase", "configurePhase",
                                                 "buildPhase", "checkPhase"]
    assert ph["configurePhase"]["status"] == "skipped"
    assert ph["configurePhase"]["why"] == "dontConfigure is set"
    assert ph["checkPhase"]["status"] == "failed"
    assert ph["installPhase"]["status"] == "not reached"
    b = ph["buildPhase"]
    # From its announcement to the event before the next one.
    assert t.events[b["first"] - 1].kind == "output"
    assert b["last"] == ph["checkPhase"]["first"] - 1
    assert b["events"] == b["last"] - b["first"] + 1 == 6
    assert b["processes"] == 1 and b["refused"] == 1
    assert ph["checkPhase"]["last"] == len(t.events)      # the builder's exit is in it
    with pytest.raises(BadInput, match="did not run: it was skipped: dontConfigure is set"):
        lookup(_fold(t), "configurePhase")
    with pytest.raises(BadInput, match="has no phase nope"):
        lookup(_fold(t), "nope")


def test_a_successful_build_skips_what_its_switches_say_and_phases_overrides_the_list():
    t = _stdenv_trace({"dontBuild": "1"}, ["unpackPhase", "installPhase"])
    ph = _fold(t)
    statuses = {p["name"]: (p["status"], p.get("why")) for p in ph}
    assert statuses["buildPhase"] == ("skipped", "dontBuild is set")
    assert statuses["checkPhase"] == ("skipped", "doCheck is not set")
    assert statuses["installPhase"][0] == "ran"
    t = _stdenv_trace({"phases": "unpackPhase myPhase"}, ["unpackPhase", "myPhase"])
    assert [(p["name"], p["status"]) for p in _fold(t)] == [("unpackPhase", "ran"),
                                                            ("myPhase", "ran")]


def test_the_same_phases_under_both_styles_and_a_header_from_a_child_is_not_one():
    a = _fold(_stdenv_trace({}, ["unpackPhase", "buildPhase"]))
    b = _fold(_stdenv_trace({}, ["unpackPhase", "buildPhase"], style="structured"))
    assert [(p["name"], p["first"], p["last"]) for p in a] == \
        [(p["name"], p["first"], p["last"]) for p in b]
    t = TraceBuilder()
    t.builder(argv=["bash"], path="/bin/bash")
    child = t.fork("1", argv=["make"])
    t.write(child, 1, "building\n")         # make's own line, not older stdenv's header
    t.exit(child, 0)
    t.exit("1", 0)
    assert _fold(t) == []


def test_the_reader_keeps_the_recorders_phases_or_folds_them(tmp_path):
    t = _stdenv_trace({"doCheck": "1"}, ["unpackPhase", "buildPhase"], fail_in="buildPhase")
    kept = _fold(t)
    with open_trace(t.save(tmp_path / "kept.nixrec", summary={"phases": kept})) as r:
        assert r.phases == kept
    with open_trace(t.save(tmp_path / "old.nixrec", summary={"events": 1})) as r:
        folded = r.phases
    # A trace from before the summary had phases: the same phases, refused unknown.
    assert [dict(p, refused=0) for p in folded] == [dict(p, refused=0) for p in kept]
    assert {p["refused"] for p in folded} == {None}


# --- end to end: the stdenv fixtures ---------------------------------------------------

def _require_host_toolchain():
    for tool in ("/bin/bash", "/usr/bin/gcc", "/usr/bin/make"):
        if not os.path.exists(tool):
            missing(f"{tool} is missing (apt-get install bash gcc make)")


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    require_nix()
    require_busybox()
    _require_host_toolchain()
    out = tmp_path_factory.mktemp("phases")
    return _Recorder(out)


class _Recorder:
    def __init__(self, out):
        self.out, self.done = out, {}

    def __call__(self, attr):
        if attr not in self.done:
            path = self.out / f"{attr}.nixrec"
            p = run_nixrec("record", STDENV, "-A", attr, "--extra-sandbox-paths", HOST_TREES,
                           "-o", path, "-q", timeout=300)
            assert path.exists(), p.stderr
            self.done[attr] = (path, p)
        return self.done[attr][0]


def _phases(trace):
    return nixrec_json("phases", trace)["phases"]


def _exec_paths(trace, phase):
    return [os.path.basename(e["path"] or "") for e in events(trace, "--phase", phase)
            if e["kind"] == "exec" and e["errno"] is None]


@pytest.mark.parametrize("attr,style,line", [
    ("calcOk", "plain", "Running phase: {}"),
    ("calcStructured", "structured", '@nix {{"action":"setPhase","phase":"{}"}}'),
    ("calcOld", "old", None)])
def test_phases_have_their_boundaries_under_each_announcement_style(traces, attr, style, line):
    trace = traces(attr)
    ph = _phases(trace)
    with open_trace(str(trace)) as r:
        last_seq = r.last_seq
    ran = [p for p in ph if p["first"] is not None]
    assert [p["name"] for p in ran] == ["unpackPhase", "patchPhase", "configurePhase",
                                        "buildPhase", "checkPhase", "installPhase",
                                        "fixupPhase"]
    assert {p["style"] for p in ran} == {style}
    assert [p["status"] for p in ph if p["first"] is None] == ["skipped", "skipped"]
    for p, nxt in zip(ran, ran[1:] + [None]):
        # The phase opens with its announcement, or with the dup2 of that
        # write's redirection (`echo ... >&2`) just before it.
        lead = events(trace, "--from", p["first"], "--to", p["announced"])
        said = lead[-1]
        assert said["kind"] == "output" and said["proc"] == "1"
        assert all(e["kind"] == "syscall" and e["syscall"].startswith("dup")
                   and e["proc"] == "1" for e in lead[:-1]), lead
        if line is not None:
            assert said["args"]["data"].strip() == line.format(p["name"])
        assert p["last"] == (nxt["first"] - 1 if nxt else last_seq)
        inside = events(trace, "--phase", p["name"])
        assert inside[0]["seq"] == p["first"] and inside[-1]["seq"] == p["last"]
        assert len(inside) == p["events"]
    # What each phase ran is the phase's own work, and only there.
    assert "tar" not in _exec_paths(trace, "unpackPhase") and \
        "cp" in _exec_paths(trace, "unpackPhase")
    assert "cc1" in _exec_paths(trace, "buildPhase")
    assert "cc1" not in _exec_paths(trace, "checkPhase") + _exec_paths(trace, "installPhase")
    assert "calc" in _exec_paths(trace, "checkPhase")
    install = events(trace, "--phase", "installPhase", "--path", "*/bin/calc")
    assert install and all("-calc-1.0/bin/calc" in e["path"] for e in install)


def test_phases_table_marks_the_failing_phase_and_why_names_its_command(traces):
    trace = traces("checkFails")
    p = run_nixrec("phases", trace)
    assert p.returncode == 0, p.stderr
    rows = {ln.split()[0]: ln for ln in p.stdout.decode().splitlines()[1:]}
    assert "<- failed (build exit code 2)" in rows["checkPhase"]
    assert "failed" not in rows["buildPhase"]
    assert rows["installPhase"].split()[1:] == ["not", "reached"]
    assert "--until-phase checkPhase" in p.stdout.decode()
    rep = nixrec_json("phases", trace)
    assert rep["failed"] == "checkPhase" and rep["exit_status"] == 2
    why = nixrec_json("why", trace)
    assert why["phase"]["name"] == "checkPhase"
    assert why["phase"]["command"][0] == "make" and "check-big" in why["phase"]["command"]
    text = run_nixrec("why", trace).stdout.decode()
    assert "phase: checkPhase (events" in text
    assert "the command of checkPhase that failed: make" in text


def test_postpatch_breaking_the_build_fails_in_buildphase(traces):
    trace = traces("postPatchBreaks")
    ph = {p["name"]: p for p in _phases(trace)}
    assert ph["patchPhase"]["status"] == "ran" and ph["buildPhase"]["status"] == "failed"
    # The hook's sed ran in patchPhase, where postPatch belongs.
    assert "sed" in _exec_paths(trace, "patchPhase")
    assert nixrec_json("why", trace)["phase"]["name"] == "buildPhase"


def test_a_phase_skipped_with_dontbuild_is_reported_as_skipped(traces):
    trace = traces("noBuild")
    p = run_nixrec("phases", trace)
    assert re.search(rb"^buildPhase +skipped: dontBuild is set$", p.stdout, re.M), p.stdout
    assert {q["name"]: q["status"] for q in _phases(trace)}["buildPhase"] == "skipped"
    p = run_nixrec("events", trace, "--phase", "buildPhase")
    assert p.returncode == 2
    assert p.stderr == b"nixrec: phase buildPhase did not run: it was skipped: dontBuild is set\n"
    p = run_nixrec("replay", trace, "--until-phase", "buildPhase", "--exec", "true")
    assert p.returncode == 2 and b"dontBuild is set" in p.stderr


def test_until_phase_install_shows_the_function_the_source_root_and_the_built_files(traces):
    trace = traces("calcOk")
    p = run_nixrec("replay", trace, "--until-phase", "installPhase", "-q", "--exec",
                   "type installPhase; pwd; ls; echo src=$sourceRoot phase=$curPhase "
                   "flags=$installFlags", timeout=120)
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    assert "installPhase is a function" in out
    assert "runHook preInstall" in out              # the function's body, from the bash
    lines = out.splitlines()
    assert "/build/calc" in lines                   # the source root
    assert "calc" in lines and "calc.c" in lines    # what buildPhase built, and the source
    # State the earlier phases set in the shell, which no environ shows.
    assert "src=calc phase=installPhase flags=PREFIX=$(out)" in lines
    assert b"the start of phase installPhase" in p.stderr
    assert b"builder's shell state" in p.stderr


@pytest.mark.parametrize("attr,phase,expect", [
    ("postPatchBreaks", "buildPhase", b"CALC_VERSION"),
    ("checkFails", "checkPhase", b"check-big] Error 1")])
def test_runphase_at_the_stop_reproduces_the_phase_failure_in_the_sandbox(traces, attr, phase,
                                                                       expect):
    trace = traces(attr)
    p = run_nixrec("replay", trace, "--until-phase", phase, "-q", "--exec",
                   f"cat /proc/sys/kernel/hostname; id -u; runPhase {phase}; echo not-here",
                   timeout=120)
    out = p.stdout.decode().splitlines()
    # The build's own exit status (make's 2 through errexit), in the sandbox.
    assert p.returncode == 2, p.stderr
    assert out[:2] == ["localhost", "1000"]
    assert f"Running phase: {phase}".encode() in p.stderr and expect in p.stderr
    assert "not-here" not in out


def test_the_build_goes_on_unchanged_after_the_state_was_taken(traces):
    trace = traces("calcStructured")
    p = run_nixrec("replay", trace, "--until-phase", "buildPhase", "--continue", "-q",
                   "--exec", "declare -f buildPhase >/dev/null", timeout=120)
    assert p.returncode == 0, p.stderr
    assert b"replay matched the recording" in p.stderr
    p = run_nixrec("replay", trace, "--until-phase-end", "buildPhase", "-q", "--exec", "ls",
                   timeout=120)
    assert p.returncode == 0 and b"the last event of phase buildPhase" in p.stderr
    assert b"calc\n" in p.stdout


# --- the oracle: each fixture fails (or not) under real Nix 2.8 the same way -------------

@pytest.mark.parametrize("attr,failed", [("checkFails", "checkPhase"),
                                         ("installFails", "installPhase"),
                                         ("postPatchBreaks", "buildPhase"),
                                         ("noBuild", None)])
def test_each_fixture_does_the_same_under_real_nix(traces, attr, failed):
    if shutil.which("nix-build") is None:
        missing("nix-build is not installed (apt-get install nix-bin)")
    # As a multi-user install builds (issue 24): with build users, never
    # build-users-group = '' (host root as the builder), and no silent fallback.
    p = subprocess.run(["nix-build", "--option", "sandbox", "true", "--option",
                        "build-users-group", "nixbld", "--option", "sandbox-fallback", "false",
                        "--option", "substituters", "",
                        "--option", "extra-sandbox-paths", HOST_TREES, "--no-out-link",
                        str(STDENV), "-A", attr], capture_output=True, env=nix_env(),
                       timeout=300)
    log = p.stderr.decode()
    announced = re.findall(r"^Running phase: (\w+)$", log, re.M)
    rep = nixrec_json("phases", traces(attr))
    ours = [q["name"] for q in rep["phases"] if q["first"] is not None]
    if failed is None:
        assert p.returncode == 0, log
        assert rep["failed"] is None
        if announced:               # a cached output prints no log
            assert announced == ours
        return
    assert p.returncode == 100 and "failed with exit code 2" in log, log
    assert announced == ours and announced[-1] == failed == rep["failed"]


# --- unit: the shell state's pieces ------------------------------------------------------

def test_bash_exports_the_function_the_state_capture_calls():
    from nixrec.replayer.shellstate import Unavailable, _dynsym
    if not os.path.exists("/bin/bash"):
        missing("/bin/bash is missing")
    with open("/bin/bash", "rb") as f:
        elf = f.read()
    value, _ = _dynsym(elf, "parse_and_execute")
    assert value > 0
    with pytest.raises(Unavailable, match="does not export"):
        _dynsym(elf, "no_such_function_here")


def test_the_state_script_keeps_the_builds_variables_and_options_not_bashs_own():
    from nixrec.replayer.shellstate import _parse
    marks = {k: f"__m_{k}__" for k in "VFOE"}
    dump = "\n".join([
        "Running phase: installPhase",       # stdio the copy of the shell still held
        "", marks["V"],
        'declare -ir UID="1000"', 'declare -a FUNCNAME', 'declare -- BASH_COMMAND',
        'declare -- sourceRoot="calc"', 'declare -x out="/nix/store/x-calc"',
        # bash 5.2 writes a newline in a value as $'\\n'; an older one may not
        "declare -- nl=$'a\\ndeclare -r b'", 'declare -- multi="a', 'b"',
        marks["F"], "installPhase () ", "{ ", "    make install", "}", "runHook () ", "{ ",
        "    :", "}",
        marks["O"], "set -o errexit", "set +o history", "set -o pipefail",
        "shopt -u login_shell", "shopt -s extglob", marks["E"], ""])
    st = _parse(dump, marks, 0.0)
    assert st.names() == ["sourceRoot", "out", "nl", "multi"]
    assert st.function_names() == ["installPhase", "runHook"]
    script = st.script(interactive=False, environ_names=["out", "gone", "UID"])
    assert "unset -v gone" in script and "unset -v out" not in script \
        and "unset -v UID" not in script
    assert script.index("installPhase ()") < script.index("set -o errexit")
    assert 'declare -- multi="a\nb"' in script and "nl=$'a\\ndeclare -r b'" in script
    assert "login_shell" not in script and "shopt -s extglob" in script
    shell = st.script(interactive=True)
    assert "errexit" not in shell and "history" not in shell and "set -o pipefail" in shell
