"""Fault injection (issue 23): `nixrec record` killed, interrupted, out of
disk and without user namespaces, at the moments that matter, over a
previous trace at the same -o.

Each run starts from a good previous trace at -o (and its TRACE.d, with a
read-only output as Nix leaves them) and checks, whatever happened:
- the exit code is the documented one (README, "Exit codes": 130 for
  SIGINT, 143 for SIGTERM, 137 as the shell shows a kill -9, 3 for a host
  failure); a run that finished before the signal exits 0 and its trace must
  then say so truthfully;
- the trace at -o is readable, and is either the previous one, byte for
  byte (the new recording was not written: then TRACE.d is the previous one
  too; a kill -9 may leave it as TRACE.d.old-PID, which the next record puts
  back: Destination.recover), or a
  new one whose `why` and `report` verdict is "incomplete", never
  "succeeded";
- no process, mount or sandbox directory of the recording is left.

The moments: setting up (before the builder starts: the previous trace must
stay), early in the build (right after the new trace is put in place), mid
build, and checking the outputs (the builder has exited, nixrec canonicalises
and scans a 96 MiB output). The build is fixtures/faults.nix `steady`
(~2-4 s of build, ~1-3 s of checking).
"""

import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

from nixfix import FIXTURES, NIXREC, instantiate, missing, nix_env, run_nixrec
from nixrec.recorder.tracefile import open_trace
from procwatch import _procs, build_of, survivors

pytestmark = pytest.mark.e2e

FAULTS = str(FIXTURES / "faults.nix")
# README, "Exit codes": 128 + the signal, as a shell shows it.
DOCUMENTED = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129,
              signal.SIGKILL: 137}
# ("setup", "new trace"): the moment the new trace appears under its temporary
# name, while the sandbox is being set up (a few tens of ms, caught by polling
# every ms): the interrupt is held until the builder has started, then undone.
MOMENTS = [("setup", 0.35), ("setup", "new trace"), ("early", 0.0), ("early", 0.15),
           ("mid", 0.6), ("mid", 1.2), ("mid", 1.8),
           ("checking", 0.0), ("checking", 0.15), ("checking", 0.4)]


@pytest.fixture(scope="module")
def steady():
    return instantiate(FAULTS, "steady")


@pytest.fixture(scope="module")
def previous(steady, tmp_path_factory):
    """A whole recording of `steady`: the previous trace every run starts from."""
    d = tmp_path_factory.mktemp("previous")
    trace = d / "steady.nixrec"
    p = run_nixrec("record", steady, "-o", trace, "-q")
    assert p.returncode == 0, p.stderr
    why = run_nixrec("why", trace)
    assert why.stdout == b"the build succeeded: nothing to explain\n"   # the truth
    data = trace.read_bytes()
    shutil.rmtree(str(trace) + ".d")       # its 96 MiB output is not needed
    return data


def start(drv, trace, preexec=None):
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing")
    return subprocess.Popen([str(NIXREC), "record", str(drv), "-o", str(trace), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=nix_env(),
                            preexec_fn=preexec)


def lay_previous(trace, data):
    """The previous trace and its TRACE.d, an output read-only as Nix leaves it."""
    trace.write_bytes(data)
    out = os.path.join(str(trace) + ".d", "outputs", "previous")
    os.makedirs(os.path.join(out, "sub"))
    with open(os.path.join(out, "sub", "marker"), "w") as f:
        f.write("previous")
    for p in (os.path.join(out, "sub", "marker"), os.path.join(out, "sub"), out):
        os.chmod(p, 0o444 if p.endswith("marker") else 0o555)
    return os.stat(trace).st_ino


def previous_dir_intact(trace):
    return os.path.exists(os.path.join(str(trace) + ".d", "outputs", "previous", "sub",
                                       "marker"))


def shell_code(rc):
    """The exit code as a shell shows it: 128 + n for a process killed by signal n."""
    return 128 - rc if rc < 0 else rc


def wait_until(cond, deadline, step=0.01):
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def tracees(pid):
    return [q for q, (_, tracer, _) in _procs().items() if tracer == pid]


def reach(moment, p, trace, ino):
    """Wait for the moment; -> the processes of the recording seen by then."""
    phase, delay = moment
    if delay == "new trace":
        assert wait_until(lambda: glob.glob(f"{trace}.tmp-*") or p.poll() is not None, 30,
                          step=0.001), "no new trace appeared"
        return build_of(p.pid)
    if phase != "setup":
        # The new trace is in place once the builder has started.
        assert wait_until(lambda: not os.path.exists(trace) or os.stat(trace).st_ino != ino
                          or p.poll() is not None, 30), "the build never started"
    if phase == "checking":
        assert wait_until(lambda: tracees(p.pid) or p.poll() is not None, 10)
        wait_until(lambda: not tracees(p.pid) or p.poll() is not None, 30)
    seen = build_of(p.pid)
    t0 = time.monotonic()
    while time.monotonic() - t0 < delay and p.poll() is None:
        seen |= build_of(p.pid)
        time.sleep(0.02)
    return seen | build_of(p.pid)


def assert_nothing_left(trace, seen, what):
    assert wait_until(lambda: not survivors(seen), 10), \
        f"{what}: processes outlived the recording: {survivors(seen)}"
    with open("/proc/self/mountinfo") as f:
        assert not [ln for ln in f if str(trace) + ".d" in ln], f"{what}: a mount is left"
    sandbox = str(trace) + ".d/sandbox"
    assert wait_until(lambda: not os.path.exists(sandbox), 10), f"{what}: {sandbox} is left"


def verdict(trace, what):
    """`why --json` and `report` of a trace: -> (status, summary or None)."""
    why = run_nixrec("why", "--json", trace)
    assert why.returncode == 0 and b"Traceback" not in why.stderr, (what, why.stderr)
    rep = json.loads(why.stdout)
    text = run_nixrec("why", trace).stdout.decode()
    assert "succeeded" not in text or rep["status"] == "succeeded", (what, text)
    assert "closed its standard output" not in text, (what, text)
    html = str(trace) + ".html"
    r = run_nixrec("report", trace, "-o", html)
    assert r.returncode == 0, (what, r.stderr)
    page = open(html).read()
    os.unlink(html)
    assert f'<div class="verdict {rep["status"]}">' in page, what
    with open_trace(trace) as t:
        summary = t.summary if t.complete else None
    return rep["status"], summary, text


def one_run(sig, moment, drv, data, tmp):
    trace = tmp / "same.nixrec"
    ino = lay_previous(trace, data)
    what = f"{signal.Signals(sig).name} at {moment[0]} +{moment[1]}"
    p = start(drv, trace)
    seen = reach(moment, p, trace, ino)
    if p.poll() is None:
        p.send_signal(sig)                 # our own nixrec, by its pid
    out, err = p.communicate(timeout=60)
    text = err.decode(errors="replace")
    assert "Traceback" not in text, (what, text)
    code = shell_code(p.returncode)
    assert_nothing_left(trace, seen, what)
    if code == 0:
        # Finished before the signal: the trace must tell the truth.
        status, summary, _ = verdict(trace, what)
        assert status == "succeeded" and summary and not summary["interrupted"], what
        return "finished first"
    assert code == DOCUMENTED[sig], (what, p.returncode, text)
    if sig != signal.SIGKILL:
        assert not [n for n in os.listdir(tmp) if ".tmp-" in n or ".d.old-" in n], \
            (what, os.listdir(tmp))
    if trace.read_bytes() == data:
        # Not written: the previous trace and its directory stay.
        if sig == signal.SIGKILL:
            # What the kill left, the next record undoes first (destination.py).
            from nixrec.recorder.destination import Destination
            Destination(str(trace)).recover()
            assert sorted(os.listdir(tmp)) == ["same.nixrec", "same.nixrec.d"], what
        assert previous_dir_intact(trace), what
        if sig != signal.SIGKILL:
            # One line: "interrupted" (still starting) or "... nothing recorded,
            # the previous TRACE is kept" (setting up).
            # (click echoes a newline on Ctrl-C, as after a ^C on a terminal)
            lines = [ln for ln in text.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("nixrec: interrupted"), (what, text)
        return "previous kept"
    status, summary, why_text = verdict(trace, what)
    assert status == "incomplete", (what, why_text)
    assert why_text.startswith(("incomplete: ", "note: partial trace")), (what, why_text)
    if sig == signal.SIGKILL:
        assert summary is None, what
        return "killed, partial trace"
    assert summary["interrupted"] is True and summary["killed"] is None, what
    with open_trace(trace) as t:       # every event recorded so far is kept
        assert sum(1 for _ in t.events()) == t.last_seq == summary["events"] > 0, what
    assert summary["interrupted_by"] == signal.Signals(sig).name, what
    assert f"interrupted ({signal.Signals(sig).name}) while " \
           f"{summary['interrupted_while']}" in text, (what, text)
    return summary["interrupted_while"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=["kill-9", "SIGINT", "SIGTERM"])
def test_interrupted_at_ten_moments(sig, steady, previous, tmp_path):
    results = []
    for n, moment in enumerate(MOMENTS):
        tmp = tmp_path / str(n)
        tmp.mkdir()
        results.append((moment, one_run(sig, moment, steady, previous, tmp)))
        shutil.rmtree(tmp)
    print(signal.Signals(sig).name, results)      # pytest -rP shows what each hit
    got = [r for _, r in results]
    assert results[1][1] == "previous kept", results       # the sandbox being set up
    if sig == signal.SIGKILL:
        assert got.count("killed, partial trace") >= 5, results
    else:
        assert "building" in got and "checking the outputs" in got, results


def test_sighup_mid_build(steady, previous, tmp_path):
    """A closed terminal (SIGHUP): as SIGTERM, exit 129."""
    assert one_run(signal.SIGHUP, ("mid", 0.6), steady, previous, tmp_path) == "building"


# -- disk full ------------------------------------------------------------------

@pytest.fixture
def small_tmpfs():
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root")
    d = tempfile.mkdtemp(prefix="nixrec-faults-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "nixrec-faults", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", d], check=True)
        os.rmdir(d)


def fill_up(directory):
    """Take every free byte of the filesystem."""
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_disk_full_before_the_build_keeps_the_previous_trace(steady, previous, small_tmpfs):
    from pathlib import Path
    trace = Path(small_tmpfs) / "same.nixrec"
    lay_previous(trace, previous)
    fill_up(small_tmpfs)
    p = start(steady, trace)
    out, err = p.communicate(timeout=60)
    lines = err.decode().splitlines()
    assert p.returncode == 3, lines
    assert lines == [f"nixrec: cannot write trace {trace}: No space left on device; nothing "
                     f"recorded, the previous {trace} is kept"], lines
    assert trace.read_bytes() == previous and previous_dir_intact(trace)
    assert sorted(os.listdir(small_tmpfs)) == ["filler", "same.nixrec", "same.nixrec.d"]


def test_disk_full_filled_by_the_build_says_so(previous, small_tmpfs):
    from pathlib import Path
    drv = instantiate(FAULTS, "fill")
    trace = Path(small_tmpfs) / "same.nixrec"
    lay_previous(trace, previous)
    p = start(drv, trace)
    seen = reach(("early", 0.3), p, trace, None)
    out, err = p.communicate(timeout=60)
    lines = err.decode().splitlines()
    assert p.returncode == 3, lines
    assert len(lines) == 1 and lines[0].startswith(
        f"nixrec: cannot write trace {trace}: No space left on device: the build filled the "
        f"disk (its sandbox "), lines
    assert "free space or record with -o on a larger filesystem" in lines[0]
    assert_nothing_left(trace, seen, "disk full")
    status, summary, text = verdict(trace, "disk full")
    assert status == "incomplete" and summary is None, text


# -- no user namespaces ------------------------------------------------------------

def _deny_unshare():
    """A seccomp filter on nixrec: unshare(2) fails with EPERM, as in a
    container whose policy forbids namespaces (Docker's default), while
    /proc/sys/user/max_user_namespaces says they exist."""
    def ins(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)
    prog = b"".join([
        ins(0x20, 0, 0, 4),                       # A = arch
        ins(0x15, 1, 0, 0xC000003E),              # x86_64? skip the next
        ins(0x06, 0, 0, 0x7FFF0000),              # other arch: allow
        ins(0x20, 0, 0, 0),                       # A = syscall nr
        ins(0x15, 0, 1, 272),                     # unshare?
        ins(0x06, 0, 0, 0x00050000 | 1),          # -> EPERM
        ins(0x06, 0, 0, 0x7FFF0000),              # allow
    ])
    from nixrec.recorder.sandbox import linux
    linux.seccomp_install(prog)


def test_no_user_namespaces_keeps_the_previous_trace(steady, previous, tmp_path):
    trace = tmp_path / "same.nixrec"
    lay_previous(trace, previous)
    p = start(steady, trace, preexec=_deny_unshare)
    out, err = p.communicate(timeout=60)
    lines = err.decode().splitlines()
    assert p.returncode == 3, lines
    assert len(lines) == 1 and "namespaces" in lines[0], lines
    assert lines[0].endswith(f"nothing recorded, the previous {trace} is kept"), lines
    assert trace.read_bytes() == previous and previous_dir_intact(trace)
    assert sorted(os.listdir(tmp_path)) == ["same.nixrec", "same.nixrec.d"]
    assert verdict(trace, "no userns")[0] == "succeeded"     # the previous one's truth


# -- re-recording over what a build left -----------------------------------------

def test_a_deep_output_recorded_twice_to_the_same_trace(tmp_path):
    """An output 1,500 directories deep: canonicalised, scanned, handed over,
    then moved aside and removed by the next recording to the same -o
    (os.walk and shutil.rmtree raised RecursionError on it: issue 23)."""
    from nixrec.recorder import tree
    drv = instantiate(FAULTS, "deep")
    trace = tmp_path / "deep.nixrec"
    try:
        for n in range(2):
            p = run_nixrec("record", drv, "-o", trace, "-q")
            assert p.returncode == 0, (n, p.stderr)
            assert b"Traceback" not in p.stderr
            assert run_nixrec("why", trace).stdout == b"the build succeeded: nothing to explain\n"
            (out,) = os.listdir(str(trace) + ".d/outputs")
            depth = sum(1 for _ in tree.walk(str(trace) + ".d/outputs/" + out))
            assert depth == 1501, depth
            assert sorted(os.listdir(tmp_path)) == ["deep.nixrec", "deep.nixrec.d"]
    finally:
        tree.remove(str(trace) + ".d", ignore_errors=True)   # pytest's cleanup recurses
