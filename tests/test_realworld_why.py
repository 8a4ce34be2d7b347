"""`nixrec why` on real upstream software failing in the sandbox (issue 15),
each build checked against real Nix 2.8, which fails it the same way.

- GNU hello 2.10's ./configure with the host's gcc visible but not /usr/include:
  "cannot run C compiled programs". The cause is stdio.h (the compile that was
  to make conftest failed on it), not the exec of the conftest that was never
  made (file state, the producer chain).
- pip (Debian's python3-pip) downloading a package with /etc/ssl hidden: its
  message names /etc/ssl/certs/ca-certificates.crt, which outranks the
  openssl.cnf it opened first and did without (believe the log).

Needs Nix, the host's gcc and python3-pip (scripts/setup.sh installs them);
without them the tests skip with the reason, except under CI=true.
"""

import json
import os
import subprocess

import pytest

from nixfix import FIXTURES, events, instantiate, missing, nix_env, run_nixrec

pytestmark = pytest.mark.e2e

# Real Nix as test_record.py runs it (sandbox, the nixbld build users).
NIX_BUILD = ["nix-build", "--option", "sandbox", "true", "--option", "build-users-group",
             "nixbld", "--option", "substituters", ""]
# The host toolchain without /usr/include (fixtures/failing's demoHeader likewise).
NO_HEADERS = "/usr/bin /usr/lib /bin /lib /lib64 /usr/libexec"
NO_ETC_SSL = "/usr/bin /usr/lib /bin /lib /lib64"


def require(*paths):
    for p in paths:
        if not os.path.exists(p):
            missing(f"the host has no {p} (scripts/setup.sh installs it)")


def nix_fails(drv, sandbox_paths):
    """Real Nix builds `drv` (--check when its output is valid already, as it is
    for hello once test_record built it) -> (exit code, its log)."""
    out = subprocess.run(["nix-store", "-q", "--outputs", drv], env=nix_env(),
                         capture_output=True, text=True).stdout.split()
    valid = out and subprocess.run(["nix-store", "--check-validity", out[0]],
                                   env=nix_env(), capture_output=True).returncode == 0
    p = subprocess.run(NIX_BUILD + ["--option", "extra-sandbox-paths", sandbox_paths,
                                    drv, "--no-out-link"] + (["--check"] if valid else []),
                       env=nix_env(), capture_output=True, text=True, timeout=600)
    return p.returncode, p.stderr


def record_and_why(drv, sandbox_paths, tmp_path):
    trace = tmp_path / "t.nixrec"
    rec = run_nixrec("record", drv, "-o", trace, "--extra-sandbox-paths", sandbox_paths,
                     timeout=600)
    why = run_nixrec("why", trace, "--json")
    assert why.returncode == 0, why.stderr.decode(errors="replace")
    return rec, json.loads(why.stdout)


def test_hello_configure_without_headers_names_stdio_h_not_conftest(tmp_path):
    require("/usr/bin/gcc")
    drv = instantiate("hello.nix", "hello")
    rc, log = nix_fails(drv, NO_HEADERS)
    assert rc != 0 and "configure: error: cannot run C compiled programs." in log, log[-2000:]
    assert "failed with exit code 1" in log
    rec, rep = record_and_why(drv, NO_HEADERS, tmp_path)
    err = rec.stderr.decode(errors="replace")
    assert rec.returncode == 1 and "configure: error: cannot run C compiled programs." in err
    assert "nixrec: build failed with exit code 1" in err
    top = rep["root_causes"][0]
    assert (top["kind"], top["header"], top["path"]) == \
        ("undeclared-host-path", "stdio.h", "/usr/include"), \
        json.dumps(rep["root_causes"][:3], indent=1)
    assert top["argv"][0].endswith("/cc1")
    # Reached through the conftest that was never made, by the compile told to.
    assert top["via"]["missing"] == "/build/hello-2.10/conftest"
    producer = [e for e in rep["failure_chain"] if e["proc"] == top["via"]["producer"]]
    assert not producer          # off the chain bash reports: found by data flow
    # Followed from the failed exec of ./conftest (after the cause) to cc1's open.
    chain = top["evidence_chain"]
    assert top["seq"] in chain and chain[0] > top["seq"]
    first = events(tmp_path / "t.nixrec", "--from", str(chain[0]), "--to", str(chain[0]))
    assert (first[0]["kind"], first[0]["path"], first[0]["errno"]) == \
        ("exec", "/build/hello-2.10/conftest", "ENOENT")
    assert all(c["kind"] != "missing-interpreter" for c in rep["root_causes"])


def test_pip_without_etc_ssl_names_the_ca_bundle(tmp_path):
    require("/usr/bin/python3", "/usr/lib/python3/dist-packages/pip")
    drv = instantiate(FIXTURES / "realworld" / "pip-ca-bundle.nix", "pipCaBundle")
    said = "invalid path: /etc/ssl/certs/ca-certificates.crt"
    rc, log = nix_fails(drv, NO_ETC_SSL)
    assert rc != 0 and said in log and "failed with exit code 2" in log, log[-2000:]
    rec, rep = record_and_why(drv, NO_ETC_SSL, tmp_path)
    err = rec.stderr.decode(errors="replace")
    assert rec.returncode == 1 and said in err
    assert "nixrec: build failed with exit code 2" in err
    top = rep["root_causes"][0]
    assert (top["kind"], top["path"]) == \
        ("undeclared-host-path", "/etc/ssl/certs/ca-certificates.crt"), \
        json.dumps(rep["root_causes"][:3], indent=1)
    assert top["log_mention"] == "path"
    assert any(said in e for e in top["evidence"])
    assert "fixed-output derivation" in top["hint"]
    # What it named before issue 15, still there, below.
    assert any(c.get("link") == "/usr/lib/ssl/openssl.cnf" for c in rep["root_causes"][1:])
