"""`nixrec diff A B` on real builds recorded twice (fixtures/diff.nix).

Each pair is recorded with `nixrec record` and diff must name the right first
cause: the clock (a `date` stamp), random bytes (/dev/urandom), the cores
(NIX_BUILD_CORES, --cores 1 vs 2), a host file a --no-sandbox build finds
(the first divergent call, with both seqs), and nothing for a pair that does
not differ. Plus the alignment on synthetic traces: jobs forked in another
order are no difference.
"""

import json
import os

import pytest

from nixfix import events, instantiate, run_nixrec
from nixrec.replayer.diff import align
from nixrec.replayer.matcher import RecordedIndex
from tracebuild import TraceBuilder


def record(tmp_path, attr, name, *extra, ok=True):
    drv = instantiate("diff.nix", attr)
    trace = tmp_path / f"{name}.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", *extra, timeout=120)
    assert p.returncode == (0 if ok else 1), p.stderr
    return trace


def diff(a, b):
    p = run_nixrec("diff", a, b, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def diff_text(a, b):
    p = run_nixrec("diff", a, b)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


@pytest.mark.e2e
def test_a_date_stamp_is_the_clock(tmp_path):
    a, b = record(tmp_path, "stamp", "a"), record(tmp_path, "stamp", "b")
    rep = diff(a, b)
    assert rep["different"] and not rep["plan"] and not rep["divergences"]
    assert [(f["output"], f["file"], f["how"]) for f in rep["files"]] == \
        [("out", "/built-at", "contents")]            # greeting is the same
    f = rep["files"][0]
    # The shell opened the redirection; its child 1.3 (busybox date, no exec;
    # 1.2 is the sleep) wrote it.
    assert f["a_writer"]["proc"] == "1" and f["b_writer"]["proc"] == "1"
    top = rep["first_cause"]
    assert (top["kind"], top["file"], top["proc"]) == ("clock", "/built-at", "1.3")
    assert "/etc/localtime" in top["what"]
    ev = events(a, "--from", top["seq"], "--to", top["seq"])[0]
    assert (ev["proc"], ev["path"]) == ("1.3", "/etc/localtime")
    assert diff_text(a, b).startswith("first cause (for out:/built-at): [clock] process 1.3")


@pytest.mark.e2e
def test_random_bytes_are_random(tmp_path):
    a, b = record(tmp_path, "random", "a"), record(tmp_path, "random", "b")
    rep = diff(a, b)
    assert [f["file"] for f in rep["files"]] == ["/key"]
    top = rep["first_cause"]
    assert (top["kind"], top["proc"], top["file"]) == ("random", "1.2", "/key")
    assert top["what"] == "opens /dev/urandom"
    # A trace cut short (no index, no summary): diff says so and still answers.
    cut = tmp_path / "cut.nixrec"
    data = b.read_bytes()
    cut.write_bytes(data[:len(data) - 200])
    lines = diff_text(a, cut).splitlines()
    assert lines[0].startswith("note: B is a partial trace: recording interrupted after event")
    assert lines[1] == "first cause: [output] output out made by A only"


@pytest.mark.e2e
def test_random_bytes_through_a_pipe_name_dev_urandom(tmp_path):
    # head -c 16 /dev/urandom | od > $out/rand: od writes the file, head read
    # /dev/urandom; the pipe between them is in the trace (pipe2, dup2).
    a, b = record(tmp_path, "pipe", "a"), record(tmp_path, "pipe", "b")
    pipes = [e for e in events(a) if e.get("syscall") == "pipe2"]
    assert len(pipes) == 1 and pipes[0]["args"]["ends"][0].startswith("pipe:[")
    assert pipes[0]["args"]["ends"][0] == pipes[0]["args"]["ends"][1]
    dups = [e for e in events(a) if e.get("syscall") == "dup2"]
    assert any(e["args"]["fd"] == pipes[0]["args"]["fds"][1] and e["result"] == 1
               for e in dups)                     # head's stdout: the write end
    rep = diff(a, b)
    assert [f["file"] for f in rep["files"]] == ["/rand"]
    f = rep["files"][0]
    od = f["a_writer"]["proc"]
    top = rep["first_cause"]
    assert (top["kind"], top["file"], top["what"], top["via"]) == \
        ("random", "/rand", "opens /dev/urandom", "pipe")
    assert top["proc"] != od and not od.startswith(top["proc"] + ".")   # head, not od's shell
    assert "through a pipe" in diff_text(a, b)


@pytest.mark.e2e
def test_an_output_that_follows_the_cores_names_nix_build_cores(tmp_path):
    a = record(tmp_path, "cores", "a", "--cores", "1")
    b = record(tmp_path, "cores", "b", "--cores", "2")
    rep = diff(a, b)
    assert [(p["what"], p["a"], p["b"]) for p in rep["plan"]] == [("cores", 1, 2)]
    assert [f["file"] for f in rep["files"]] == ["/first-lines", "/jobs"]
    # grep -m $NIX_BUILD_CORES: the exec's argv differs, in the words that are its values.
    [d] = rep["divergences"]
    assert (d["why"], d["a_argv0"], d["env"]) == ("a different argv", "grep",
                                                  "NIX_BUILD_CORES")
    first, jobs = rep["files"]
    assert first["a_writer"]["proc"] == d["a_proc"]      # grep opened its own redirection
    top = rep["first_cause"]
    assert (top["kind"], top["file"], top["proc"]) == ("cores", "/first-lines", d["a_proc"])
    assert "differing words ['1']" in top["what"] and "(the values of NIX_BUILD_CORES)" in top["what"]
    # /jobs: busybox seq runs without an exec; only the environment says it.
    assert jobs["sources"][0]["kind"] == "cores"
    assert "NIX_BUILD_CORES is '1' in A, '2' in B" in jobs["sources"][0]["what"]
    text = diff_text(a, b)
    assert "cores (NIX_BUILD_CORES): 1 / 2" in text


@pytest.mark.e2e
def test_a_host_file_without_the_sandbox_is_the_first_divergence(tmp_path):
    a = record(tmp_path, "hostFile", "a")
    b = record(tmp_path, "hostFile", "b", "--no-sandbox", ok=False)
    rep = diff(a, b)
    plan = {p["what"]: (p["a"], p["b"]) for p in rep["plan"]}
    assert plan["no_sandbox"] == (False, True)
    assert plan["build_dir"][0] == "/build"        # B's host dir is read as /build
    first = rep["divergences"][0]
    assert (first["a_proc"], first["why"], first["path"]) == \
        ("1.1", "a call that failed now succeeds", "/etc/debian_version")
    ea = events(a, "--from", first["a_seq"], "--to", first["a_seq"])[0]
    eb = events(b, "--from", first["b_seq"], "--to", first["b_seq"])[0]
    assert (ea["path"], ea["errno"]) == ("/etc/debian_version", "ENOENT")
    assert (eb["path"], eb["errno"]) == ("/etc/debian_version", None)
    # The builder's own difference (it exits 1) comes after, from 1.1's.
    assert [d["a_proc"] for d in rep["divergences"]] == ["1.1", "1"]
    assert rep["outputs"] == [{"output": "out", "only_in": "a"}]
    top = rep["first_cause"]
    assert (top["kind"], top["proc"], top["path"]) == ("divergence", "1.1",
                                                       "/etc/debian_version")


@pytest.mark.e2e
def test_the_same_build_twice_is_no_difference(tmp_path):
    a, b = record(tmp_path, "same", "a"), record(tmp_path, "same", "b")
    rep = diff(a, b)
    assert rep["different"] is False and rep["first_cause"] is None
    assert rep["plan"] == [] and rep["divergences"] == [] and rep["files"] == []
    assert diff_text(a, b) == "no difference\n"


def test_an_unreadable_trace_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "x.nixrec"
    bad.write_bytes(b"not a trace")
    p = run_nixrec("diff", bad, bad)
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1
    assert p.stderr.startswith(b"nixrec: ")


# --- the alignment, on synthetic traces ------------------------------------------------

def _jobs(order):
    """make -j2 running three compiles, which end (and are refilled) in `order`."""
    t = TraceBuilder()
    make = t.builder(argv=["make", "-j2"], path="/bin/make")
    kids = {}
    for name in order[:2]:
        kids[name] = t.fork(make, argv=["cc", f"{name}.c"], path="/bin/cc")
    for i, name in enumerate(order):
        t.open(kids[name], f"/build/{name}.c")
        t.open(kids[name], f"/build/{name}.o", flags=0o101)
        t.exit(kids[name], 0)
        t.wait(make, kids[name])
        if i + 2 < len(order):          # a slot is free: the next job
            nxt = order[i + 2]
            kids[nxt] = t.fork(make, argv=["cc", f"{nxt}.c"], path="/bin/cc")
    t.exit(make, 0)
    return t.events


def _align(a, b):
    index = RecordedIndex()
    for ev in a:
        index.add(ev)
    return align(index, iter(b))


def test_jobs_in_another_order_are_no_difference():
    assert _align(_jobs(["x", "y", "z"]), _jobs(["x", "y", "z"])) == []
    assert _align(_jobs(["x", "y", "z"]), _jobs(["y", "x", "z"])) == []


def test_a_job_with_another_argv_is_named_with_both_seqs():
    a, b = _jobs(["x", "y"]), _jobs(["x", "w"])
    found = _align(a, b)
    assert found and found[0].why in ("a different argv", "a different path")
    assert found[0].rec_seq is not None and found[0].live_seq is not None


# --- what counts as a source of nondeterminism (analysis/nondet.py) -------------------

def test_sources_are_opens_and_execs_not_stats():
    from nixrec.analysis.nondet import source_of
    t = TraceBuilder()
    sh = t.builder()
    t.syscall(sh, "newfstatat", "/dev/urandom")          # ttyname() walking /dev
    t.open(sh, "/dev/urandom")
    t.open(sh, "/etc/localtime", errno="ENOENT")          # localtime() in the sandbox
    t.open(sh, "/build/src", flags=os.O_RDONLY | os.O_DIRECTORY)
    t.open(sh, "/nix/store/x-in/lib", flags=os.O_RDONLY | os.O_DIRECTORY)
    t.open(sh, "/dev", flags=os.O_RDONLY | os.O_DIRECTORY)
    date = t.fork(sh, argv=["date", "+%s"], path="/bin/date")
    fixed = t.fork(sh, argv=["date", "-d", "@0"], path="/bin/date")
    kinds = [(e.proc, source_of(e)[0]) for e in t.events if source_of(e)]
    assert kinds == [("1", "random"), ("1", "clock"), ("1", "readdir"), (date, "clock")]
    assert fixed not in [p for p, _ in kinds]


def test_a_redirections_child_is_a_maker_until_the_shell_waits_for_it():
    from nixrec.analysis.nondet import Flow
    t = TraceBuilder()
    sh = t.builder()
    early = t.fork(sh, argv=["cat", "/dev/urandom"], path="/bin/cat")   # before: not a maker
    t.open(early, "/dev/urandom")
    t.exit(early, 0)
    t.wait(sh, early)
    t.open(sh, "/nix/store/x-out/f", flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    kid = t.fork(sh, argv=None)                          # busybox `date`: a fork, no exec
    t.open(kid, "/etc/localtime")
    t.exit(kid, 0)
    t.wait(sh, kid)                                      # the command is over
    late = t.fork(sh, argv=None)                         # the next command: not a maker
    t.open(late, "/dev/urandom")
    flow = Flow(["/nix/store/x-out/f"])
    for e in t.events:
        flow.add(e)
    (seq, writer), who = flow.makers("/nix/store/x-out/f")
    assert writer == "1" and (kid, "child") in who
    assert all(p not in (early, late) for p, _ in who)
    assert [(s["kind"], s["proc"], s["via"]) for s in flow.sources_of("/nix/store/x-out/f")] \
        == [("clock", kid, "child")]
