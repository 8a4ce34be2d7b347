"""Containment: record each fixtures/hostile derivation and check the host after.

Each test records one escape attempt with `nixrec record`, then checks that
(1) the host is unchanged (the real store, /etc, /tmp, /root, a host process,
a host service on 127.0.0.1, no process or mount left behind), (2) the attempt
is in the trace with its errno (`nixrec events --json --failed`), (3) `why` and `deps` answer, and (4) nixrec exits 1 with one clear
line. docs/security.md has the results table and the differences from Nix.

Safety: nothing here signals a process it did not start; the host process is
a `sleep` started by this module, and every loop in the fixtures is bounded.
"""

import functools
import hashlib
import http.server
import os
import re
import subprocess
import threading
import time

import pytest

from nixfix import (FIXTURES, events, nixrec_json, _nix, missing, require_busybox, require_nix,
                    run_nixrec, summary as _summary)

pytestmark = pytest.mark.e2e

HOSTILE = FIXTURES / "hostile"
# Fixed content: the victim has the same store path every run, so the .drv
# files are stable and a victim damaged by an earlier broken run is noticed.
VICTIM_FILE = b"precious: a store path the hostile builds must not change\n"
HOST_FILES = ("/etc/nixrec-hostile-evil", "/tmp/nixrec-hostile-evil",
              "/root/nixrec-hostile-evil", "/nix/store/nixrec-hostile-evil",
              "/nix/store/moved")


# -- the host side: what the attempts aim at ----------------------------------

class _Recorder(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"host service\n")

    def log_message(self, *args):
        pass


def _escape_tool():
    tool = HOSTILE / ".bin" / "escape"
    if not tool.exists():
        p = subprocess.run(["bash", str(HOSTILE / "prepare.sh")], capture_output=True,
                           text=True)
        if p.returncode != 0:
            missing(f"fixtures/hostile/prepare.sh failed: {p.stderr.strip()}")


def _tree(path):
    """Every file under path with its mode and content hash (lstat, no follow)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            p = os.path.join(root, name)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p) and not os.path.islink(p):
                digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_mtime_ns, digest)
    st = os.lstat(path)
    out["."] = (st.st_mode, st.st_mtime_ns, None)
    return out


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The victim store paths, a host process and a host service, and a snapshot."""
    require_nix()
    require_busybox()
    _escape_tool()
    src = tmp_path_factory.mktemp("victim") / "nixrec-hostile-victim"
    src.mkdir()
    (src / "file").write_bytes(VICTIM_FILE)
    victim = _nix(["nix-store", "--add", str(src)]).decode().strip()
    other_src = tmp_path_factory.mktemp("other") / "nixrec-hostile-other"
    other_src.mkdir()
    (other_src / "file").write_bytes(b"not an input\n")
    other = _nix(["nix-store", "--add", str(other_src)]).decode().strip()
    for p in (victim, other):
        v = subprocess.run(["nix-store", "--verify-path", p], capture_output=True,
                           env=dict(os.environ, NIX_REMOTE=""))
        assert v.returncode == 0, f"{p} is damaged already: {v.stderr.decode()}"
    sleeper = subprocess.Popen(["sleep", "1000"])
    _Recorder.requests = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state = {"victim": victim, "other": other, "pid": sleeper.pid,
             "port": server.server_address[1], "sleeper": sleeper,
             "victim_tree": _tree(victim), "other_tree": _tree(other),
             "passwd": _sha("/etc/passwd"), "shadow": _sha("/etc/shadow")}
    try:
        yield state
    finally:
        server.shutdown()
        sleeper.kill()          # ours, by pid
        sleeper.wait()


def check_host_unchanged(host):
    assert _tree(host["victim"]) == host["victim_tree"], "the input store path changed"
    assert _tree(host["other"]) == host["other_tree"], "another store path changed"
    for p in HOST_FILES:
        assert not os.path.lexists(p), f"{p} appeared on the host"
    assert _sha("/etc/passwd") == host["passwd"]
    assert _sha("/etc/shadow") == host["shadow"]
    assert host["sleeper"].poll() is None, "the host process was signalled"
    assert _Recorder.requests == [], f"the host service was reached: {_Recorder.requests}"


# -- recording and reading back ------------------------------------------------

@functools.lru_cache(maxsize=None)
def _drv(attr, victim, other, pid, port):
    out = _nix(["nix-instantiate", str(HOSTILE / "default.nix"), "-A", attr,
                "--argstr", "victim", victim, "--argstr", "other", other,
                "--argstr", "hostPid", str(pid), "--argstr", "port", str(port)])
    return out.decode().strip().splitlines()[-1]


def record(host, attr, tmp_path, *flags, timeout=90):
    drv = _drv(attr, host["victim"], host["other"], host["pid"], host["port"])
    trace = tmp_path / f"{attr}.nixrec"
    p = run_nixrec("record", drv, "-o", trace, "-q", *flags, timeout=timeout)
    return p, trace


def lines(p):
    return p.stderr.decode(errors="replace").splitlines()


def log_text(trace):
    return "".join(e["args"]["data"] for e in events(trace) if e["kind"] == "output")


def has(evs, errno, path=None, syscall=None, address=None):
    for e in evs:
        if e["errno"] != errno:
            continue
        if path is not None and e["path"] != path:
            continue
        if syscall is not None and not (e["syscall"] or "").startswith(syscall):
            continue
        if address is not None and e["address"] != address:
            continue
        return True
    return False


def why(trace):
    return nixrec_json("why", trace)


def deps(trace):
    return nixrec_json("deps", trace)


def assert_failed_build(p, trace, why_errno=None):
    """Exit 1, a one-line result, a complete trace, and a `why` that answers."""
    assert p.returncode == 1, lines(p)
    assert any(re.match(r"nixrec: build (failed|killed|timed out)", ln) for ln in lines(p)), \
        lines(p)
    assert not any("Traceback" in ln for ln in lines(p))
    assert p.stdout.decode().strip() == str(trace)
    assert not mounts_under(str(trace) + ".d"), "a sandbox mount is left on the host"
    assert not os.path.exists(str(trace) + ".d/sandbox"), "the sandbox was left behind"
    rep = why(trace)
    assert rep["status"] == "failed" and rep["partial"] == [], rep
    if why_errno:
        assert rep["root_causes"][0].get("errno") == why_errno, rep["root_causes"][:2]
    return rep


def leftover_processes(*needles):
    """Host processes whose command line contains one of `needles` (bytes)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if any(n in cmd for n in needles):
            found.append((int(pid), cmd))
    return found


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f if f" {path}" in ln]


# -- the attempts ----------------------------------------------------------------

def test_real_store_is_read_only(host, tmp_path):
    p, trace = record(host, "store", tmp_path)
    rep = assert_failed_build(p, trace)
    check_host_unchanged(host)
    v, o = host["victim"], host["other"]
    evs = events(trace, "--failed")
    # Inputs are bound read-write as real Nix binds them (issue 24), and are
    # root's: writing fails as under Nix, EACCES, not EROFS.
    assert has(evs, "EACCES", f"{v}/evil", "open")
    assert has(evs, "EPERM", v, "chmod")            # not the owner
    assert has(evs, "EACCES", f"{v}/file", "unlink")
    # A mount point cannot move (EBUSY); the sticky store refuses first (EPERM)
    # now that the builder is not the owner of the store directory.
    assert any(has(evs, e, v, "rename") for e in ("EBUSY", "EPERM", "EACCES"))
    assert has(evs, "ENOENT", o)                    # not an input: not there at all
    assert has(evs, "EACCES", f"{v}/evil2", "open")
    assert rep["root_causes"][0]["errno"] == "EACCES"
    # The store directory of the sandbox is its own: the write succeeded there.
    assert "made /nix/store/nixrec-hostile-evil" in log_text(trace)


def test_host_files_are_not_in_the_sandbox(host, tmp_path):
    p, trace = record(host, "hostFiles", tmp_path)
    assert_failed_build(p, trace, why_errno="ENOENT")
    check_host_unchanged(host)
    evs = events(trace, "--failed")
    for path in ("/etc/shadow", "/root/.ssh", "/proc/1/root/etc/shadow", "/home"):
        assert has(evs, "ENOENT", path), path
    text = log_text(trace)
    # /tmp is the sandbox's own (written, nothing reaches the host); / and /etc
    # belong to root as under Nix's build users, so the builder cannot write there.
    assert "wrote /tmp/nixrec-hostile-evil" in text
    assert "can't create /etc/nixrec-hostile-evil: Permission denied" in text
    rep = deps(trace)
    assert any(g.get("path") == "/etc/shadow" for g in rep["undeclared"]), rep


def test_mounts_and_namespaces_are_refused(host, tmp_path):
    p, trace = record(host, "mounts", tmp_path)
    assert_failed_build(p, trace)
    check_host_unchanged(host)
    v = host["victim"]
    evs = events(trace, "--failed")
    assert has(evs, "EPERM", "/tmp", "mount")
    assert has(evs, "EPERM", v, "mount")            # bind, remount, and from a nested ns
    assert has(evs, "EPERM", "/tmp", "chroot")
    assert has(evs, "EPERM", "/build/new", "pivot_root")
    assert has(evs, "EPERM", None, "unshare")
    text = log_text(trace)
    # A nested user namespace is allowed (as in Nix), and its "root" may
    # remount its copy of the input's bind (read-write already, as Nix binds
    # it), but gains no right over the input's files, which are the host
    # root's, whom no namespace of the build maps.
    assert "escape: unshare user+mount: ok" in text
    assert "escape: remount read-write: ok" in text
    assert has(evs, "EACCES", f"{v}/evil", "open")


def test_host_processes_are_invisible(host, tmp_path):
    p, trace = record(host, "processes", tmp_path)
    assert_failed_build(p, trace)
    check_host_unchanged(host)
    pid = host["pid"]
    text = log_text(trace)
    assert f"can't kill pid {pid}: No such process" in text
    assert "escape: kill: No such process" in text
    assert "escape: ptrace attach: No such process" in text
    assert "escape: ptrace attach: Operation not permitted" in text   # its own PID 1
    failed = events(trace, "--failed")
    assert has(failed, "ENOENT", f"/proc/{pid}")
    # The attempts themselves, with the host pid they aimed at and their errno.
    kills = [e for e in failed if e["syscall"] == "kill" and e["args"].get("target_pid") == pid]
    assert kills and all(e["errno"] == "ESRCH" for e in kills), kills
    traces = [e for e in failed if e["syscall"] == "ptrace"]
    assert {e["errno"] for e in traces} >= {"ESRCH", "EPERM"}, traces


def test_devices_setuid_and_raw_sockets_are_refused(host, tmp_path):
    p, trace = record(host, "devices", tmp_path)
    assert_failed_build(p, trace, why_errno="EPERM")
    check_host_unchanged(host)
    evs = events(trace, "--failed")
    for path in ("/build/sda", "/build/mem", "/build/kmsg"):
        assert has(evs, "EPERM", path, "mknod"), path
    chmods = [e for e in evs if e["syscall"] == "chmod" and e["errno"] == "EPERM"]
    assert sorted(e["flags"] & 0o7777 for e in chmods) == [0o2755, 0o4755]
    socks = [e for e in evs if e["syscall"] == "socket" and e["errno"] == "EPERM"]
    assert {(e["args"]["family"], e["args"]["type"]) for e in socks} == {
        ("AF_INET", "SOCK_RAW"), ("AF_PACKET", "SOCK_RAW")}, socks


def test_network_and_host_loopback_are_unreachable(host, tmp_path):
    p, trace = record(host, "network", tmp_path)
    rep = assert_failed_build(p, trace, why_errno="ECONNREFUSED")
    check_host_unchanged(host)
    port = host["port"]
    evs = events(trace, "--failed")
    assert has(evs, "ENETUNREACH", syscall="connect", address="1.1.1.1:80")
    assert has(evs, "ENETUNREACH", syscall="connect", address="8.8.8.8:53")
    assert has(evs, "ECONNREFUSED", syscall="connect", address=f"127.0.0.1:{port}")
    assert rep["root_causes"][0]["address"] == f"127.0.0.1:{port}"


def test_daemon_dies_with_the_builder(host, tmp_path):
    p, trace = record(host, "daemon", tmp_path)
    assert p.returncode == 0, lines(p)
    assert "nixrec: build succeeded" in lines(p)
    check_host_unchanged(host)
    assert leftover_processes(b"sleep\x0031337", b"sleep\x0031338") == []
    with_exit = {e["proc"]: e["args"]["signal"] for e in events(trace) if e["kind"] == "exit"}
    # The builder exits 0; both daemons were killed when the PID namespace ended.
    assert with_exit["1"] is None
    assert sorted(s for proc, s in with_exit.items() if proc != "1"
                  and s is not None) == ["SIGKILL", "SIGKILL"], with_exit
    assert why(trace)["status"] == "succeeded"


def test_log_flood_is_cut_at_max_log_size(host, tmp_path):
    t0 = time.monotonic()
    p, trace = record(host, "flood", tmp_path, "--max-log-size", "1000000")
    assert time.monotonic() - t0 < 30
    assert_failed_build(p, trace)
    assert "nixrec: build killed after writing more than 1000000 bytes of log output" \
        in lines(p)
    summary = _summary(trace)
    assert summary["killed"] == "killed after writing more than 1000000 bytes of log output"
    assert summary["exit_signal"] == "SIGKILL"


def test_timeout_kills_a_build_that_never_ends(host, tmp_path):
    t0 = time.monotonic()
    p, trace = record(host, "forever", tmp_path, "--timeout", "2")
    took = time.monotonic() - t0
    assert 2 <= took < 20, took
    assert_failed_build(p, trace)
    assert "nixrec: build timed out after 2 seconds" in lines(p)
    assert _summary(trace)["killed"] == "timed out after 2 seconds"
    assert leftover_processes(b"sleep\x00100000") == []


def test_max_silent_time(host, tmp_path):
    p, trace = record(host, "forever", tmp_path, "--max-silent-time", "1")
    assert_failed_build(p, trace)
    assert "nixrec: build timed out after 1 seconds of silence" in lines(p)


def test_fork_bomb_is_stopped_at_max_processes(host, tmp_path):
    p, trace = record(host, "forkBomb", tmp_path, "--max-processes", "200", timeout=120)
    assert_failed_build(p, trace)
    assert "nixrec: build killed after running more than 200 processes at once" in lines(p)
    assert leftover_processes(b"sleep\x00600") == []
    summary = _summary(trace)
    # The tracer sees each fork; the kill lands within a few more.
    assert 200 < summary["processes"] < 400, summary


def test_closing_stdout_and_stderr_is_killed_at_pty_eof(host, tmp_path):
    t0 = time.monotonic()
    p, trace = record(host, "closeOutput", tmp_path)
    assert time.monotonic() - t0 < 4, "should be killed at once, not after its sleep 5"
    assert_failed_build(p, trace)
    assert any("closed its standard output and error" in ln for ln in lines(p)), lines(p)
    summary = _summary(trace)
    assert summary["exit_signal"] == "SIGKILL" and summary["outputs"] == {}


def test_host_root_files_are_not_writable(host, tmp_path):
    # As root, the sandbox's uid maps to an id owning nothing on the host
    # (sandbox.ROOT_BUILD_ID), as Nix's build users do.
    p, trace = record(host, "rootOwned", tmp_path)
    assert_failed_build(p, trace)
    text = log_text(trace)
    assert "escape: open for writing: ok" not in text, "/proc/sys/kernel/core_pattern"
    assert "owns the host's /dev/full" not in text
