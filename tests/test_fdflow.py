"""Data flow through descriptors (analysis/fdflow.py) on small synthetic traces:
the shapes a shell makes for a pipeline, a redirection its children inherit,
and `$(...)`, as the recorder writes them (pipe2 with its fds and ends, dup2
with the fd it copied and its result)."""

import os

from tracebuild import TraceBuilder

from nixrec.analysis.facts import collect
from nixrec.analysis.fdflow import FdFlow
from nixrec.analysis.graph import makers
from nixrec.analysis.nondet import Flow

WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
OUT = "/nix/store/0000000000000000000000000000000a-x"


def pipe2(t, proc, fds=(3, 4), ino=7):
    end = f"pipe:[{ino}]"
    return t.syscall(proc, "pipe2", flags=0, fds=list(fds), ends=[end, end])


def dup2(t, proc, old, new):
    return t.syscall(proc, "dup2", result=new, fd=old)


def pipeline(t, sh, out, reader_open=True):
    """`head -c 16 /dev/urandom | od > out`, as bash runs it: the shell makes
    the pipe, each child dups its end onto stdin/stdout, od's child opens
    the redirection. -> (head, od)."""
    pipe2(t, sh)
    head = t.fork(sh, argv=["head", "-c", "16", "/dev/urandom"], path="/bin/head")
    dup2(t, head, 4, 1)
    t.open(head, "/dev/urandom")
    od = t.fork(sh, argv=["od"], path="/bin/od")
    dup2(t, od, 3, 0)
    if reader_open:
        t.open(od, out, flags=WRITE)
        dup2(t, od, 3, 1)         # the open's fd: TraceBuilder gives 3 again
    t.exit(head, 0)
    t.exit(od, 0)
    t.wait(sh, head)
    t.wait(sh, od)
    return head, od


def flow_of(t, *targets):
    f = Flow(targets)
    for ev in t.events:
        f.add(ev)
    return f


def test_the_writer_of_a_pipe_produces_what_its_reader_writes():
    t = TraceBuilder()
    sh = t.builder()
    head, od = pipeline(t, sh, OUT + "/rand")
    f = flow_of(t, OUT + "/rand")
    (_, writer), who = f.makers(OUT + "/rand")
    assert writer == od
    assert (head, "pipe") in who
    srcs = f.sources_of(OUT + "/rand")
    assert [(s["kind"], s["proc"], s["via"]) for s in srcs] == [("random", head, "pipe")]


def test_the_shell_that_made_the_pipe_is_no_writer_of_it():
    # The shell holds both ends (close() is not recorded) and forks both
    # children: its own reads before are the ancestor rule's, not the pipe's.
    t = TraceBuilder()
    sh = t.builder()
    t.open(sh, "/dev/urandom")                # the shell's own: before the fork
    head, od = pipeline(t, sh, OUT + "/rand")
    fd = flow_of(t, OUT + "/rand").fd
    assert [p for p, _, _ in fd.upstream(OUT + "/rand")] == [head]


def test_a_pipe_made_after_a_file_was_written_feeds_nothing_into_it():
    # `seq 2 > jobs; seq 10 | grep x > lines`: the shell's redirection of jobs
    # is undone (dup2 back) before the pipe is made.
    t = TraceBuilder()
    sh = t.builder()
    t.open(sh, OUT + "/jobs", flags=WRITE)
    dup2(t, sh, 3, 1)
    seq = t.fork(sh, argv=None)
    t.exit(seq, 0)
    t.wait(sh, seq)
    dup2(t, sh, 10, 1)                        # the saved stdout back
    head, od = pipeline(t, sh, OUT + "/lines")
    fd = flow_of(t, OUT + "/jobs").fd
    assert fd.upstream(OUT + "/jobs") == []
    assert [p for p, _ in fd.file_writers(OUT + "/jobs")] == ["1", seq]


def test_a_redirection_inherited_by_each_command_of_a_group_makes_each_a_writer():
    # `{ a; b; } > f`: the shell opens f, dups it onto stdout, runs a then b,
    # then puts its stdout back; a command after that is no writer.
    t = TraceBuilder()
    sh = t.builder()
    t.open(sh, OUT + "/f", flags=WRITE)
    dup2(t, sh, 3, 1)
    a = t.fork(sh, argv=None)
    t.open(a, "/etc/localtime")
    t.exit(a, 0)
    t.wait(sh, a)
    b = t.fork(sh, argv=None)
    t.open(b, "/dev/urandom")
    t.exit(b, 0)
    t.wait(sh, b)
    dup2(t, sh, 10, 1)
    late = t.fork(sh, argv=None)
    t.open(late, "/proc/cpuinfo")
    f = flow_of(t, OUT + "/f")
    _, who = f.makers(OUT + "/f")
    assert (a, "child") in who and (b, "child") in who
    assert late not in dict(who)
    kinds = {s["kind"] for s in f.sources_of(OUT + "/f")}
    assert kinds == {"clock", "random"}


def test_command_substitution_feeds_the_shell_that_reads_it():
    # `x=$(date); echo "$x" > f`: the child writes the pipe, the shell reads it
    # and then writes f itself.
    t = TraceBuilder()
    sh = t.builder()
    pipe2(t, sh)
    sub = t.fork(sh, argv=["date"], path="/bin/date")
    dup2(t, sub, 4, 1)
    t.exit(sub, 0)
    t.wait(sh, sub)
    t.open(sh, OUT + "/f", flags=WRITE)
    f = flow_of(t, OUT + "/f")
    assert [(s["kind"], s["proc"], s["via"]) for s in f.sources_of(OUT + "/f")] == \
        [("clock", sub, "pipe")]


def test_cloexec_ends_are_gone_after_exec_and_dup3_keeps_its_flag():
    fd = FdFlow()
    t = TraceBuilder()
    sh = t.builder()
    ev = t.syscall(sh, "pipe2", flags=0o2000000, fds=[5, 6], ends=["pipe:[9]", "pipe:[9]"])
    fd.add(ev)
    fd.add(t.syscall(sh, "dup3", flags=0o2000000, result=7, fd=6))
    fd.add(t.syscall(sh, "dup2", result=1, fd=6))
    fd.exec(sh)
    assert sorted(fd.fds[sh]) == [1]          # only the dup2's copy survives the exec
    fd.add(t.syscall(sh, "dup2", result=1, fd=42))    # an fd not followed: 1 is forgotten
    assert fd.fds[sh] == {}


def test_why_follows_a_pipe_to_the_process_that_was_to_make_a_file():
    # `gen | sort > /build/x.h`: sort made x.h; gen, which failed, wrote the pipe.
    t = TraceBuilder()
    sh = t.builder()
    pipe2(t, sh)
    gen = t.fork(sh, argv=["gen"], path="/build/gen")
    dup2(t, gen, 4, 1)
    srt = t.fork(sh, argv=["sort"], path="/bin/sort")
    dup2(t, srt, 3, 0)
    t.open(srt, "/build/x.h", flags=WRITE)
    t.exit(gen, 1)
    t.exit(srt, 0)
    hdr = {"plan": {"store_dir": "/nix/store", "build_dir": "/build", "inputs": [],
                    "sandbox_paths": [], "outputs": {"out": OUT}}}
    facts = collect(hdr, {}, t.events)
    found = {(p, kind) for p, kind, _, _ in makers(facts.flow.g, "/build/x.h",
                                                    fd=facts.flow.fd)}
    assert (srt, "create") in found and (gen, "pipe") in found
    assert not any(p == sh for p, _ in found)


def test_a_shell_that_ran_a_pipeline_then_writes_a_file_got_nothing_from_the_pipe():
    # `a | b > x; echo done > log`: the shell made the pipe, b took its read end.
    t = TraceBuilder()
    sh = t.builder()
    pipeline(t, sh, OUT + "/rand")
    t.open(sh, OUT + "/log", flags=WRITE)
    f = flow_of(t, OUT + "/log")
    assert f.fd.upstream(OUT + "/log") == []
    assert f.sources_of(OUT + "/log") == []
