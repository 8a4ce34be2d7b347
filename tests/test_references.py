"""Nix's reference checks on a recorded build's outputs (nix-sandbox.md §2.8):
the references found by scanning each output's NAR for the hash parts of the
input closure and the outputs, the cycle check between outputs, and
checkOutputs' rules (allowed/disallowed References/Requisites, structured
attrs' outputChecks with maxSize and maxClosureSize).

Every fixture (fixtures/references.nix) is built by real Nix 2.8 too: a
failing one must fail under nixrec with Nix's message (its lines joined into
one), a passing one must leave the references Nix registered in the trace's
summary.
"""

import os
import re
import subprocess

import pytest

from nixfix import instantiate, nix_env, run_nixrec, summary
from nixrec.recorder import store
from test_record import NIX_BUILD, nix_build

FAILING = ["failAllowedEmpty", "failDisallowed", "failSelf", "failRequisite",
           "failAllowedRequisites", "failIllegal", "failCycle", "failSecondOutput",
           "failLinkTarget", "failFileName", "failStructured", "failStructuredSelf",
           "failMaxSize", "failMaxClosureSize"]
PASSING = ["passSelfOut", "passRequisites", "passUnused", "passStructured", "passTwoOutputs"]


def nix_error(drv) -> str:
    """Real Nix's error for building `drv`, its lines joined as nixrec prints it."""
    p = subprocess.run(NIX_BUILD + [drv, "--no-out-link"], env=nix_env(),
                       capture_output=True, text=True)
    assert p.returncode != 0, "Nix built it"
    lines = p.stderr.splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith("error: "))
    paths = [l.strip() for l in lines[i + 1:] if l.strip().startswith("/nix/store/")]
    return " ".join([lines[i][len("error: "):]] + paths)


@pytest.mark.e2e
@pytest.mark.parametrize("attr", FAILING)
def test_a_broken_rule_fails_the_build_with_nixs_words(attr, tmp_path):
    drv = instantiate("references.nix", attr)
    theirs = nix_error(drv)
    assert re.search(r"not allowed to refer|illegal reference|cycle detected|too large", theirs)
    p = run_nixrec("record", drv, "-o", tmp_path / "t.nixrec", "-q", timeout=120)
    assert p.returncode == 1, p.stderr.decode(errors="replace")
    first = p.stderr.decode(errors="replace").splitlines()[0]
    assert first == f"nixrec: build failed with exit code 1 ({theirs})"
    assert summary(tmp_path / "t.nixrec")["error"] == theirs


@pytest.mark.e2e
@pytest.mark.parametrize("attr", PASSING)
def test_references_are_the_ones_nix_registers(attr, tmp_path):
    drv = instantiate("references.nix", attr)
    nix_build(drv)
    outs = subprocess.run(["nix-store", "-q", "--outputs", drv], env=nix_env(),
                          capture_output=True, text=True).stdout.split()
    theirs = {}
    for out in outs:
        refs = subprocess.run(["nix-store", "-q", "--references", out], env=nix_env(),
                              capture_output=True, text=True, check=True).stdout.split()
        theirs[out] = sorted(refs)
    p = run_nixrec("record", drv, "-o", tmp_path / "t.nixrec", "-q", timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    s = summary(tmp_path / "t.nixrec")
    ours = {path: s["references"][name] for name, path in _output_paths(drv).items()}
    assert ours == theirs
    # passUnused refers to nothing (its rules must not fire); the rest refer to something.
    assert any(ours.values()) == (attr != "passUnused")


def _output_paths(drv):
    from nixrec.recorder import drv as drvmod
    return {name: o.path for name, o in drvmod.load(drv).outputs.items()}


# --- the scanner itself ----------------------------------------------------------------

H1, H2 = "1" * 31 + "a", "z" * 32
C1, C2 = f"/nix/store/{H1}-one", f"/nix/store/{H2}-two"


def test_a_hash_across_two_nar_chunks_is_found(tmp_path):
    # store.nar yields a file's contents in 1 MiB blocks: put the hash across
    # the first boundary, inside a longer run of base-32 characters.
    f = tmp_path / "big"
    head = b"x" * ((1 << 20) - 20)
    f.write_bytes(head + b"ab" + H1.encode() + b"cd" + b"\n" * 100)
    assert store.references_in(str(f), [C1, C2]) == {C1}


def test_names_and_link_targets_count_and_near_misses_do_not(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / f"{H2}-file").write_text("nothing")
    assert store.references_in(str(d), [C1, C2]) == {C2}
    (d / f"{H2}-file").unlink()
    os.symlink(C1 + "/bin/sh", d / "sh")
    assert store.references_in(str(d), [C1, C2]) == {C1}
    (d / "sh").unlink()
    # One character short, or broken by a character outside Nix's base 32 ('e').
    (d / "f").write_text(H1[:-1] + " " + H2[:16] + "e" + H2[17:])
    assert store.references_in(str(d), [C1, C2]) == set()


@pytest.mark.e2e
def test_closure_by_scanning_is_the_closure_nix_knows():
    out = nix_build(instantiate("references.nix", "dep"))
    theirs = subprocess.run(["nix-store", "-qR", out], env=nix_env(), capture_output=True,
                            text=True, check=True).stdout.split()
    assert store._closure_by_scan([out]) == sorted(theirs)
    assert len(theirs) == 2
