"""The live status line of `nixrec record` and `replay`, seen in a real terminal (tmux).

rich draws it under the streaming log (recorder/cli/status.py): it shows
elapsed time, processes, events, refused calls and the current command; it
stays at the bottom while the log scrolls, leaves nothing in the scrollback
when the log pushes lines up or when the build ends, and the log lines are
the build's own, whole. With stderr not a terminal nothing of it is written.

The build is fixtures/hostile `ticks`: 4-5 s of numbered lines, then exit 1.
tmux runs on a socket of this test's own, killed at the end.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

from nixfix import FIXTURES, NIXREC, instantiate, missing, nix_env
from nixrec.recorder.tracefile import open_trace

pytestmark = pytest.mark.e2e

STATUS = re.compile(r"\[nixrec \d+s \| \d+ processes \(\d+ running\) \| \d+ events "
                    r"\| \d+ refused")
TICK = re.compile(r"tick \d+ \d+\.\d+")


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        missing("tmux is not installed (apt-get install tmux; scripts/setup.sh does)")
    # A server of each test's own: the last one's may still be going away.
    sock = f"nixrec-status-{os.getpid()}-{tmp_path.name}"

    def run(*args):
        return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True,
                              check=True).stdout
    yield run
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def ticks_drv():
    return instantiate(str(FIXTURES / "hostile" / "default.nix"), "ticks")


def record_in_pane(tmux, width, trace):
    """Start `nixrec record` of ticks in a detached pane `width` columns wide."""
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing")
    cmd = (f"env NIX_REMOTE= {NIXREC} record {ticks_drv()} -o {trace}; "
           "echo EXIT=$?; sleep 60")
    tmux("new-session", "-d", "-s", "rec", "-x", str(width), "-y", "20", cmd)
    tmux("set-option", "-t", "rec", "history-limit", "10000")


def pane(tmux, history=False):
    args = ["capture-pane", "-p", "-t", "rec"] + (["-S", "-", "-E", "-"] if history else [])
    return tmux(*args).splitlines()


def wait_for(tmux, test, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = pane(tmux)
        if test(lines):
            return lines
        time.sleep(0.1)
    pytest.fail("timed out; the pane:\n" + "\n".join(pane(tmux)))


def last_line(lines):
    shown = [ln for ln in lines if ln.strip()]
    return shown[-1] if shown else ""


def logged_ticks(trace):
    with open_trace(trace) as r:
        data = b"".join(ev.args["data"] for ev in r.events()
                        if ev.kind == "output" and ev.args.get("fd") == 1)
    return [ln for ln in data.decode().splitlines() if ln.startswith("tick ")]


def check_after(tmux, trace):
    """At the end: no status left anywhere, the log whole, in order."""
    wait_for(tmux, lambda lines: any(ln.startswith("EXIT=") for ln in lines), 60)
    lines = pane(tmux, history=True)
    assert not [ln for ln in lines if "[nixrec" in ln], "a status line was left behind"
    assert "EXIT=1" in lines
    assert "nixrec: build failed with exit code 1" in lines
    shown = [ln for ln in lines if ln.startswith("tick ")]
    assert shown == logged_ticks(trace)            # every log line, whole, in order
    assert all(TICK.fullmatch(ln) for ln in shown)
    return shown


def test_status_shows_while_the_log_scrolls_and_goes_away(tmux, tmp_path):
    trace = tmp_path / "ticks.nixrec"
    record_in_pane(tmux, 100, trace)
    # While the build runs: the status is the pane's bottom line, and what
    # is above it is log. Looked at twice: early, and once the log has
    # scrolled well past the pane's 20 rows (its first line is tick 40 on).
    for first in (1, 40):
        lines = wait_for(tmux, lambda lines: STATUS.match(last_line(lines)) and any(
            TICK.fullmatch(ln) and int(ln.split()[1]) >= first for ln in lines[:3]), 20)
        above = [ln for ln in lines if ln.strip()][:-1]
        assert above and all(TICK.fullmatch(ln) for ln in above[-3:]), lines
        assert not [ln for ln in above if "[nixrec" in ln], lines
    status = last_line(lines)
    assert re.search(r"\| (sh|usleep|ticks)\]$", status) or status.endswith("building]"), status
    assert len(check_after(tmux, trace)) > 100


def test_status_is_cut_to_a_narrow_terminal(tmux, tmp_path):
    trace = tmp_path / "ticks.nixrec"
    record_in_pane(tmux, 40, trace)
    lines = wait_for(tmux, lambda lines: last_line(lines).startswith("[nixrec"), 20)
    status = last_line(lines)
    assert len(status) < 40, status                                 # cut, not wrapped
    above = [ln for ln in lines if ln.strip()][:-1]
    assert all(TICK.fullmatch(ln) for ln in above), lines          # no wrapped status piece
    check_after(tmux, trace)


def test_no_status_when_stderr_is_not_a_terminal(tmp_path):
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing")
    trace = tmp_path / "ticks.nixrec"
    p = subprocess.run([str(NIXREC), "record", ticks_drv(), "-o", str(trace)],
                       capture_output=True, env=nix_env(), timeout=120)
    assert p.returncode == 1, p.stderr
    assert b"\x1b" not in p.stderr and b"[nixrec" not in p.stderr
    shown = [ln for ln in p.stderr.decode().splitlines() if ln.startswith("tick ")]
    assert shown == logged_ticks(trace) and len(shown) > 100


def test_replay_shows_its_status_and_target_then_reports(tmux, tmp_path):
    trace = tmp_path / "ticks.nixrec"
    rec = subprocess.run([str(NIXREC), "record", ticks_drv(), "-o", str(trace), "-q"],
                         capture_output=True, env=nix_env(), timeout=120)
    assert rec.returncode == 1, rec.stderr
    with open_trace(trace) as r:
        target = r.last_seq // 2                 # a call some seconds in
    cmd = (f"env NIX_REMOTE= {NIXREC} replay {trace} --until {target} --exec true; "
           "echo EXIT=$?; sleep 60")
    tmux("new-session", "-d", "-s", "rec", "-x", "120", "-y", "20", cmd)
    lines = wait_for(tmux, lambda lines: STATUS.match(last_line(lines)), 30)
    assert last_line(lines).endswith(f"| to event {target}]"), lines
    lines = wait_for(tmux, lambda lines: any(ln.startswith("EXIT=") for ln in lines), 60)
    history = pane(tmux, history=True)
    assert not [ln for ln in history if "[nixrec" in ln], "a status line was left behind"
    assert any(ln.startswith(f"nixrec: stopped before event {target} ") for ln in history)
    assert "EXIT=0" in history
