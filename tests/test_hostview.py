"""The host's view on real builds (issue 21): `nixrec record` stats on the host
what the sandbox refused and keeps it in the trace; `why` and `deps` use it.

fixtures/failing: `hostPath` greps /usr/include/zlib.h, which the sandbox
hides and the host has (zlib1g-dev); `dns` runs busybox's nslookup, whose
UDP connect to the resolver succeeds and whose query nobody answers. Both
fail the same way under real Nix 2.8 (tests/test_failing_corpus.py).
"""

import os
import shutil
import subprocess

import pytest

from nixfix import instantiate, missing, nixrec_json, run_nixrec, summary

pytestmark = pytest.mark.e2e

ZLIB_H = "/usr/include/zlib.h"


def record(attr, tmp_path):
    trace = tmp_path / f"{attr}.nixrec"
    p = run_nixrec("record", instantiate("failing/default.nix", attr), "-o", trace, "-q",
                   timeout=120)
    assert p.returncode == 1, p.stderr
    return trace


def dpkg_owner(path):
    """What `dpkg -S` says owns `path` (the oracle), or None."""
    if not shutil.which("dpkg"):
        return None
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout
    return out.split(": ", 1)[0].split(", ")[0] if out else None


def test_the_trace_keeps_what_the_host_has_and_why_and_deps_use_it(tmp_path):
    if not os.path.exists(ZLIB_H):
        missing(f"the host has no {ZLIB_H} (scripts/setup.sh installs zlib1g-dev)")
    trace = record("hostPath", tmp_path)
    view = summary(trace)["host_view"]
    assert view["paths"][ZLIB_H] == ["file", os.path.getsize(ZLIB_H), dpkg_owner(ZLIB_H)]
    # busybox's suid-applet config: missing on the host too.
    assert view["paths"]["/etc/busybox.conf"] is None
    top = nixrec_json("why", trace)["root_causes"][0]
    assert (top["path"], top["on_host"]) == (ZLIB_H, True)
    why = run_nixrec("why", trace).stdout.decode()
    assert f"  on the host: {ZLIB_H} is a file of {os.path.getsize(ZLIB_H)} bytes" in why
    groups = {g.get("path"): g for g in nixrec_json("deps", trace)["undeclared"]}
    assert (groups[ZLIB_H]["group"], groups[ZLIB_H]["category"]) == ("hidden", "host")
    assert groups["/etc/busybox.conf"]["group"] == "probe"
    text = run_nixrec("deps", trace).stdout.decode()
    assert f"Hidden by the sandbox (the host has them):\n  Host paths:\n    {ZLIB_H}" in text


def test_a_failed_dns_lookup_is_not_a_dependency_the_build_used(tmp_path):
    trace = record("dns", tmp_path)
    dns = [g for g in nixrec_json("deps", trace)["undeclared"] if g["category"] == "dns"]
    assert dns, "the resolver query is listed"
    assert all((g["group"], g["result"]) == ("refused", "unanswered") for g in dns), dns
    text = run_nixrec("deps", trace).stdout.decode()
    assert "connect succeeded" not in text and "127.0.0.1:53  connect unanswered" in text


def test_deps_files_the_hidden_cause_apart_from_an_interpreters_probes(tmp_path):
    """fixtures/realworld pyServices: a python3 test calls getservbyname.
    /etc/services is hidden (the host has it); python3's start-up lookups
    (pybuilddir.txt, the ._pth files) are missing on the host too."""
    for path in ("/usr/bin/python3", "/etc/services"):
        if not os.path.exists(path):
            missing(f"the host has no {path} (scripts/setup.sh installs it)")
    trace = tmp_path / "py.nixrec"
    p = run_nixrec("record", instantiate("realworld/default.nix", "pyServices"), "-o", trace,
                   "-q", "--extra-sandbox-paths",
                   "/bin /lib /lib64 /usr/bin /usr/lib /usr/lib64 /usr/libexec", timeout=120)
    assert p.returncode == 1, p.stderr
    groups = {}
    for g in nixrec_json("deps", trace)["undeclared"]:
        groups.setdefault(g.get("path"), set()).add(g["group"])
    assert groups["/etc/services"] == {"hidden"}
    assert groups["/usr/bin/pybuilddir.txt"] == {"probe"}
    top = nixrec_json("why", trace)["root_causes"][0]
    assert (top["path"], top["on_host"], top["log_mention"]) == ("/etc/services", True,
                                                                 "idiom")
