"""File state over time and the producer chain (issue 15), on small synthetic
traces made with tests/tracebuild.py: the shapes seen on real GNU hello."""

import os

from tracebuild import TraceBuilder

from nixrec.analysis.deps import access_of, creates, deletes
from nixrec.analysis.facts import collect
from nixrec.analysis.filestate import FileState
from nixrec.analysis.graph import asked_to_make, build_graph, makers
from nixrec.analysis.rootcause import explain
from nixrec.analysis.render.text import why_text

GCC_DIR = "/usr/lib/gcc/x86_64-linux-gnu/12"
HOST = ("/usr/bin", "/usr/lib", "/bin", "/lib", "/lib64", "/usr/libexec")
WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def header(sandbox_paths=HOST):
    return {"plan": {"store_dir": "/nix/store", "build_dir": "/build",
                     "home": "/homeless-shelter", "inputs": [],
                     "sandbox_paths": [{"source": p, "target": p} for p in sandbox_paths],
                     "outputs": {"out": "/nix/store/0000000000000000000000000000000a-x"}}}


def why(t, **kw):
    return explain(header(**kw), {}, list(t.events))


def compile_conftest(t, sh, ok, header_name="stdio.h"):
    """`gcc -o conftest conftest.c` as configure runs it: cc1's stderr goes to
    conftest.err (a file), so the log says nothing; ld makes conftest."""
    gcc = t.fork(sh, argv=["gcc", "-o", "conftest", "conftest.c"], path="/usr/bin/gcc")
    cc1 = t.fork(gcc, argv=[GCC_DIR + "/cc1", "conftest.c", "-o", "/build/ccX.s"],
                 path=GCC_DIR + "/cc1")
    t.stat(cc1, GCC_DIR + "/include")
    t.stat(cc1, "/usr/local/include", errno="ENOENT")
    t.stat(cc1, "/usr/include/x86_64-linux-gnu", errno="ENOENT")
    t.stat(cc1, "/usr/include", errno="ENOENT")
    t.open(cc1, "/build/conftest.c")
    t.open(cc1, GCC_DIR + "/include/stdc-predef.h", errno="ENOENT")
    if ok:
        t.exit(cc1, 0)
        t.wait(gcc, cc1)
        ld = t.fork(gcc, argv=["ld", "-o", "conftest"], path="/usr/bin/ld")
        t.open(ld, "/build/conftest", flags=os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        t.exit(ld, 0)
        t.wait(gcc, ld)
        t.exit(gcc, 0)
    else:
        t.open(cc1, GCC_DIR + "/include/" + header_name, errno="ENOENT")
        t.exit(cc1, 1)
        t.wait(gcc, cc1)
        t.exit(gcc, 1)
    t.wait(sh, gcc)
    return gcc, cc1


def configure_without_headers():
    """The first compile works (no #include), rm removes its conftest, the next
    one (#include <stdio.h>) fails, and running ./conftest says ENOENT."""
    t = TraceBuilder()
    sh = t.builder(argv=["bash", "./configure"], path="/bin/bash")
    t.open(sh, "conftest.c", flags=WRITE)
    compile_conftest(t, sh, ok=True)
    t.stat(sh, "conftest")                        # ac_fn_c_try_link: test -s conftest
    rm = t.fork(sh, argv=["rm", "-f", "conftest"], path="/usr/bin/rm")
    t.unlink(rm, "conftest")
    t.exit(rm, 0)
    t.wait(sh, rm)
    gcc, cc1 = compile_conftest(t, sh, ok=False)
    run = t.fork(sh)                              # bash forks, then execs ./conftest
    t.exec(run, ["./conftest"], path="/build/conftest", errno="ENOENT")
    t.stat(run, "conftest", errno="ENOENT")
    t.exit(run, 127)
    t.wait(sh, run)
    t.write(sh, 1, b"configure: error: cannot run C compiled programs.\n")
    t.exit(sh, 1)
    return t, gcc, cc1, run


# -- file state -----------------------------------------------------------------

def test_file_state_is_the_last_change_before_the_event_not_an_earlier_success():
    t, _, _, run = configure_without_headers()
    facts = collect(header(), {}, t.events)
    conftest = "/build/conftest"
    made = next(e.seq for e in t.events if e.path == conftest and e.flags
                and e.flags & os.O_CREAT)
    gone = next(e.seq for e in t.events if e.syscall == "unlink")
    run_exec = next(e.seq for e in t.events if e.kind == "exec" and e.path == conftest)
    assert facts.exists_at(conftest, made) is False          # not yet made
    assert facts.exists_at(conftest, made + 1) is True
    assert facts.exists_at(conftest, gone) is True           # rm's own unlink
    assert facts.exists_at(conftest, gone + 1) is False
    assert facts.exists_at(conftest, run_exec) is False      # the exec's point
    assert facts.files.removed_before(conftest, run_exec)[0] == gone
    assert facts.exists_at("/build/never", run_exec) is None  # never seen to exist


def test_file_state_changes_alone_are_kept_and_a_failed_exec_is_no_lookup():
    fs = FileState()
    t = TraceBuilder()
    sh = t.builder()
    evs = [t.open(sh, "x", flags=WRITE), t.stat(sh, "x"), t.stat(sh, "x"),
           t.unlink(sh, "x"), t.stat(sh, "x", errno="ENOENT"),
           t.exec(sh, ["./x"], path="/build/x", errno="ENOENT"),
           t.rename(sh, "y", "x")]
    for ev in evs:
        if ev.failed:
            fs.failed(ev)
        else:
            fs.observe(ev, access_of(ev), creates(ev), deletes(ev))
    # made, gone, made again (the rename): the repeated stats add nothing.
    assert [how for _, how in fs.history["/build/x"]] == [2, 3, 2]
    # A path seen only after the event existed at it (nothing made it between).
    assert fs.exists_at("/build/y", evs[0].seq) is True
    assert fs.exists_at("/build/y", evs[-1].seq + 1) is False


# -- the producer chain ------------------------------------------------------------

def test_graph_knows_who_makes_a_path_and_who_was_asked_to():
    t, gcc, cc1, _ = configure_without_headers()
    g = build_graph(header(), {}, t.events)
    # The first compile's ld made it; the second compile's gcc never got there.
    assert [(p, kind, ok) for p, kind, _, ok in makers(g, "/build/conftest")] \
        == [("1.1.2", "create", True)]
    asked = asked_to_make(g, "/build/conftest")
    assert asked[gcc] == 2                  # -o conftest: an output
    assert cc1 not in asked                 # conftest.c is another file
    assert asked_to_make(g, "/build/version.h") == {}


def test_exec_of_a_removed_conftest_leads_to_the_compile_that_failed_and_its_header():
    t, gcc, cc1, run = configure_without_headers()
    rep = why(t)
    c = rep["root_causes"][0]
    assert c["kind"] == "undeclared-host-path", c
    assert c["header"] == "stdio.h" and c["path"] == "/usr/include"
    assert c["proc"] == cc1
    assert c["via"] == {"missing": "/build/conftest", "consumer": run, "producer": gcc}
    assert "conftest was never made" in c["summary"]
    # Symptom first, then where it went away, the producers' exits, the cause.
    run_exec = next(e.seq for e in t.events if e.kind == "exec" and e.failed)
    gone = next(e.seq for e in t.events if e.syscall == "unlink")
    exits = [e.seq for e in t.events if e.kind == "exit" and e.proc in (gcc, cc1)]
    assert c["evidence_chain"][:4] == [run_exec, gone] + sorted(exits, reverse=True)
    assert c["evidence_chain"][4] == c["seq"]
    assert "followed: #%d -> #%d" % (run_exec, gone) in why_text(rep)
    # Not the old answer: the file did not exist, so no interpreter is missing.
    assert all(x["kind"] != "missing-interpreter" for x in rep["root_causes"])


def test_exec_of_a_file_that_is_there_is_still_a_missing_interpreter():
    t = TraceBuilder()
    sh = t.builder(argv=["sh", "-c", "./configure"], path="/bin/sh")
    t.open(sh, "configure", flags=WRITE)
    run = t.fork(sh)
    t.exec(run, ["./configure"], path="/build/configure", errno="ENOENT")
    t.exit(run, 127)
    t.wait(sh, run)
    t.exit(sh, 127)
    c = why(t)["root_causes"][0]
    assert c["kind"] == "missing-interpreter" and c["path"] == "/build/configure"
    assert "via" not in c


def test_a_producer_that_ended_before_the_file_went_away_is_not_followed():
    # make made gen.h (ok), a clean step removed it, nothing failed to make it
    # again: the consumer's own failure stands.
    t = TraceBuilder()
    sh = t.builder(argv=["sh", "-c", "build"], path="/bin/sh")
    gen = t.fork(sh, argv=["gen", "--out=gen.h"], path="/bin/gen")
    t.open(gen, "gen.h", flags=WRITE)
    t.exit(gen, 0)
    t.wait(sh, gen)
    bad = t.fork(sh, argv=["gen", "--out=gen.h", "--check"], path="/bin/gen")
    t.exit(bad, 1)              # failed, but before the removal: not the producer
    t.wait(sh, bad)
    rm = t.fork(sh, argv=["rm", "gen.h"], path="/bin/rm")
    t.unlink(rm, "gen.h")
    t.exit(rm, 0)
    t.wait(sh, rm)
    cat = t.fork(sh, argv=["cat", "gen.h"], path="/bin/cat")
    t.open(cat, "gen.h", errno="ENOENT")
    t.write(cat, 2, b"cat: gen.h: No such file or directory\n")
    t.exit(cat, 1)
    t.wait(sh, cat)
    t.exit(sh, 1)
    c = why(t)["root_causes"][0]
    assert c["proc"] == cat and "via" not in c


# -- believe the log -----------------------------------------------------------------

def pip_shaped(say_path=True):
    """python3 opens /usr/lib/ssl/openssl.cnf (a symlink to /etc/ssl, hidden)
    and carries on; later it stats the CA bundle and gives up, saying so."""
    t = TraceBuilder()
    sh = t.builder(argv=["sh", "-c", "python3 -m pip download six"], path="/bin/sh")
    py = t.fork(sh, argv=["python3", "-m", "pip", "download", "six"],
                path="/usr/bin/python3")
    ev = t.open(py, "/usr/lib/ssl/openssl.cnf", errno="ENOENT")
    ev.args.update(link="/usr/lib/ssl/openssl.cnf", link_target="/etc/ssl/openssl.cnf")
    t.stat(py, "/etc/pip.conf", errno="ENOENT")
    t.stat(py, "/etc/ssl/certs/ca-certificates.crt", errno="ENOENT")
    what = "/etc/ssl/certs/ca-certificates.crt" if say_path else "the certificates"
    t.write(py, 2, ("OSError: Could not find a suitable TLS CA certificate bundle, "
                    f"invalid path: {what}\n").encode())
    t.exit(py, 2)
    t.wait(sh, py)
    t.exit(sh, 2)
    return t, py


def test_a_failed_access_the_log_names_outranks_those_it_never_mentions():
    t, py = pip_shaped()
    rep = why(t, sandbox_paths=("/usr/bin", "/usr/lib", "/bin", "/lib", "/lib64"))
    c = rep["root_causes"][0]
    assert c["path"] == "/etc/ssl/certs/ca-certificates.crt", rep["root_causes"][:2]
    assert c["kind"] == "undeclared-host-path" and c["log_mention"] == "path"
    # The line that names it is the evidence shown.
    assert any("invalid path: /etc/ssl/certs/ca-certificates.crt" in e
               for e in c["evidence"])
    assert "fetch in a fixed-output derivation" in c["hint"]      # a CA bundle: a fetch
    rest = {x["path"]: x for x in rep["root_causes"][1:]}
    assert rest["/etc/ssl/openssl.cnf"]["score"] < c["score"]
    assert "log_mention" not in rest["/etc/ssl/openssl.cnf"]


def test_without_the_mention_the_stat_is_only_a_probe():
    # The same trace with a log that names no path: the symlink out of the
    # sandbox is the better answer, and the CA bundle's stat a `test -e`.
    t, py = pip_shaped(say_path=False)
    rep = why(t, sandbox_paths=("/usr/bin", "/usr/lib", "/bin", "/lib", "/lib64"))
    c = rep["root_causes"][0]
    assert c["path"] == "/etc/ssl/openssl.cnf" and c["link"] == "/usr/lib/ssl/openssl.cnf"
