"""End to end on real tools: record each fixtures/realworld derivation, ask
`nixrec why`, check its top cause against fixtures/realworld/labels.json, and
that real Nix 2.8 fails the same build the same way.

A label holds the compared fields (kind + key fields, as in
fixtures/failing/labels.json) and keys that are not compared: "record_args"
(the extra-sandbox-paths that expose the host tools), "requires" (host paths
the case needs: the tool, and the file the sandbox hides from it) and "log", a
line of the failure's message that both nixrec's log and real Nix's must hold:
the same failure, not just a failure.

Needs Nix, root and Nix's build users (for real Nix without its daemon), the host tools of
scripts/setup.sh and ../shared/corpus; without them the tests skip with the
reason, except under CI=true where they fail (style.md §8).
"""

import functools
import grp
import json
import os
import re
import subprocess

import pytest

from nixfix import FIXTURES, instantiate, missing, nix_env
from test_failing_corpus import check_top_cause, expected, require_host, require_record

REALWORLD = FIXTURES / "realworld"
NIXFILE = REALWORLD / "default.nix"
ALL_LABELS = json.loads((REALWORLD / "labels.json").read_text())
# The older cases; issue 21's ("set": "issue21") are tests/test_realworld_issue21.py's.
LABELS = {a: label for a, label in ALL_LABELS.items() if "set" not in label}
ZLIB = FIXTURES.parent.parent / "shared" / "corpus" / "zlib-1.2.13.tar.bz2"
# Real Nix builds in the sandbox as one of its build users (nixbld, made by
# Debian's nix-setup-systemd), as a Nix installation does: without them, as
# root, the builder's uid owns the sandbox's root and may create
# /homeless-shelter, which no real build user can. No substituters: every
# input is a local path.
BUILD_USERS = "nixbld"
NIX_OPTIONS = ["--option", "sandbox", "true", "--option", "build-users-group", BUILD_USERS,
               "--option", "substituters", ""]


def sandbox_paths(label):
    args = label.get("record_args", [])
    i = args.index("--extra-sandbox-paths") if "--extra-sandbox-paths" in args else -1
    return args[i + 1] if i >= 0 else ""


@functools.lru_cache(maxsize=None)
def _prepared() -> str:
    """'' when fixtures/realworld/prepare.sh made its prebuilt tarball, else why not."""
    if not ZLIB.exists():
        return f"{ZLIB} is missing (the shared corpus)"
    p = subprocess.run(["bash", str(REALWORLD / "prepare.sh")], capture_output=True,
                       text=True)
    return "" if p.returncode == 0 else f"fixtures/realworld/prepare.sh: {p.stderr.strip()}"


def require_case(label):
    reason = _prepared()
    if reason:
        missing(reason)
    require_host(label)


def test_every_case_has_a_label_a_log_line_and_its_sandbox_paths():
    text = NIXFILE.read_text()
    for attr, label in LABELS.items():
        assert re.search(rf"\n  ({attr} =|inherit .*\b{attr};)", text), attr
        assert label["kind"] and len(expected(label)) >= 2, attr
        assert label["log"].strip(), attr
    assert len(LABELS) >= 15


@pytest.mark.e2e
@pytest.mark.parametrize("attr", sorted(LABELS))
def test_why_names_the_labelled_cause(attr, tmp_path):
    require_record()
    label = LABELS[attr]
    require_case(label)
    check_top_cause(NIXFILE, attr, label, tmp_path)


@pytest.mark.e2e
@pytest.mark.parametrize("attr", sorted(LABELS))
def test_real_nix_fails_it_the_same_way(attr):
    label = LABELS[attr]
    require_case(label)
    if os.geteuid() != 0:
        missing("real Nix without its daemon needs root")
    try:
        grp.getgrnam(BUILD_USERS)
    except KeyError:
        missing(f"no {BUILD_USERS} group: Nix's build users (apt-get install nix-setup-systemd)")
    drv = instantiate(str(NIXFILE), attr)
    argv = ["nix-build", drv, "--no-out-link", *NIX_OPTIONS]
    if sandbox_paths(label):
        argv += ["--option", "extra-sandbox-paths", sandbox_paths(label)]
    p = subprocess.run(argv, capture_output=True, env=nix_env(), timeout=300)
    log = p.stderr.decode(errors="replace")
    assert p.returncode != 0, f"real Nix built {attr}:\n{log[-2000:]}"
    assert "builder for" in log and "failed" in log, log[-2000:]
    assert label["log"] in log, log[-3000:]
