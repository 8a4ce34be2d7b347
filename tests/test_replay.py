"""`nixrec replay`: end to end through the real CLI, on builds recorded first.

The fixtures (fixtures/replay.nix) are busybox builds whose behaviour is known:
files made one by one, a failure in a subdirectory, parallel jobs, and a
build that reads a clock and random bytes. Each test records with
`nixrec record`, replays with `nixrec replay`, and checks what a command run
at the stop sees. A few unit tests of the matching rules come first.
"""

import os
import re
import subprocess
import sys

import pytest

from nixfix import FIXTURES, NIXREC, instantiate, missing, nix_env, run_nixrec

from nixrec.recorder.tracefile import TraceWriter, open_trace
from nixrec.recorder.tracefile.model import Event
from nixrec.replayer.matcher import (Counter, Loc, Matcher, RecordedIndex, hooked, same_argv,
                                     same_path)
from nixrec.replayer.procmap import Follower
from nixrec.replayer.targets import Target

STOP = re.compile(rb"stopped before event (\d+) \(process ([\d.]+), its event (\d+)")


# --- matching rules (no build) ------------------------------------------------------

def test_same_path_allows_pids_and_random_names_only():
    assert same_path("/proc/12/stat", "/proc/15/stat")
    assert same_path("/build/pid.3", "/build/pid.5", 3, 5)
    assert same_path("/build/tmp.16s3VF", "/build/tmp.aB9xQ2")
    assert same_path("/build/ccxB16xH.s", "/build/ccxJ1AxB.s")    # 3 differ, mixed
    assert not same_path("/build/file4", "/build/other")
    assert not same_path("/build/libfoo.so", "/build/libbar.so")
    assert not same_path("/build/ccxbaaxa.s", "/build/ccxjabxb.s")     # 3 differ, lowercase
    assert not same_path("/build/file12.o", "/build/file21.o")         # 2 differ
    assert not same_path("/build/file1", "/build/file2", 3, 3)


def test_argv_words_cut_by_the_tracer_still_match():
    recipe = "rm -f lib/unistd.h-t && sed " + "-e 's|@X@|0|g' " * 400
    assert same_argv(["bash", "-c", recipe[:4500]], ["bash", "-c", recipe[:6000]])
    assert not same_argv(["bash", "-c", recipe[:4500]], ["bash", "-c", "x" + recipe[1:]])
    assert not same_argv(["bash", "-c", "short"], ["bash", "-c", "shorter"])


def test_wait4_and_output_do_not_shift_the_count():
    c = Counter()
    locs = [c.add(Event(kind, "1", syscall=sc)) for kind, sc in (
        ("syscall", "openat"), ("syscall", "wait4"), ("output", "write"),
        ("syscall", "wait4"), ("syscall", "mkdir"))]
    assert locs == [Loc("1", 1), Loc("1", 1, 1), Loc("1", 1, 2), Loc("1", 1, 3), Loc("1", 2)]


def test_volatile_target_falls_back_to_next_counted_call():
    t = Target(Event("syscall", "1", syscall="wait4", seq=9), Loc("1", 4, 3), 9)
    assert t.hit(Loc("1", 4, 3))
    assert not t.hit(Loc("1", 4, 2))
    assert t.hit(Loc("1", 5))           # this run made only two wait4 calls
    assert not t.hit(Loc("1.1", 5))


def test_divergence_is_a_value():
    idx = RecordedIndex()
    idx.add(Event("syscall", "1", syscall="openat", path="/build/a", result=3, seq=1))
    m = Matcher(idx)
    live = Event("syscall", "1", syscall="openat", path="/build/a", result=-1, errno="EACCES")
    d = m.emitted(live, Loc("1", 1), 1)
    assert d.why == "a call that succeeded now fails" and d.rec_seq == 1
    extra = m.at_entry(Event("syscall", "1.1", syscall="mkdir", path="/x"), Loc("1.1", 1), 2)
    assert "does not exist in the recording" in extra.why


def test_a_pipeline_writer_killed_by_sigpipe_is_no_divergence_but_the_builder_is():
    """`echo "$big" | sed 99q`: whether the writer finishes before sed quits
    decides whether SIGPIPE kills it (configure's sed check in GNU hello).
    Its end is excused either way; any other difference in an end is not, nor
    a SIGPIPE end of the builder itself (the build's status). The tracer
    shows the SIGPIPE as a signal event before the death, in both runs."""
    def end(proc, status=None, sig=None):
        ev = Event("exit", proc, result=status, args={"status": status, "signal": sig})
        return ([Event("signal", proc, args={"signal": sig})] if sig else []) + [ev]

    recorded = end("1.2", 0) + end("1.3", None, "SIGPIPE") + end("1.4", 0) + end("1", 0)
    idx = RecordedIndex()
    for n, ev in enumerate(recorded, 1):
        ev.seq = n
        idx.add(ev)

    def live_end(*args):
        f = Follower(idx)
        return [d for n, ev in enumerate(end(*args), 1) for d in [f.emitted(ev, n)[1]] if d]
    assert live_end("1.2", None, "SIGPIPE") == []
    assert live_end("1.3", 0) == []
    assert [d.why for d in live_end("1.4", 1)] == ["a different exit"]
    assert [d.why for d in live_end("1.4", None, "SIGSEGV")] == ["a different exit"]
    assert [d.why for d in live_end("1", None, "SIGPIPE")] == ["a different exit"]


def test_a_call_that_ran_is_counted_at_once_only_when_it_is_exactly_the_recorded_one():
    """Follower.ran, the replay's one-pass check of the C loop's calls: the
    recorded call at its place is counted; anything else (another path, a
    pid in the path, another outcome, a call past the recording) is left to
    entry() and emitted(), with the count untouched."""
    idx = RecordedIndex()
    for n, (path, res) in enumerate((("/build/a", 0), ("/proc/12/stat", 0), ("/build/c", 0)), 1):
        idx.add(Event("syscall", "1", pid=12, syscall="openat", path=path, result=res, seq=n))
    f = Follower(idx)

    def live(path, errno=None):
        return Event("syscall", "1", pid=40, syscall="openat", path=path,
                     result=-1 if errno else 3, errno=errno)
    assert f.ran(live("/build/a")) == Loc("1", 1)
    assert f.ran(live("/proc/40/stat")) is None             # the same only up to the pid
    assert f.counter.k["1"] == 1
    loc, d = f.entry(live("/proc/40/stat"), f.peek(live("/proc/40/stat")), 2)
    assert d is None and f.emitted(live("/proc/40/stat"), 2) == (Loc("1", 2), None)
    assert f.ran(live("/build/c", "EACCES")) is None         # another outcome
    assert f.ran(live("/build/x")) is None                   # another path
    assert f.ran(live("/build/c")) == Loc("1", 3)
    assert f.ran(live("/build/c")) is None                   # past the recording
    assert f.counter.k["1"] == 3


def _ev(proc, kind, syscall=None, path=None, argv=None, child=None, status=None, seq=0):
    args = {}
    if argv is not None:
        args["argv"] = argv
    if child is not None:
        args["child"] = child
    if status is not None:
        args["status"] = status
    return Event(kind, proc, pid=7, syscall=syscall, path=path, args=args, seq=seq,
                 result=status if kind == "exit" else 0)


def _jobs(order, parent_calls, parallel=True):
    """A make-like parent "1" running a job per name in `order` (fork order),
    then making its own calls. Each job execs /bin/cc with its name and opens
    its own file. `parallel`: two at a time, the third started when the first
    ended (make -j2); else one after the other."""
    def fork(i):
        return [_ev("1", "fork", "vfork", child=f"1.{i}")]

    def job(i):
        name = order[i - 1]
        return [_ev(f"1.{i}", "exec", "execve", "/bin/cc", ["cc", name]),
                _ev(f"1.{i}", "syscall", "openat", f"/build/{name}.c"),
                _ev(f"1.{i}", "exit", status=0)]
    evs = [_ev("1", "exec", "execve", "/bin/make", ["make"])]
    if parallel:
        evs += fork(1) + fork(2) + job(1) + fork(3) + job(2) + job(3)
    else:
        evs += fork(1) + job(1) + fork(2) + job(2) + fork(3) + job(3)
    evs += [_ev("1", "syscall", "stat", p) for p in parent_calls]
    evs.append(_ev("1", "exit", status=0))
    for n, ev in enumerate(evs, 1):
        ev.seq = n
    return evs


def _follow(recorded, live, target_seq=None):
    """Replay `live` against `recorded` as the session does: -> (Follower,
    divergences, (live proc, Loc, path) of each call a target at target_seq hit)."""
    idx = RecordedIndex()
    locs = {ev.seq: idx.add(ev) for ev in recorded}
    target = None
    if target_seq is not None:
        rec = recorded[target_seq - 1]
        target = Target(rec, locs[target_seq], target_seq)
        target.seg = idx.segment(target.loc)
    f, diverged, hits = Follower(idx), [], []
    for n, ev in enumerate(live, 1):
        if hooked(ev):
            loc, d = f.entry(ev, f.peek(ev), n)
            diverged += [d] if d else []
            if f.hit(target, ev, loc):
                hits.append((ev.proc, loc, ev.path))
        _, d = f.emitted(ev, n)
        diverged += [d] if d else []
    return f, diverged, hits


def _pipeline(writer_broke, proc="1.1"):
    """A shell running `writer | sed 99q`, then its own call. The writer either
    finishes, or gets SIGPIPE and runs a trap (kill, an `rm` child, exit 1),
    as configure's subshells do."""
    evs = [_ev("1", "exec", "execve", "/bin/sh", ["sh"]),
           _ev("1", "fork", "fork", child="1.1"), _ev("1", "fork", "fork", child="1.2"),
           _ev("1.1", "syscall", "openat", "/dev/null"),
           _ev("1.2", "exec", "execve", "/bin/sed", ["sed", "99q"])]
    if writer_broke:
        evs += [Event("signal", proc, args={"signal": "SIGPIPE"}),
                _ev(proc, "syscall", "kill"), _ev(proc, "fork", "fork", child=proc + ".1"),
                _ev(proc + ".1", "exec", "execve", "/bin/rm", ["rm", "-f", "conftest"]),
                _ev(proc + ".1", "exit", status=0), _ev(proc, "exit", status=1)]
    else:
        evs += [_ev("1.1", "exit", status=0)]
    evs += [_ev("1.2", "exit", status=0), _ev("1", "syscall", "stat", "/build/next"),
            _ev("1", "exit", status=0)]
    for n, ev in enumerate(evs, 1):
        ev.seq = n
    return evs


@pytest.mark.parametrize("recorded_broke", [False, True])
def test_a_pipeline_writer_sigpipe_took_elsewhere_is_excused_with_its_trap(recorded_broke):
    f, diverged, _ = _follow(_pipeline(recorded_broke), _pipeline(not recorded_broke))
    assert diverged == [] and f.unreached() is None


def test_after_a_pipe_race_the_parent_and_the_builder_are_still_compared():
    live = _pipeline(True)
    live[-2].path = "/build/other"                  # the shell's own call differs
    _, diverged, _ = _follow(_pipeline(False), live)
    assert {(d.why, d.loc.proc) for d in diverged} == {("a different path", "1")}
    # The builder itself: SIGPIPE is the build's end, never excused.
    sh = [_ev("1", "exec", "execve", "/bin/sh", ["sh"]), _ev("1", "syscall", "stat", "/x"),
          _ev("1", "exit", status=0)]
    live = sh[:1] + [Event("signal", "1", args={"signal": "SIGPIPE"}),
                     _ev("1", "syscall", "kill"), _ev("1", "exit", status=1)]
    for n, ev in enumerate(sh + live, 1):
        ev.seq = n
    _, diverged, _ = _follow(sh, live)
    assert diverged and diverged[0].loc.proc == "1"


def test_jobs_forked_in_another_order_are_matched_by_what_they_run():
    recorded = _jobs(["x", "y", "w"], ["/build/a", "/build/b"])
    live = _jobs(["y", "x", "w"], ["/build/b", "/build/a"])    # y started first this time
    opens_x = next(ev.seq for ev in recorded if ev.path == "/build/x.c")
    f, diverged, hits = _follow(recorded, live, target_seq=opens_x)
    assert diverged == []
    assert f.rec_of["1.1"] == "1.2" and f.rec_of["1.2"] == "1.1"
    # recorded 1.1's event 2, in live 1.2
    assert hits == [("1.2", Loc("1.1", 2), "/build/x.c")]
    assert f.lenient == {"1"}                 # make stats in another order: allowed
    assert f.unreached() is None


def test_a_stop_on_a_parallel_parents_own_call_finds_that_call():
    recorded = _jobs(["x", "y", "w"], ["/build/a", "/build/b"])
    live = _jobs(["x", "y", "w"], ["/build/b", "/build/a"])
    stat_a = next(ev.seq for ev in recorded if ev.path == "/build/a")
    f, diverged, hits = _follow(recorded, live, target_seq=stat_a)
    assert diverged == [] and f.lenient == {"1"}
    assert [(proc, path) for proc, _, path in hits] == [("1", "/build/a")]


def test_a_job_no_sibling_ran_is_a_divergence():
    recorded = _jobs(["x", "y", "w"], ["/build/a"])
    live = _jobs(["x", "z", "w"], ["/build/a"])
    exec_z = next(ev for ev in live if ev.proc == "1.2" and ev.kind == "exec")
    exec_z.path = "/bin/cc-other"               # 1.2 runs a program nobody ran
    _, diverged, _ = _follow(recorded, live)
    assert [d.why for d in diverged][:1] == ["a different path"]
    assert diverged[0].loc == Loc("1.2", 1)


def test_a_parallel_parent_still_makes_only_recorded_calls():
    recorded = _jobs(["x", "y", "w"], ["/build/a", "/build/b"])
    live = _jobs(["x", "y", "w"], ["/build/b", "/build/elsewhere"])
    _, diverged, _ = _follow(recorded, live)
    assert [d.why for d in diverged] == ["a call the process never made when recorded"]
    assert diverged[0].now == "stat('/build/elsewhere')"


def test_only_a_parent_that_refills_a_freed_slot_is_a_job_runner():
    pipe = [_ev("1", "fork", "fork", child="1.1"), _ev("1", "fork", "fork", child="1.2"),
            _ev("1.1", "exit", status=0), _ev("1.2", "exit", status=0),
            _ev("1", "fork", "fork", child="1.3"), _ev("1.3", "exit", status=0)]
    idx = RecordedIndex()
    for n, ev in enumerate(pipe, 1):
        ev.seq = n
        idx.add(ev)
    assert idx.parallel_from == {}              # `a | b; c`: a shell, strict
    idx = RecordedIndex()
    for ev in _jobs(["x", "y", "w"], []):
        idx.add(ev)
    assert idx.parallel_from == {"1": 3}        # from its second fork (make -j2)


def test_a_job_runner_is_lenient_from_its_first_overlap_not_its_first_refill():
    """make -j2 in hello's lib/: two .dirstamp jobs overlap but both end before
    the next fork (no refill when recorded), then the compiles refill slots.
    Another run may refill already after the first pair: the leniency starts
    at the first fork while another child ran."""
    fork = lambda c: _ev("1", "fork", "fork", child=c)           # noqa: E731
    end = lambda c: _ev(c, "exit", status=0)                      # noqa: E731
    evs = [fork("1.1"), fork("1.2"), end("1.1"), end("1.2"),       # k 1, 2: overlap
           fork("1.3"), fork("1.4"), end("1.3"), fork("1.5"),      # k 5: a refill
           end("1.4"), end("1.5")]
    idx = RecordedIndex()
    for n, ev in enumerate(evs, 1):
        ev.seq = n
        idx.add(ev)
    assert idx.parallel_from == {"1": 2}


def test_a_sequential_parent_stays_strict():
    recorded = _jobs(["x", "y", "w"], ["/build/a", "/build/b"], parallel=False)
    live = _jobs(["x", "y", "w"], ["/build/b", "/build/a"], parallel=False)
    _, diverged, _ = _follow(recorded, live)
    assert [d.why for d in diverged][:1] == ["a different path"]
    live = _jobs(["y", "x", "w"], ["/build/a", "/build/b"], parallel=False)
    _, diverged, _ = _follow(recorded, live)
    assert diverged[0].why == "a different path" and diverged[0].loc == Loc("1.1", 2)


# --- end to end -----------------------------------------------------------------------

def _record(tmp_dir, attr):
    drv = instantiate(FIXTURES / "replay.nix", attr)
    trace = tmp_dir / f"{attr}.nixrec"
    p = run_nixrec("record", "-q", drv, "-o", trace, timeout=300)
    if p.returncode == 3:
        missing(f"this host cannot record: {p.stderr.decode(errors='replace').strip()}")
    assert p.returncode in (0, 1), p.stderr
    return trace


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    cache = {}

    def get(attr):
        if attr not in cache:
            cache[attr] = _record(d, attr)
        return cache[attr]
    return get


def replay(trace, *args, tmpdir=None, timeout=60):
    """`nixrec replay TRACE ARGS` with stdin not a terminal (no default shell)."""
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing (run bash scripts/setup.sh)")
    env = nix_env()
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([str(NIXREC), "replay", "-q", str(trace), *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, env=env,
                          timeout=timeout)


def first_seq(trace, pred) -> int:
    with open_trace(trace) as r:
        return next(ev.seq for ev in r.events() if pred(ev))


def opens(path):
    return lambda ev: ev.syscall == "openat" and ev.path == path


def rewrite(src, dst, header=None, event=None):
    """A copy of a trace with its header and/or events changed (same format)."""
    with open_trace(src) as r:
        h = dict(r.header)
        if header:
            header(h)
        w = TraceWriter(dst, h)
        for ev in r.events():
            if event:
                event(ev)
            w.append(ev)
        w.close(r.summary, list(r.processes.values()))
    return dst


@pytest.mark.e2e
@pytest.mark.parametrize("k", [1, 3, 4, 6])
def test_until_n_shows_exactly_the_files_made_before_n(traces, k):
    trace = traces("steps")
    n = first_seq(trace, opens(f"/build/file{k}"))
    p = replay(trace, "--until", n, "--exec", "ls")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == [f"file{i}" for i in range(1, k)]
    assert STOP.search(p.stderr).group(1) == str(n).encode()


@pytest.mark.e2e
def test_until_fail_runs_in_the_failing_process_cwd(traces):
    p = replay(traces("failSubdir"), "--until-fail", "--exec", "pwd")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"/build/sub/dir\n"
    assert (b"the failing command (process 1.2): cd /build/sub/dir && "
            b"grep -q needle partial.txt") in p.stderr


@pytest.mark.e2e
def test_exec_returns_the_command_status(traces):
    trace = traces("failSubdir")
    again = replay(trace, "--until-fail", "--exec", "grep -q needle partial.txt")
    assert again.returncode == 1, again.stderr          # the failure, run by hand
    assert replay(trace, "--until-fail", "--exec", "exit 7").returncode == 7
    env = replay(trace, "--until-fail", "--exec", "id -u; id -g; echo $NIX_BUILD_TOP")
    assert env.stdout.split() == [b"1000", b"100", b"/build"]


@pytest.mark.e2e
def test_parallel_build_stops_at_the_same_point_every_time(traces):
    trace = traces("parallel")
    n = first_seq(trace, opens("/build/out4.2"))
    seen = set()
    for _ in range(5):
        p = replay(trace, "--until", n, "--exec", "ls")
        assert p.returncode == 0, p.stderr
        m = STOP.search(p.stderr)
        seen.add(m.groups())
        files = p.stdout.decode().split()
        assert "out4.1" in files and "out4.2" not in files
    assert seen == {(str(n).encode(), b"1.4", b"3")}


@pytest.mark.e2e
@pytest.mark.parametrize("attr", ["parallel", "jobOrder"])
def test_parallel_replay_to_the_end_matches(traces, attr):
    """make -j, and jobs forked in another order than recorded: three replays
    to the end, each matching."""
    for _ in range(3):
        p = replay(traces(attr))
        assert p.returncode == 0, p.stderr
        assert b"replay matched the recording" in p.stderr


@pytest.mark.e2e
def test_clock_and_random_bytes_are_no_divergence(traces):
    trace = traces("nondet")
    for _ in range(3):
        p = replay(trace)
        assert p.returncode == 0, p.stderr
        assert b"matched the recording" in p.stderr and b"diverged" not in p.stderr


@pytest.mark.e2e
def test_changed_or_missing_input_is_refused_before_anything_runs(traces, tmp_path):
    trace = traces("steps")

    def zero_hash(h):
        h["closure"] = [dict(c, hash="sha256:" + "0" * 64) for c in h["closure"]]

    def gone(h):
        h["closure"] = h["closure"] + [{"path": "/nix/store/" + "0" * 32 + "-gone",
                                        "hash": "sha256:0"}]
    def bad_calls(h):
        h["calls"] = 5

    def newer_calls(h):
        h["calls"] = h["calls"] + ["frobnicate"]

    changed = rewrite(trace, tmp_path / "changed.nixrec", header=zero_hash)
    lost = rewrite(trace, tmp_path / "missing.nixrec", header=gone)
    garbled = rewrite(trace, tmp_path / "calls.nixrec", header=bad_calls)
    newer = rewrite(trace, tmp_path / "newer.nixrec", header=newer_calls)
    busybox = open_trace(trace).header["closure"][0]["path"]
    work = tmp_path / "tmp"
    work.mkdir()
    for t, line in ((changed, f"nixrec: input changed since the recording: {busybox}"),
                    (lost, "nixrec: input missing: /nix/store/" + "0" * 32 + "-gone"),
                    (garbled, "nixrec: the trace header's list of recorded calls is "
                              "malformed"),
                    (newer, "nixrec: the trace stopped on calls this nixrec does not know "
                            "(frobnicate)")):
        p = replay(t, "--until", 3, "--exec", "echo ran", tmpdir=work)
        assert p.returncode == 2
        assert p.stdout == b""
        lines = p.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith(line)
    assert os.listdir(work) == []           # no sandbox was even laid out


@pytest.mark.e2e
def test_divergence_is_reported_with_both_event_numbers(traces, tmp_path):
    trace = traces("steps")
    n = first_seq(trace, opens("/build/file4"))

    def other_path(ev):
        if ev.seq == n:
            ev.path = "/build/elsewhere"
    p = replay(rewrite(trace, tmp_path / "path.nixrec", event=other_path))
    assert p.returncode == 1
    err = p.stderr.decode()
    assert f"replay diverged: a different path (recorded event {n}, live event {n}" in err
    assert "recorded: openat('/build/elsewhere')" in err
    assert "now:      openat('/build/file4')" in err

    def refused(ev):
        if ev.seq == n:
            ev.result, ev.errno = -1, "EACCES"
    p = replay(rewrite(trace, tmp_path / "errno.nixrec", event=refused), "--exec", "ls")
    err = p.stderr.decode()
    assert "a call that failed now succeeds" in err
    # It stops at the next call, with what the diverging call made already there.
    assert p.stdout.decode().split() == ["file1", "file2", "file3", "file4"]


@pytest.mark.e2e
def test_continue_lets_the_build_finish(traces):
    trace = traces("steps")
    n = first_seq(trace, opens("/build/file2"))
    p = replay(trace, "--until", n, "--exec", "ls", "--continue")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == ["file1"]
    assert b"replay matched the recording" in p.stderr
    assert b"builder exited with 0" in p.stderr


@pytest.mark.e2e
def test_until_exec_and_until_path(traces):
    trace = traces("parallel")
    p = replay(trace, "--until-exec", "ca?", "--exec", "ls out* | wc -l")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [b"18"]          # cat runs after every job wrote its files
    assert b"execve('/proc/self/exe', argv[0]='cat')" in p.stderr
    p = replay(trace, "--until-path", "out3.2", "--exec", "ls out3.*")
    assert p.stdout.split() == [b"out3.1"]


def _subreaper_run(argv, env):
    """Run argv with this helper as the subreaper: whatever it leaves behind
    becomes our child, so it can be counted after it exits."""
    code = (
        "import ctypes, os, subprocess, sys, time\n"
        "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)\n"           # PR_SET_CHILD_SUBREAPER
        "p = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True)\n"
        "time.sleep(0.5)\n"
        "me, left = str(os.getpid()), []\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        st = open(f'/proc/{pid}/status').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    if f'PPid:\\t{me}\\n' in st:\n"
        "        left.append(st.splitlines()[0])\n"
        "print(p.returncode, len(left), left)\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                          env=env, timeout=120)


@pytest.mark.e2e
@pytest.mark.parametrize("args", [
    ("--until-fail", "--exec", "sleep 60 & echo started"),
    ("--until-fail", "--continue"),
    (),
])
def test_no_process_or_mount_is_left_behind(traces, tmp_path, args):
    work = tmp_path / "tmp"
    work.mkdir()
    env = dict(nix_env(), TMPDIR=str(work))
    p = _subreaper_run([str(NIXREC), "replay", "-q", str(traces("failSubdir")), *args], env)
    rc, left = p.stdout.decode().split()[:2]
    assert rc == "0" and left == "0", p.stdout + p.stderr
    with open("/proc/self/mountinfo") as f:
        assert str(work) not in f.read()
    assert os.listdir(work) == []


@pytest.mark.e2e
def test_no_shell_in_the_inputs_is_one_line_and_nothing_runs(traces, tmp_path):
    def no_inputs(h):
        h["plan"] = dict(h["plan"], inputs=[])
    t = rewrite(traces("steps"), tmp_path / "noshell.nixrec", header=no_inputs)
    p = replay(t, "--until", 3, "--exec", "ls")
    assert p.returncode == 2
    assert p.stderr.decode().count("\n") == 1 and b"no shell" in p.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (("--until", "0"), b"--until 0: the trace has events 1 to"),
    (("--until-fail",), b"the recorded build did not fail"),
    (("--until-exec", "no-such-program"), b"no exec of a program matching"),
    (("--until", "3", "--until-fail"), b"cannot be combined"),
])
def test_bad_stop_requests_exit_2(traces, args, message):
    p = replay(traces("steps"), *args)
    assert p.returncode == 2
    assert message in p.stderr and p.stderr.count(b"\n") == 1


# --- jobs forked in another order on every run --------------------------------------

def _stop_of(p):
    m = STOP.search(p.stderr)
    assert m, p.stderr
    return tuple(g.decode() for g in m.groups())


@pytest.mark.e2e
def test_a_late_job_is_found_whatever_its_fork_order(traces):
    """jobOrder starts each follow-up job when its first stage finishes, so
    its tree path changes from run to run; the stop must not."""
    trace = traces("jobOrder")
    with open_trace(trace) as r:
        writes = [ev for ev in r.events() if ev.syscall == "openat" and ev.flags
                  and ev.flags & os.O_CREAT and re.fullmatch(r"/build/b\d\.out", ev.path or "")]
    late = writes[-1]                   # the follow-up job started last
    i = late.path[len("/build/b")]
    seen = set()
    for _ in range(5):
        p = replay(trace, "--until", late.seq, "--exec", "pwd; cat result; ls ..")
        assert p.returncode == 0, p.stderr
        seen.add(_stop_of(p))
        out = p.stdout.decode().split()
        assert out[:2] == [f"/build/sub{i}", f"a{i}"]
        assert f"b{i}.started" in out and f"b{i}.out" not in out
    assert seen == {(str(late.seq), late.proc, "4")}


# --- GNU hello: configure, then make -j -----------------------------------------------

def _record_hello(directory):
    if not os.path.exists("/usr/bin/cc"):
        missing("no host C toolchain (/usr/bin/cc) for fixtures/hello.nix")
    drv = instantiate("hello.nix", "hello")
    trace = directory / "hello.nixrec"
    p = run_nixrec("record", "-q", drv, "-o", trace, "--extra-sandbox-paths",
                   "/usr /bin /lib /lib64", timeout=900)
    if p.returncode == 3:
        missing(f"this host cannot record: {p.stderr.decode(errors='replace').strip()}")
    assert p.returncode == 0, p.stderr
    return trace


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    return _record_hello(tmp_path_factory.mktemp("hello"))


def _hello_replay(hello, tmp_path, *args):
    """Replay hello; on a divergence, once more on a fresh recording.

    make -j's job order is the one thing replay follows heuristically
    (docs/replay.md, Limits): one full-suite run in about five on the loaded
    2-core test machine saw a divergence that did not repeat. A regression
    diverges both times; the first failure is kept in the message.
    """
    p = replay(hello, *args, timeout=900)
    # A divergence stops the build there and still runs --exec: exit 0 too.
    if b"diverged" not in p.stderr:
        return hello, p
    first = p.stderr[-1500:]
    again = _record_hello(tmp_path)
    p = replay(again, *args, timeout=900)
    assert p.returncode == 0 and b"diverged" not in p.stderr, (first, p.stderr[-1500:])
    return again, p


def _cwd_at(trace, seq):
    """The cwd of the process of event `seq`, from the recording: inherited at
    fork, changed by chdir (as the tracer follows it)."""
    cwd = {"1": "/build"}
    with open_trace(trace) as r:
        for ev in r.events():
            if ev.seq == seq:
                return ev.proc, cwd[ev.proc]
            if ev.kind == "fork":
                cwd[ev.args["child"]] = cwd[ev.proc]
            elif ev.syscall == "chdir" and not ev.errno:
                cwd[ev.proc] = ev.path
    raise AssertionError(f"no event {seq}")


@pytest.mark.e2e
def test_hello_replays_to_the_end(hello, tmp_path):
    _, p = _hello_replay(hello, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert b"replay matched the recording" in p.stderr


@pytest.mark.e2e
def test_hello_stops_inside_the_parallel_make(hello, tmp_path):
    """The assembler writing a lib/*.o in the middle of `make -j`: a job whose
    tree path depends on the order make started its jobs in."""
    with open_trace(hello) as r:
        objs = [ev for ev in r.events() if ev.syscall == "openat" and ev.flags
                and ev.flags & os.O_CREAT and ev.path
                and re.fullmatch(r"/build/hello-2\.10/lib/[\w-]+\.o", ev.path)]
    assert len(objs) > 10
    target = objs[len(objs) // 2]
    proc, cwd = _cwd_at(hello, target.seq)
    used, p = _hello_replay(hello, tmp_path, "--until", target.seq, "--exec",
                            f"pwd; test -e {target.path} && echo made || echo absent")
    if used != hello:
        # A fresh recording has its own event numbers: find the same file there.
        with open_trace(used) as r:
            target = next(ev for ev in r.events() if ev.syscall == "openat"
                          and ev.path == target.path and ev.flags and ev.flags & os.O_CREAT)
        proc, cwd = _cwd_at(used, target.seq)
        p = replay(used, "--until", target.seq, "--exec",
                   f"pwd; test -e {target.path} && echo made || echo absent", timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    assert _stop_of(p)[:2] == (str(target.seq), proc)
    assert p.stdout.decode().split() == [cwd, "absent"]


@pytest.mark.e2e
def test_readlink_is_recorded_when_asked_and_replay_stops_on_the_same_calls(tmp_path):
    """readlink is off by default (issue 6); --readlink records it, the header
    says which calls were recorded, and a replay stops on those same calls."""
    drv = instantiate(FIXTURES / "failing" / "default.nix", "hostPath")
    plain, asked = tmp_path / "plain.nixrec", tmp_path / "asked.nixrec"
    for trace, extra in ((plain, ()), (asked, ("--readlink",))):
        p = run_nixrec("record", "-q", drv, "-o", trace, *extra, timeout=300)
        assert p.returncode == 1, p.stderr          # the fixture fails on purpose
    with open_trace(plain) as r:
        assert "readlink" not in r.header["calls"] and "openat" in r.header["calls"]
        assert not [ev for ev in r.events() if (ev.syscall or "").startswith("readlink")]
    with open_trace(asked) as r:
        assert "readlink" in r.header["calls"]
    n = first_seq(asked, lambda ev: ev.syscall == "readlink")
    p = replay(asked, "--until", n, "--exec", "true")
    assert p.returncode == 0, p.stderr
    assert f"stopped before event {n} " in p.stderr.decode() and "readlink" in p.stderr.decode()
    # Both replay to their end without a divergence: the same calls stop.
    for trace in (plain, asked):
        p = replay(trace)
        assert p.returncode == 0, p.stderr
        assert b"diverged" not in p.stderr
