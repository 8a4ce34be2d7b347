"""End to end: record each fixtures/failing derivation, ask `nixrec why`, and check
the top root cause against fixtures/failing/labels.json (kind + key fields).

A label may also say how to record and what the host must look like; those keys
are not compared: "record_args" (more `nixrec record` arguments, e.g.
--extra-sandbox-paths), "requires" (host paths that must exist) and
"host_links" ({link: target} symlinks the host must have, since the demo
fixtures explain how a merged-/usr Debian host looks from inside the sandbox).

Needs Nix, the fixture busybox and a working `nixrec record`; without them the
tests skip with the reason, except under CI=true where they fail (style.md §8).
"""

import functools
import json
import os
import subprocess

import pytest

from nixfix import FIXTURES, instantiate, missing, run_nixrec

FAILING = FIXTURES / "failing"
LABELS = json.loads((FAILING / "labels.json").read_text())
# Not compared: how to record, what the host needs, the log line, and the
# corpus a case belongs to ("set": "issue21" for issue 21's cases).
RECORD_KEYS = ("record_args", "requires", "host_links", "log", "set")


def expected(label: dict) -> dict:
    """The compared part of a label: the cause's kind and key fields."""
    return {k: v for k, v in label.items() if k not in RECORD_KEYS}


def require_host(label: dict):
    for path in label.get("requires", ()):
        if not os.path.exists(path):
            missing(f"the host has no {path}")
    for link, target in label.get("host_links", {}).items():
        if not os.path.islink(link) or os.readlink(link) != target:
            missing(f"the host's {link} is not a symlink to {target}")


@functools.lru_cache(maxsize=None)
def _record_available() -> bool:
    p = run_nixrec("record", "--help")
    return p.returncode == 0


def require_record():
    if not _record_available():
        missing("`nixrec record` is not available yet")


def require_xattr_tool():
    if (FAILING / ".bin" / "setxattr-tool").exists():
        return
    p = subprocess.run(["bash", str(FAILING / "prepare.sh")], capture_output=True,
                       text=True)
    if p.returncode != 0:
        missing(f"fixtures/failing/prepare.sh failed: {p.stderr.strip()}")


def test_every_fixture_has_a_label_with_a_kind():
    text = (FAILING / "default.nix").read_text()
    for attr, label in LABELS.items():
        assert f"\n  {attr} = " in text, attr
        assert label["kind"] and len(expected(label)) >= 2, attr
        assert all(isinstance(a, str) for a in label.get("record_args", ())), attr
    assert len(LABELS) >= 15


@pytest.mark.e2e
@pytest.mark.parametrize("attr", sorted(LABELS))
def test_why_names_the_labelled_cause(attr, tmp_path):
    require_record()
    label = LABELS[attr]
    require_host(label)
    if attr == "xattr":
        require_xattr_tool()
    # A fixture build takes seconds; minutes means the recorder is stuck.
    check_top_cause(FAILING / "default.nix", attr, label, tmp_path, timeout=120)


def check_top_cause(nixfile, attr, label, tmp_path, timeout=300):
    """Record `attr` of `nixfile` with its label's record_args: the build must
    fail (with the label's log line, where it has one) and `why --json`'s top
    cause must be the label's. The corpora's one check (failing, real-world)."""
    drv = instantiate(str(nixfile), attr)
    trace = tmp_path / f"{attr}.nixrec"
    rec = run_nixrec("record", drv, "-o", trace, *label.get("record_args", ()),
                     timeout=timeout)
    log = rec.stderr.decode(errors="replace")
    assert rec.returncode == 1, f"record should report a failed build:\n{log[-3000:]}"
    if label.get("log"):
        assert label["log"] in log, log[-3000:]
    why = run_nixrec("why", trace, "--json")
    assert why.returncode == 0, why.stderr.decode(errors="replace")
    rep = json.loads(why.stdout)
    assert rep["status"] == "failed" and rep["root_causes"], rep
    want = expected(label)
    got = {k: rep["root_causes"][0].get(k) for k in want}
    assert got == want, json.dumps(rep["root_causes"][:3], indent=1)
