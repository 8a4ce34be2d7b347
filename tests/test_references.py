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

import json
import os
import re
import resource
import subprocess

import pytest

from nixfix import events, instantiate, nix_env, nixrec_json, run_nixrec, summary
from nixrec.recorder.nix import store
from test_record import NIX_BUILD, nix_build

FAILING = ["failAllowedEmpty", "failDisallowed", "failSelf", "failRequisite",
           "failAllowedRequisites", "failIllegal", "failCycle", "failSecondOutput",
           "failLinkTarget", "failFileName", "failStructured", "failStructuredSelf",
           "failMaxSize", "failMaxSizeType", "failMaxClosureSize", "failMissing",
           "failWritable"]
PASSING = ["passSelfOut", "passRequisites", "passUnused", "passStructured", "passTwoOutputs",
           "passRuntimeOnly"]


def nix_error(drv) -> str:
    """Real Nix's error for building `drv`, its lines joined as nixrec prints it."""
    p = subprocess.run(NIX_BUILD + [drv, "--no-out-link"], env=nix_env(),
                       capture_output=True, text=True)
    assert p.returncode != 0, "Nix built it"
    lines = p.stderr.splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith("error: "))
    paths = [l.strip() for l in lines[i + 1:] if l.strip().startswith("/nix/store/")]
    # Nix names an output inside its chroot directory; nixrec by its store path.
    return re.sub(r"/nix/store/[a-z0-9]{32}-[^/']*\.drv\.chroot", "",
                  " ".join([lines[i][len("error: "):]] + paths))


@pytest.mark.e2e
@pytest.mark.parametrize("attr", FAILING)
def test_a_broken_rule_fails_the_build_with_nixs_words(attr, tmp_path):
    drv = instantiate("references.nix", attr)
    theirs = nix_error(drv)
    assert re.search(r"not allowed to refer|illegal reference|cycle detected|too large|"
                     r"failed to produce|suspicious ownership|type must be", theirs)
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


# (fixture, check, blamed file under the output or None, output reference it holds)
WHY = [("failRequisite", "disallowedRequisites", "/x", ["dep"]),
       ("failDisallowed", "disallowedReferences", "/x", ["bb", "dep"]),
       ("failLinkTarget", "allowedReferences", "/sh", ["bb"]),
       ("failCycle", "cycle", "/x", ["doc"]),
       ("failWritable", "permissions", "", None),
       ("failMissing", "missing", None, None),
       ("failIllegal", "rule", None, None)]


@pytest.mark.e2e
@pytest.mark.parametrize("attr,check,file,held", WHY)
def test_why_blames_the_check_and_the_event_that_wrote_the_file(attr, check, file, held,
                                                                 tmp_path):
    drv = instantiate("references.nix", attr)
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", timeout=120)
    assert p.returncode == 1
    rep = nixrec_json("why", trace)
    top = rep["root_causes"][0]
    assert rep["status"] == "failed" and rep["failure_chain"] == []
    assert (top["kind"], top["check"]) == ("output-check", check)
    outs = _output_paths(drv)
    if file is None:
        assert "path" not in top
    else:
        blamed = outs["out"] + file
        assert top["path"] == blamed
        # The event it points at made or wrote that file, in the process named.
        ev = events(trace, "--from", str(top["seq"]), "--to", str(top["seq"]))[0]
        assert ev["proc"] == top["proc"]
        assert blamed in (ev.get("path"), ev.get("path2")), ev
    if held:
        known = {"dep": _output_paths(instantiate("references.nix", "dep"))["out"],
                 "bb": _bb(), "doc": outs.get("doc")}
        want = sorted(known[h] for h in held)
        assert top["through"] == want
        if check != "cycle":          # the hint says what to grep the file for
            assert os.path.basename(want[0])[:32] in top["hint"]


# --- a fixed output that names a store path ------------------------------------------

FIXED_TARGET = "/nix/store/jz3lr6ciii1mdsnlvj3dy5vy3a4ri7s6-fixed-ref-target"   # toFile's


def _no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.e2e
def test_nix_2_8_has_no_verdict_on_a_fixed_output_with_references(tmp_path):
    # Why nixrec takes later Nix's words here: the oracle aborts on the flat
    # one and, for the NAR one, prints an output path it never made.
    flat = instantiate("references.nix", "fixedRefsFlat")
    p = subprocess.run(NIX_BUILD + [flat, "--no-out-link"], env=nix_env(), cwd=tmp_path,
                       capture_output=True, text=True, preexec_fn=_no_core)
    assert p.returncode != 0 and "references.empty()" in p.stderr, p.stderr
    nar = instantiate("references.nix", "fixedRefsNar")
    p = subprocess.run(NIX_BUILD + [nar, "--no-out-link"], env=nix_env(), cwd=tmp_path,
                       capture_output=True, text=True)
    out = _output_paths(nar)["out"]
    assert p.returncode == 0 and p.stdout.split() == [out], p.stderr
    assert not os.path.exists(out)


@pytest.mark.e2e
@pytest.mark.parametrize("attr,blamed", [("fixedRefsFlat", ""), ("fixedRefsNar", "/f"),
                                         ("fixedRefsWrongHash", "/f")])
def test_a_fixed_output_naming_a_store_path_fails_and_why_names_the_file(attr, blamed,
                                                                         tmp_path):
    drv = instantiate("references.nix", attr)
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", timeout=120)
    err = f"illegal path references in fixed-output derivation '{drv}'"
    assert p.returncode == 1, p.stderr.decode(errors="replace")
    assert p.stderr.decode().splitlines()[0] == f"nixrec: build failed with exit code 1 ({err})"
    s = summary(trace)
    assert s["error"] == err and s["references"] == {"out": [FIXED_TARGET]}
    top = nixrec_json("why", trace)["root_causes"][0]
    out = _output_paths(drv)["out"]
    assert (top["kind"], top["check"], top["path"]) == ("output-check", "fixed-references",
                                                         out + blamed)
    assert top["forbidden"] == [FIXED_TARGET]
    assert "may not refer to any store path" in top["summary"]
    assert os.path.basename(FIXED_TARGET)[:32] in top["hint"]
    ev = events(trace, "--from", str(top["seq"]), "--to", str(top["seq"]))[0]
    assert out + blamed in (ev.get("path"), ev.get("path2")), ev


def _bb():
    import glob
    return [p for p in glob.glob("/nix/store/*-busybox") if os.path.isdir(p)][0]


def _output_paths(drv):
    from nixrec.recorder.nix import drv as drvmod
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


@pytest.mark.e2e
def test_deps_keeps_an_input_the_output_refers_to_apart_from_the_unused(tmp_path):
    # dep's path goes into $out/x by `echo` (no event touches dep): a runtime
    # dependency; idle is declared, never touched, never referred to.
    drv = instantiate("references.nix", "passRuntimeOnly")
    dep = _output_paths(instantiate("references.nix", "dep"))["out"]
    idle = _output_paths(instantiate("references.nix", "idle"))["out"]
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert not [e for e in events(trace) if (e.get("path") or "").startswith(dep)]
    rep = nixrec_json("deps", trace)
    assert rep["referenced_unused"] == [{"path": dep, "outputs": ["out"]}]
    assert idle in rep["unused_inputs"] and dep not in rep["unused_inputs"]
    text = run_nixrec("deps", trace).stdout.decode()
    assert f"  {dep}  (referred to by out)" in text


@pytest.mark.e2e
def test_a_store_path_that_is_no_input_is_a_hidden_reference(tmp_path):
    # passHidden writes idle's path without its string context: Nix builds it
    # and records no reference (the oracle); nixrec warns and deps says where.
    drv = instantiate("references.nix", "passHidden")
    idle = _output_paths(instantiate("references.nix", "idle"))["out"]
    out = nix_build(drv)
    theirs = subprocess.run(["nix-store", "-q", "--references", out], env=nix_env(),
                            capture_output=True, text=True, check=True).stdout.split()
    assert idle not in theirs
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    warn = [l for l in p.stderr.decode().splitlines() if "warning" in l]
    assert warn == [f"nixrec: warning: output out names {idle}, not an input: Nix records "
                    "no reference to it (nixrec deps says where)"]
    assert summary(trace)["references"]["out"] == sorted(theirs)
    rep = nixrec_json("deps", trace)
    assert rep["hidden_references"] == [{"output": "out", "path": idle, "files": [out + "/x"]}]
    # A store path named by an input is not hidden (passRuntimeOnly names dep).
    p = run_nixrec("record", instantiate("references.nix", "passRuntimeOnly"), "-o",
                   tmp_path / "r.nixrec", "-q", timeout=120)
    assert p.returncode == 0 and b"warning" not in p.stderr
    assert nixrec_json("deps", tmp_path / "r.nixrec")["hidden_references"] == []


def test_store_paths_named_across_nar_chunks(tmp_path):
    f = tmp_path / "big"
    name = f"{H2}-tool-1.0"
    f.write_bytes(b"x" * ((1 << 20) - 30) + f"/nix/store/{name}/bin/tool\n".encode())
    assert store.scan(str(f), [C1, C2]) == ({C2}, {f"/nix/store/{name}"})


@pytest.mark.e2e
def test_check_names_the_file_that_differs_from_the_store_and_its_writer(tmp_path):
    # nix-build --check's failure, word for word, and why names the stamp file.
    drv = instantiate("references.nix", "checkRandom")
    out = _built(drv)
    p = subprocess.run(NIX_BUILD + [drv, "--no-out-link", "--check"], env=nix_env(),
                       capture_output=True, text=True)
    theirs = [l for l in p.stderr.splitlines() if l.startswith("error: ")][0][len("error: "):]
    assert "may not be deterministic" in theirs
    trace = tmp_path / "t.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", "--check", timeout=120)
    assert p.returncode == 1
    assert p.stderr.decode().splitlines()[0] == \
        f"nixrec: build failed with exit code 1 ({theirs})"
    top = nixrec_json("why", trace)["root_causes"][0]
    assert (top["kind"], top["check"], top["path"]) == \
        ("output-check", "deterministic", out + "/share/stamp")
    ev = events(trace, "--from", str(top["seq"]), "--to", str(top["seq"]))[0]
    assert ev["path"] == out + "/share/stamp" and ev["proc"] == top["proc"]
    assert f"{trace}.d/outputs/{os.path.basename(out)}/share/stamp" in top["hint"]
    # Both point to `nixrec diff`: no other recording yet, so say what to record...
    again = f"record it again (nixrec record {drv} -o again.nixrec) and run nixrec diff"
    assert again in p.stderr.decode() and again in nixrec_json("why", trace)["diff"]
    # ...and with one next to it, the diff of the two, which names the uuid read.
    other = tmp_path / "other.nixrec"
    assert run_nixrec("record", drv, "-o", other, "-q", timeout=120).returncode == 0
    second = tmp_path / "second.nixrec"
    p = run_nixrec("record", drv, "-o", second, "-q", "--check", timeout=120)
    assert p.returncode == 1
    line = [l for l in p.stderr.decode().splitlines() if "nixrec diff" in l][0]
    assert line.endswith(f"nixrec diff {os.path.relpath(other)} {os.path.relpath(second)}")
    rep = json.loads(run_nixrec("diff", other, second, "--json").stdout)
    top = rep["first_cause"]
    assert (top["kind"], top["file"]) == ("random", "/share/stamp")
    assert top["what"] == "opens /proc/sys/kernel/random/uuid"


@pytest.mark.e2e
def test_check_passes_a_deterministic_build_and_needs_valid_outputs(tmp_path):
    drv = instantiate("references.nix", "checkSame")
    _built(drv)
    p = run_nixrec("record", drv, "-o", tmp_path / "t.nixrec", "-q", "--check", timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    # Never built by Nix: Nix's refusal, before anything runs (exit 2, no trace).
    drv = instantiate("references.nix", "checkNever")
    p = run_nixrec("record", drv, "-o", tmp_path / "n.nixrec", "-q", "--check", timeout=120)
    assert p.returncode == 2
    assert p.stderr.decode().strip() == \
        f"nixrec: some outputs of '{drv}' are not valid, so checking is not possible"
    assert not (tmp_path / "n.nixrec").exists()


def _built(drv):
    """Built once by real Nix (test_record.nix_build rebuilds with --check,
    which a build that is not deterministic fails) -> its output."""
    out = _output_paths(drv)["out"]
    if not store.valid([out]):
        p = subprocess.run(NIX_BUILD + [drv, "--no-out-link"], env=nix_env(),
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    return out


def test_differing_entries_are_the_ones_a_nar_tells_apart(tmp_path):
    from nixrec.recorder.nix import outputs
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "same").write_text("x")
        os.symlink("same", d / "link")
    (a / "sub" / "f").write_text("1")
    (b / "sub" / "f").write_text("2")
    (a / "only-a").write_text("")
    os.chmod(a / "same", 0o755)
    assert outputs.differing(str(a), str(b), 10) == [f"{b}/only-a", f"{b}/same", f"{b}/sub/f"]
    os.chmod(a / "same", 0o644)
    (a / "only-a").unlink()
    (a / "sub" / "f").write_text("2")
    assert outputs.differing(str(a), str(b), 10) == []
    os.unlink(a / "link")
    os.symlink("other", a / "link")
    assert outputs.differing(str(a), str(b), 10) == [f"{b}/link"]


def test_output_checks_that_are_no_object_check_nothing(tmp_path):
    # Structured attrs with `outputChecks = [ ... ]`: Nix 2.8 finds no rules
    # there (and builds); nixrec must not stumble on it either.
    from types import SimpleNamespace
    from nixrec.recorder.nix import outputs
    out = f"/nix/store/{H1}-out"
    for checks in (["out"], "out", 3):
        d = SimpleNamespace(outputs={"out": SimpleNamespace(path=out)}, env={},
                            structured_attrs={"outputChecks": checks})
        assert outputs._check_outputs(d, "/nix/store/x.drv", {"out": str(tmp_path)},
                                      {"out": set()}) == (None, None)


def test_outputs_that_cannot_be_read_are_the_builds_error_not_a_lost_trace(tmp_path,
                                                                           monkeypatch):
    # The build ran; reading its output for the reference scan failed (an
    # I/O error, a file gone): check() says so as the build's error.
    from types import SimpleNamespace
    from nixrec.recorder.nix import outputs
    out = f"/nix/store/{H1}-out"
    (tmp_path / f"{H1}-out").write_text("x")

    def unreadable(path, candidates):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(store, "scan", unreadable)
    d = SimpleNamespace(outputs={"out": SimpleNamespace(path=out, hash_algo="", hash="")},
                        env={}, structured_attrs=None)
    plan = SimpleNamespace(drv_path="/nix/store/x.drv")
    got = outputs.check(d, plan, str(tmp_path))
    assert got["error"].startswith("cannot read the outputs to check them: ")
    assert got["references"] == {} and got["failed"] is None
    assert oct(os.lstat(tmp_path / f"{H1}-out").st_mode & 0o777) == "0o444"   # canonicalised
