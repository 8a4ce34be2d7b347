"""Nix's `sandbox` modes and `__noChroot`, real Nix 2.8 as the oracle
(fixtures/record.nix; recorder/session.sandboxed).

- `sandbox = true` (nixrec's default) refuses a derivation with __noChroot, in
  Nix's words, before anything runs; a structured attr that is no boolean
  fails in every mode; the string "yes" is false, so that build runs in the
  sandbox and sees what it sees under Nix;
- `nixrec record --relaxed`, as `sandbox = relaxed`: a __noChroot derivation
  sees the host's / as under Nix, a fixed-output derivation is built without
  the sandbox too (its hash can only be met on the host), any other stays in
  the sandbox;
- `impersonate-linux-26` (nix.conf, or `record --impersonate-linux-26`): the
  build's `uname -r` is Nix's 2.6.x, else the host's release.
"""

import os
import re
import subprocess

import pytest

from nixfix import instantiate, nix_env, run_nixrec, summary
from nixoracle import ORACLES, oracle
from nixrec.recorder.sandbox import plan as sandbox_plan

pytestmark = pytest.mark.e2e

NIX = ["nix-build", "--option", "build-users-group", "nixbld", "--option", "substituters", "",
       "--option", "sandbox-fallback", "false"]


def nix_build(drv, mode):
    """Real Nix with `sandbox = mode` -> (exit code, stderr's last line, output
    path). An output already valid is rebuilt (--check), but a fixed one:
    Nix would only print its path."""
    out = subprocess.run(["nix-store", "-q", "--outputs", drv], env=nix_env(),
                         capture_output=True, text=True).stdout.split()[0]
    valid = subprocess.run(["nix-store", "--check-validity", out], env=nix_env(),
                           capture_output=True).returncode == 0
    check = ["--check"] if valid and "relaxed-fod" not in drv else []
    p = subprocess.run(NIX + ["--option", "sandbox", mode, drv, "--no-out-link"] + check,
                       env=nix_env(), capture_output=True, text=True)
    return p.returncode, (p.stderr.strip().splitlines() or [""])[-1], out


def record(tmp_path, drv, *flags):
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", *flags, timeout=120)
    return p, trace


def output_of(trace, drv_out):
    return (trace.parent / (trace.name + ".d") / "outputs" / drv_out.split("/")[-1]).read_text()


@pytest.mark.parametrize("which", ORACLES)
@pytest.mark.parametrize("attr", ["noChroot", "noChrootNotBool"])
def test_sandbox_true_refuses_what_nix_refuses(tmp_path, attr, which):
    """Under every Nix here (tests/nixoracle.py): 2.8 and 2.26 say the same."""
    nix = oracle(which)
    drv = nix.instantiate("record.nix", attr)
    q = nix.build(drv, check=False)
    rc, nix_says = q.returncode, (q.stderr.decode().strip().splitlines() or [""])[-1]
    assert rc == 1 and nix_says.startswith("error: ")
    p, trace = record(tmp_path, drv, *nix.nixrec_args(tmp_path))
    err = p.stderr.decode().strip().splitlines()
    assert p.returncode == 2 and len(err) == 1, err
    assert err[0].startswith("nixrec: " + nix_says[len("error: "):]), (err[0], nix_says)
    assert not trace.exists()                   # refused before anything ran


def test_a_string_that_is_not_1_is_false_as_for_nix(tmp_path):
    drv = instantiate("record.nix", "noChrootYes")
    rc, _, out = nix_build(drv, "true")
    assert rc == 0
    p, trace = record(tmp_path, drv)
    assert p.returncode == 0, p.stderr
    seen = output_of(trace, out)
    assert seen == open(out).read() and "build" in seen.split()   # the sandbox's /
    # An ordinary derivation stays in the sandbox under --relaxed too.
    p, trace = record(tmp_path, drv, "--relaxed")
    assert p.returncode == 0 and output_of(trace, out) == seen


def test_relaxed_builds_no_chroot_on_the_host_as_nix_does(tmp_path):
    drv = instantiate("record.nix", "noChroot")
    rc, _, out = nix_build(drv, "relaxed")
    assert rc == 0
    p, trace = record(tmp_path, drv, "--relaxed")
    assert p.returncode == 0, p.stderr
    seen = output_of(trace, out)
    assert seen == open(out).read()
    assert "build" not in seen.split() and "usr" in seen.split()   # the host's /


def test_relaxed_builds_a_fixed_output_without_the_sandbox(tmp_path):
    drv = instantiate("record.nix", "relaxedFod")
    rc, nix_says, out = nix_build(drv, "relaxed")
    assert rc == 0, nix_says
    p, trace = record(tmp_path, drv, "--relaxed")
    assert p.returncode == 0, p.stderr
    assert output_of(trace, out) == "host"
    assert summary(trace)["exit_status"] == 0
    # In the sandbox, /usr/bin is not there: the hash cannot be met.
    p, trace = record(tmp_path, drv)
    assert p.returncode == 1 and b"hash mismatch" in p.stderr


def _release(log: str):
    """The release `uname -r` printed in a build log (Nix's or nixrec's)."""
    found = re.findall(r"^(?:> )?\s*(\d+\.\d+\.\d+\S*)\s*$", log, re.M)
    assert found, log
    return found[-1]


def test_impersonate_linux_26_says_what_nix_says(tmp_path):
    drv = instantiate("record.nix", "uname")     # prints uname -r, then fails
    host = os.uname().release
    for flags, nix_opts in (((), []), (("--impersonate-linux-26",),
                                       ["--option", "impersonate-linux-26", "true"])):
        nix = subprocess.run(NIX + ["--option", "sandbox", "true", *nix_opts, drv,
                                    "--no-out-link"], env=nix_env(), capture_output=True,
                             text=True)
        assert nix.returncode == 100      # a build failure
        p, _ = record(tmp_path, drv, *flags)
        assert p.returncode == 1
        p = run_nixrec("record", drv, "-o", tmp_path / "log.nixrec", *flags, timeout=120)
        ours = _release(p.stderr.decode())
        assert ours == _release(nix.stderr)
        assert (ours == host) == (not flags) and (ours.startswith("2.6.")) == bool(flags)


def test_nix_conf_says_whether_to_impersonate(tmp_path):
    conf = tmp_path / "nix.conf"
    conf.write_text("sandbox = true\nimpersonate-linux-26 = true # as Nix reads it\n")
    assert sandbox_plan.read_nix_conf(str(conf))["impersonate-linux-26"] == "true"
    conf.write_text("cores = 2\n")
    assert sandbox_plan.read_nix_conf(str(conf))["impersonate-linux-26"] == "false"
