"""Crash safety: the recorder killed, interrupted or out of disk mid-build.

- SIGKILL to the nixrec process (the one this test started, by pid) at random
  moments: the trace reads back with every event but those of the last
  0.1 s (the build's own log lines, which carry their time, say which
  those are), says it is partial, `why` and `events` work on it, and no
  build process or mount is left (PTRACE_O_EXITKILL and PR_SET_PDEATHSIG
  take the build down).
- SIGINT (Ctrl-C): the build is killed and the trace closed cleanly (exit
  130; SIGTERM 143). test_faults.py interrupts at more moments.
- Disk full (a small tmpfs for the trace): one clear line, exit 3, the trace
  readable up to there, no traceback.

The build is fixtures/hostile `busy` (about 14 s, 240k events: longer than
the latest kill, however fast the machine), or `ticks` (4-5 s of numbered,
timed log lines, then a failure) for the bound on what a kill loses; one
kill uses GNU hello (fixtures/hello.nix), a real C build.
"""

import os
import random
import signal
import subprocess
import tempfile
import time

import pytest

from nixfix import FIXTURES, NIXREC, instantiate, missing, nix_env, run_nixrec
from procwatch import build_of, survivors
from nixrec.recorder.tracefile import open_trace

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("NIXREC_CRASH_SEED", random.randrange(1 << 30)))


def busy_drv():
    return instantiate(str(FIXTURES / "hostile" / "default.nix"), "busy")


def ticks_drv():
    return instantiate(str(FIXTURES / "hostile" / "default.nix"), "ticks")


def start(drv, trace, *flags):
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing")
    return subprocess.Popen([str(NIXREC), "record", str(drv), "-o", str(trace), "-q", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=nix_env())


def wait_for_events(trace, deadline=10.0):
    """Until the trace has its first chunk on disk (the build is under way)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        if os.path.exists(trace) and os.path.getsize(trace) > 4096:
            return
        time.sleep(0.05)


def assert_nothing_left(trace, build):
    # PDEATHSIG and EXITKILL act as the recorder dies; give the kernel a moment.
    for _ in range(50):
        if not survivors(build):
            break
        time.sleep(0.1)
    assert survivors(build) == [], "build processes outlived the recorder"
    with open("/proc/self/mountinfo") as f:
        assert not [ln for ln in f if str(trace) + ".d" in ln], "a sandbox mount is left"


def assert_partial_trace_usable(trace):
    with open_trace(trace) as r:
        assert not r.complete
        n = r.interrupted_after
        assert r.problems[-1] == f"recording interrupted after event {n}", r.problems
        seqs = [ev.seq for ev in r.events()]
        assert seqs == list(range(1, n + 1))
    ev = run_nixrec("events", trace)
    assert ev.returncode == 0, ev.stderr
    assert b"interrupted after event" in ev.stderr
    why = run_nixrec("why", trace)
    assert why.returncode == 0, why.stderr
    assert why.stdout.startswith(b"note: partial trace: recording interrupted"), why.stdout
    assert b"\nincomplete: no end of the build was recorded" in why.stdout, why.stdout
    assert b"succeeded" not in why.stdout
    deps = run_nixrec("deps", trace)
    assert deps.returncode == 0 and b"partial trace" in deps.stdout
    return n


@pytest.mark.parametrize("kill_no", range(3))
def test_sigkill_recorder_at_a_random_moment(kill_no, tmp_path):
    rng = random.Random(SEED + kill_no)
    trace = tmp_path / "busy.nixrec"
    p = start(busy_drv(), trace)
    wait_for_events(trace)
    delay = rng.uniform(0.2, 3.0)
    time.sleep(delay)
    build = build_of(p.pid)
    p.send_signal(signal.SIGKILL)          # our own nixrec, by its pid
    p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL, f"seed {SEED}: nixrec ended before the kill"
    assert build, "no build process seen before the kill"
    assert_nothing_left(trace, build)
    n = assert_partial_trace_usable(trace)
    assert n > 0, f"seed {SEED}, delay {delay:.2f}"


# What a kill may lose: the events of the last 0.1 s (issue 17).
LOSS_BOUND = 0.1
KILLS = 10


def _ticks(path):
    """[(n, uptime)] of the `ticks` lines in a text."""
    out = []
    for line in path.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "tick":
            out.append((int(parts[1]), float(parts[2])))
    return out


@pytest.mark.parametrize("kill_no", range(KILLS))
def test_sigkill_loses_at_most_the_last_100_ms(kill_no, tmp_path):
    """kill -9 of the recorder at 0.3 s after its start, and at 9 random
    moments of the `ticks` build: every line the build logged up to 0.1 s
    before the kill is in the trace (the build also wrote each line to
    /build/ticks, which the kill leaves on the host), with every event
    before it; nothing is left running or mounted."""
    rng = random.Random(SEED * 31 + kill_no)
    delay = 0.3 if kill_no == 0 else rng.uniform(0.3, 4.0)
    drv = ticks_drv()
    trace = tmp_path / "ticks.nixrec"
    t0 = time.monotonic()
    # --keep-build-dir: /build/ticks is then left for this test to read
    # (without it the reaper removes a killed recorder's sandbox).
    p = start(drv, trace, "--keep-build-dir")
    time.sleep(max(0.0, t0 + delay - time.monotonic()))
    build = build_of(p.pid)
    # The build's clock: its lines carry /proc/uptime, CLOCK_BOOTTIME.
    killed_at = time.clock_gettime(time.CLOCK_BOOTTIME)
    p.send_signal(signal.SIGKILL)          # our own nixrec, by its pid
    p.wait(timeout=10)
    what = f"seed {SEED}, kill {kill_no} at {delay:.2f} s"
    assert p.returncode == -signal.SIGKILL, f"{what}: nixrec ended before the kill"
    assert_nothing_left(trace, build)
    logged = tmp_path / "ticks.nixrec.d" / "sandbox" / "build" / "ticks"
    done = _ticks(logged.read_text()) if logged.exists() else []
    assert [n for n, _ in done] == list(range(1, len(done) + 1)), what
    due = [(n, t) for n, t in done if t <= killed_at - LOSS_BOUND]
    if not trace.exists():
        # Killed before the trace was made: the build had not started.
        assert not done, what
        return
    with open_trace(trace) as r:
        assert not r.complete, what
        assert r.problems == [f"recording interrupted after event {r.interrupted_after}"], \
            (what, r.problems)
        events = list(r.events())
    assert [ev.seq for ev in events] == list(range(1, len(events) + 1)), what
    seen = _ticks(b"".join(ev.args["data"] for ev in events if ev.kind == "output"
                           and ev.args.get("fd") == 1).decode())
    missing_lines = [(n, t) for n, t in due if (n, t) not in seen]
    if seen:          # for the report (pytest -rP): how much the kill took
        print(f"{what}: {len(seen)} of {len(done)} lines in the trace, the last "
              f"{killed_at - seen[-1][1]:.3f} s before the kill")
    assert not missing_lines, (
        f"{what}: {len(missing_lines)} of the {len(due)} lines logged 0.1 s or more before "
        f"the kill are not in the trace (the first: {missing_lines[0]}, killed at "
        f"{killed_at:.3f}; the trace's last: {seen[-1] if seen else None})")


def test_sigkill_recorder_during_a_c_build(tmp_path):
    drv = instantiate("hello.nix", "hello")
    trace = tmp_path / "hello.nixrec"
    p = start(drv, trace, "--extra-sandbox-paths", "/usr /bin /lib /lib64")
    wait_for_events(trace, deadline=30)
    time.sleep(random.Random(SEED).uniform(3, 8))   # in configure or make
    build = build_of(p.pid)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL
    assert len(build) >= 3, build
    assert_nothing_left(trace, build)
    assert assert_partial_trace_usable(trace) > 1000


def test_ctrl_c_kills_the_build_and_closes_the_trace(tmp_path):
    trace = tmp_path / "busy.nixrec"
    p = start(busy_drv(), trace)
    wait_for_events(trace)
    time.sleep(0.5)
    build = build_of(p.pid)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err          # README: 130 for Ctrl-C
    text = err.decode()
    assert "interrupted (SIGINT) while building" in text and "Traceback" not in text, text
    assert_nothing_left(trace, build)
    with open_trace(trace) as r:
        assert r.complete and r.problems == []
        assert r.summary["interrupted"] is True
        assert r.summary["interrupted_by"] == "SIGINT"
        assert r.summary["interrupted_while"] == "building"
        assert r.summary["exit_signal"] == "SIGKILL"
        assert r.summary["killed"] is None    # not "closed its standard output"
        assert sum(1 for _ in r.events()) == r.last_seq > 0


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    trace = tmp_path / "busy.nixrec"
    p = start(busy_drv(), trace)
    wait_for_events(trace)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert p.returncode == 143               # README: 128 + SIGTERM
    with open_trace(trace) as r:
        assert r.complete and r.summary["interrupted"] is True
        assert r.summary["interrupted_by"] == "SIGTERM"


@pytest.fixture
def small_tmpfs():
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="nixrec-full-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "nixrec-full", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", d], check=True)
        os.rmdir(d)


def test_disk_full_is_one_line_and_a_readable_trace(small_tmpfs):
    trace = os.path.join(small_tmpfs, "busy.nixrec")
    p = start(busy_drv(), trace)
    wait_for_events(trace, deadline=5)
    build = build_of(p.pid)
    out, err = p.communicate(timeout=60)
    lines = err.decode().splitlines()
    assert p.returncode == 3, lines
    # One line, naming what filled the disk (here the trace: busy's /build is small).
    assert len(lines) == 1 and lines[0].startswith(
        f"nixrec: cannot write trace {trace}: No space left on device: the trace filled "
        "the disk ("), lines
    assert_nothing_left(trace, build)
    assert not os.path.exists(trace + ".d/sandbox"), "the sandbox was left behind"
    assert assert_partial_trace_usable(trace) > 0
