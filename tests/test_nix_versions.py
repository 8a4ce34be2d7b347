"""Issue 24: the sandbox of the Nix the user has.

- which checked version a Nix follows (recorder/sandbox/nixversion.py), and
  `record`'s one-line warning for any other; the plan records the one followed;
- the host's sandbox-shaping settings (sandbox-build-dir, sandbox-dev-shm-size),
  compared with real Nix given the same settings, under every Nix here;
- `record FILE.nix --arg NAME EXPR --argstr NAME VALUE`, as nix-build passes them.

The probe comparison itself (tests/test_record.py) runs against every Nix too.
"""

import re
import subprocess

import pytest

from nixfix import FIXTURES, nix_env, require_busybox, require_nix, run_nixrec
from nixoracle import ORACLES, oracle
from nixrec.recorder.sandbox import nixversion
from nixrec.recorder.tracefile import open_trace


def plan_of(trace) -> dict:
    with open_trace(str(trace)) as r:
        return r.header["plan"]


@pytest.mark.parametrize("version,followed,exact", [
    ("2.8.0", "2.8", True), ("2.26.3", "2.26", True), ("2.26", "2.26", True),
    ("2.12.1", "2.8", False),        # before /etc became 0555 (2.14): 2.8's rows
    ("2.18.1", "2.26", False),       # 2.14-2.23: /etc 0555, as 2.26
    ("2.28.3", "2.26", False), (None, "2.8", False)])
def test_each_version_follows_a_checked_one(version, followed, exact):
    assert nixversion.follow(version) == (followed, exact)


def test_the_rows_say_what_each_checked_version_does():
    keys = ("etc_readonly", "fod_ca_bundle", "attrs_files_in_sandbox", "xattr_read_refused")
    assert nixversion.plan_features("2.8") == dict.fromkeys(keys, False)
    assert nixversion.plan_features("2.26") == dict.fromkeys(keys, True)


def _probe():
    require_nix()
    require_busybox()
    from nixfix import instantiate
    return instantiate("record.nix", "deterministic")


@pytest.mark.parametrize("asked,followed,warning", [
    ("2.18", "2.26", "nixrec: warning: Nix 2.18 is not one nixrec is checked against "
                     "(2.8 and 2.26): it follows Nix 2.26's sandbox"),
    ("2.26", "2.26", None), ("2.8", "2.8", None)])
def test_record_warns_for_a_version_it_does_not_check(tmp_path, asked, followed, warning):
    drv = _probe()
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", "--nix-version", asked)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.decode().splitlines()
    warned = [l for l in lines if "warning" in l]
    assert warned == ([warning] if warning else [])
    assert lines[0] == warned[0] if warning else True       # before the build starts
    plan = plan_of(trace)
    assert plan["nix_version"] == followed
    assert plan["nix_features"] == nixversion.plan_features(followed)


def test_record_says_a_bad_version_in_one_line(tmp_path):
    drv = _probe()
    p = run_nixrec("record", drv, "-o", tmp_path / "t.nixrec", "--nix-version", "new")
    assert p.returncode == 2
    assert p.stderr.decode().splitlines() == [
        "nixrec: --nix-version new: not a version (X.Y, e.g. 2.26)"]


@pytest.mark.parametrize("which", ORACLES)
def test_sandbox_settings_shape_both_sandboxes_alike(which, tmp_path):
    """sandbox-build-dir and sandbox-dev-shm-size, given to real Nix and to
    nixrec (in its NIX_CONF_DIR nix.conf, as Nix reads it): the same probe log."""
    from test_record import normalise, recorded_log
    nix = oracle(which)
    drv = nix.instantiate("record.nix", "probe")
    p = nix.build(drv, "--option", "sandbox-build-dir", "/b2",
                  "--option", "sandbox-dev-shm-size", "10%")
    theirs = normalise(nix.log(drv))
    env = nix.nixrec_env(tmp_path)
    conf = tmp_path / "conf"
    conf.mkdir()
    old = (tmp_path / "oracle-conf" / "nix.conf").read_text() if which == "root" else ""
    (conf / "nix.conf").write_text(old + "sandbox-build-dir = /b2\nsandbox-dev-shm-size = 10%\n")
    env["NIX_CONF_DIR"] = str(conf)
    p = run_nixrec("record", drv, "-o", tmp_path / "t.nixrec", *nix.nixrec_args(tmp_path),
                   env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "NIX_BUILD_TOP=/b2" in theirs and "nixbld:x:1000:100:Nix build user:/b2:" in theirs
    assert re.search(r"^/dev/shm \S+ tmpfs rw,size=\d+k", theirs, re.M), theirs
    assert normalise(recorded_log(p)) == theirs


ARGS_NIX = """{ greeting ? "hello", count ? 1, flags ? [] }:
(import %s/lib.nix).mk "args" ''
  echo "${greeting} ${toString count} ${toString (builtins.length flags)}" > $out
'' {}
"""


def test_record_passes_arg_and_argstr_as_nix_build_does(tmp_path):
    require_nix()
    require_busybox()
    f = tmp_path / "args.nix"
    f.write_text(ARGS_NIX % FIXTURES)
    nix_args = ["--arg", "count", "1 + 2", "--argstr", "greeting", "hi there",
                "--arg", "flags", '[ "a" "b" ]']
    want = subprocess.run(["nix-instantiate", f, *nix_args], env=nix_env(),
                          capture_output=True, text=True, check=True).stdout.strip()
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", f, "-o", trace, "-q", *nix_args)
    assert p.returncode == 0, p.stderr
    with open_trace(str(trace)) as r:
        assert r.header["drv_path"] == want
    out = next((tmp_path / "t.nixrec.d" / "outputs").iterdir())
    assert out.read_text() == "hi there 3 2\n"
    # A .drv takes no arguments: one line, exit 2.
    p = run_nixrec("record", want, "-o", tmp_path / "u.nixrec", "--argstr", "a", "b")
    assert p.returncode == 2
    assert p.stderr.decode().splitlines() == [
        f"nixrec: --arg/--argstr are for a .nix file; {want} is a derivation"]


@pytest.mark.parametrize("version,mode", [("2.26", "dr-xr-xr-x"), ("2.8", "drwxr-xr-x")])
def test_replay_rebuilds_the_sandbox_of_the_version_recorded(tmp_path, version, mode):
    from nixfix import instantiate
    drv = instantiate("replay.nix", "failSubdir")
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", "--nix-version", version)
    assert p.returncode == 1, p.stderr
    # Replayed on this host whatever its Nix: the trace's version decides.
    q = run_nixrec("replay", "-q", trace, "--until-fail", "--exec", "ls -ld /etc",
                   stdin=subprocess.DEVNULL)
    assert q.returncode == 0, q.stderr
    assert q.stdout.decode().split()[0] == mode
