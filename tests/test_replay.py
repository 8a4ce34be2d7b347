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
from nixrec.replayer.matcher import Counter, Loc, Matcher, RecordedIndex, same_path
from nixrec.replayer.targets import Target

STOP = re.compile(rb"stopped before event (\d+) \(process ([\d.]+), its event (\d+)")


# --- matching rules (no build) ------------------------------------------------------

def test_same_path_allows_pids_and_random_names_only():
    assert same_path("/proc/12/stat", "/proc/15/stat")
    assert same_path("/build/pid.3", "/build/pid.5", 3, 5)
    assert same_path("/build/tmp.16s3VF", "/build/tmp.aB9xQ2")
    assert not same_path("/build/file4", "/build/other")
    assert not same_path("/build/libfoo.so", "/build/libbar.so")
    assert not same_path("/build/file1", "/build/file2", 3, 3)


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
def test_parallel_replay_to_the_end_matches(traces):
    for _ in range(3):
        p = replay(traces("parallel"))
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
    changed = rewrite(trace, tmp_path / "changed.nixrec", header=zero_hash)
    lost = rewrite(trace, tmp_path / "missing.nixrec", header=gone)
    busybox = open_trace(trace).header["closure"][0]["path"]
    work = tmp_path / "tmp"
    work.mkdir()
    for t, line in ((changed, f"nixrec: input changed since the recording: {busybox}"),
                    (lost, "nixrec: input missing: /nix/store/" + "0" * 32 + "-gone")):
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
