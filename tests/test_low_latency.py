"""Idle CPUs kept awake while nixrec traces (recorder/linux.hold_cpu_latency;
docs/performance.md, sixth pass).

Each traced call is a round trip between the build and the tracer, and waking
an idle CPU was most of it; nixrec holds a CPU latency request of 0 us (PM
QoS, /dev/cpu_dma_latency) while its tracer runs, and only then:

- while a recording runs, the kernel's effective CPU latency is 0, and it is
  back to what it was once the recording ended; the summary says it held it;
- NIXREC_LOW_LATENCY=0 leaves the CPUs alone (and the summary says so);
- while a replay is frozen at its stop (a shell may stay there for hours),
  no request is held.

The device reads back the effective value (the smallest request of all
processes), so a check is only made when nothing else on the machine holds
a request of 0 already.
"""

import os
import struct
import subprocess
import time

import pytest

from nixfix import NIXREC, events, instantiate, missing, nix_env, summary
from nixrec.recorder.sandbox import linux

pytestmark = pytest.mark.e2e


def effective_latency() -> int:
    """The CPU latency the kernel keeps now, in us (opening the device for
    reading adds a request of "no constraint", which changes nothing)."""
    with open(linux.CPU_LATENCY, "rb") as f:
        return struct.unpack("=i", f.read(4))[0]


@pytest.fixture
def baseline():
    if not os.path.exists(linux.CPU_LATENCY):
        # A kernel or container without it: nixrec holds nothing (tested by
        # hold_cpu_latency's None); there is nothing to observe here.
        pytest.skip(f"no {linux.CPU_LATENCY} here")
    if os.geteuid() != 0:
        missing(f"{linux.CPU_LATENCY} may be written by root only")
    before = effective_latency()
    if before == 0:
        pytest.skip("another process holds a CPU latency request of 0 us: nothing to see")
    return before


def test_the_request_holds_while_its_fd_is_open(baseline):
    fd = linux.hold_cpu_latency(0)
    assert fd is not None
    try:
        assert effective_latency() == 0
    finally:
        os.close(fd)
    assert effective_latency() == baseline


def test_without_the_device_nothing_is_held(tmp_path, monkeypatch):
    monkeypatch.setattr(linux, "CPU_LATENCY", str(tmp_path / "cpu_dma_latency"))
    assert linux.hold_cpu_latency(0) is None


def _until_line(stream, word, deadline=60):
    """Read `stream` until a line holding `word` (the build or command said it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        line = stream.readline()
        if not line:
            break
        if word in line:
            return True
    return False


def _record_sleeper(tmp_path, env):
    """Record fixtures/record.nix `sleeper` ("running", then 3 s of sleep):
    -> (the latency seen while it slept, the trace)."""
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing")
    trace = tmp_path / "sleeper.nixrec"
    p = subprocess.Popen([str(NIXREC), "record", instantiate("record.nix", "sleeper"),
                          "-o", str(trace)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert _until_line(p.stderr, "running"), "the build never said it was running"
        during = effective_latency()
        p.stderr.read()
    finally:
        assert p.wait(timeout=60) == 0
    return during, trace


def test_a_recording_keeps_cpus_awake_only_while_it_runs(tmp_path, baseline):
    during, trace = _record_sleeper(tmp_path, nix_env())
    assert during == 0
    assert effective_latency() == baseline
    assert summary(trace)["low_latency"] is True


def test_nixrec_low_latency_0_leaves_the_cpus_alone(tmp_path, baseline):
    during, trace = _record_sleeper(tmp_path, dict(nix_env(), NIXREC_LOW_LATENCY="0"))
    assert during == baseline
    assert summary(trace)["low_latency"] is False


def test_a_frozen_replay_holds_no_request(tmp_path, baseline):
    _, trace = _record_sleeper(tmp_path, nix_env())
    # Stop before the last call (the open of $out, after the sleep) and run a
    # command there: while it runs, the build is frozen.
    out_open = [e["seq"] for e in events(trace)
                if e["syscall"] == "openat" and (e["path"] or "").endswith("-sleeper")]
    assert out_open
    p = subprocess.Popen([str(NIXREC), "replay", str(trace), "--until", str(out_open[-1]),
                          "--exec", "echo frozen; sleep 2"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=nix_env(), text=True)
    try:
        assert _until_line(p.stdout, "frozen"), "the replay never reached its stop"
        assert effective_latency() == baseline
        p.stdout.read()
    finally:
        assert p.wait(timeout=60) == 0
