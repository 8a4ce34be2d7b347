"""`nixrec events`, run as the user runs it: the installed console script."""

import json
import os
import subprocess

import pytest

from nixrec.recorder.tracefile import format as fmt

from tracebuild import TraceBuilder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIXREC = os.path.join(ROOT, ".venv", "bin", "nixrec")


def nixrec(*args):
    return subprocess.run([NIXREC, *map(str, args)], capture_output=True, text=True,
                          errors="replace", env={**os.environ, "LC_ALL": "C.UTF-8"})


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    t = TraceBuilder()
    sh = t.builder(argv=["sh", "-c", "make"])                     # 1
    make = t.fork(sh, argv=["make"], path="/bin/make")            # 2, 3
    cc = t.fork(make, argv=["/bin/gcc", "x.c"])                   # 4, 5
    cc1 = t.fork(cc, argv=["cc1", "x.c"], path="/libexec/cc1")    # 6, 7
    t.open(cc1, "/usr/include/zlib.h", errno="ENOENT")            # 8
    t.open(cc1, "x.c")                                            # 9
    t.open(cc1, os.fsdecode(b"/build/caf\xe9.h"), errno="ENOENT")  # 10
    t.connect(cc1, "1.1.1.1:80", errno="ENETUNREACH")            # 11
    t.dns(cc1, "example.com")                                     # 12
    t.connect(cc1, "/run/x.sock")                                 # 13
    t.write(cc1, 2, b"fatal error: \"zlib.h\"\n\xff")             # 14
    t.exit(cc1, 1)                                                # 15
    t.wait(cc, cc1)                                               # 16
    t.exit(cc, 1)                                                 # 17
    killed = t.fork(make, argv=["sleep", "9"], path="/bin/sleep")  # 18, 19
    t.exit(killed, signal="SIGKILL")                              # 20
    t.exit(make, 2)                                               # 21
    t.exit(sh, 2)                                                 # 22
    path = tmp_path_factory.mktemp("ev") / "t.nixrec"
    t.save(path, chunk_events=4)
    return path


def lines(res):
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def seqs(res):
    return [int(line.split()[0]) for line in lines(res)]


def test_default_output_is_strace_like(trace):
    out = lines(nixrec("events", trace))
    assert len(out) == 22
    assert out[7] == '     8 1.1.1.1 [cc1] openat("/usr/include/zlib.h", O_RDONLY) = -1 ENOENT'
    assert out[0].startswith('     1 1 [sh] execve("/bin/sh", ["sh", "-c", "make"]')
    assert out[1] == "     2 1 [sh] clone(child=1.1) = 101"
    assert out[4] == '     5 1.1.1 [gcc] execve("/bin/gcc", ["/bin/gcc", "x.c"]) = 0'
    assert out[9] == '    10 1.1.1.1 [cc1] openat("/build/caf\\xe9.h", O_RDONLY) = -1 ENOENT'
    assert out[10] == ('    11 1.1.1.1 [cc1] connect(3, address="1.1.1.1:80", '
                       'family="AF_INET") = -1 ENETUNREACH')
    assert out[13] == '    14 1.1.1.1 [cc1] write(2, "fatal error: \\"zlib.h\\"\\n\\xff") = 23'
    assert out[14] == "    15 1.1.1.1 [cc1] +++ exited with 1 +++"
    assert out[19] == "    20 1.1.2 [sleep] +++ killed by SIGKILL +++"


def test_from_to(trace):
    assert seqs(nixrec("events", trace, "--from", 7, "--to", 12)) == list(range(7, 13))
    assert seqs(nixrec("events", trace, "--from", 21)) == [21, 22]
    assert seqs(nixrec("events", trace, "--from", 500)) == []


def test_proc_exact_and_subtree(trace):
    assert seqs(nixrec("events", trace, "--proc", "1.1.1")) == [5, 6, 16, 17]
    assert seqs(nixrec("events", trace, "--proc", "1.1.1.*")) == list(range(5, 18))
    assert seqs(nixrec("events", trace, "--proc", "1.1...")) == list(range(3, 22))


def test_syscall_path_failed_filters(trace):
    assert seqs(nixrec("events", trace, "--syscall", "openat")) == [8, 9, 10]
    assert seqs(nixrec("events", trace, "--syscall", "exit,connect")) == \
        [11, 13, 15, 17, 20, 21, 22]
    assert seqs(nixrec("events", trace, "--syscall", "exec", "--syscall", "fork")) == \
        [1, 2, 3, 4, 5, 6, 7, 18, 19]
    assert seqs(nixrec("events", trace, "--path", "*.h")) == [8, 10]
    assert seqs(nixrec("events", trace, "--path", "zlib.h")) == [8]
    assert seqs(nixrec("events", trace, "--path", "/usr/*")) == [8]
    assert seqs(nixrec("events", trace, "--failed")) == [8, 10, 11]
    assert seqs(nixrec("events", trace, "--failed", "--proc", "1.1.1.1",
                       "--syscall", "connect")) == [11]


def test_syscall_names_outside_the_table(trace):
    # A real call nixrec does not record (python-ptrace's table names it):
    # nothing matches, and it says why; a name that is no call: exit 2.
    res = nixrec("events", trace, "--syscall", "getpid")
    assert res.returncode == 0 and res.stdout == ""
    assert res.stderr == ("nixrec: warning: getpid: not recorded by nixrec "
                          "(recorder/trace/syscalls.py): no event matches\n")
    res = nixrec("events", trace, "--syscall", "openat,opnat")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "nixrec: --syscall opnat: no such system call or event kind\n"


def test_json_fields(trace):
    objs = [json.loads(line) for line in lines(nixrec("events", trace, "--json"))]
    assert len(objs) == 22
    required = {"seq", "proc", "pid", "kind", "syscall", "path", "address", "dns",
                "result", "errno", "argv0"}
    assert all(required <= set(o) for o in objs)
    by = {o["seq"]: o for o in objs}
    assert by[8]["path"] == "/usr/include/zlib.h" and by[8]["errno"] == "ENOENT"
    assert by[8]["argv0"] == "cc1" and by[8]["kind"] == "syscall" and by[8]["result"] == -1
    assert by[9]["path"] == "/build/x.c" and by[9]["errno"] is None
    assert by[10]["path"] == "/build/caf\ufffd.h"
    assert by[11]["address"] == "1.1.1.1:80" and by[11]["errno"] == "ENETUNREACH"
    assert by[12]["dns"] == "example.com" and by[12]["address"] == "10.0.2.3:53"
    assert by[13]["address"] == "/run/x.sock"
    assert by[14]["args"]["data"] == 'fatal error: "zlib.h"\n\ufffd'
    assert by[1]["args"]["argv"] == ["sh", "-c", "make"]
    assert by[2]["kind"] == "fork" and by[2]["args"]["child"] == "1.1"
    assert by[20]["args"]["signal"] == "SIGKILL"
    assert by[4]["pid"] == 101 and by[5]["argv0"] == "gcc"


def test_partial_trace_warns_and_shows_what_was_recorded(trace, tmp_path):
    data = trace.read_bytes()
    index_offset, _ = fmt.parse_footer(data[-fmt.FOOTER_SIZE:])
    cut = tmp_path / "cut.nixrec"
    cut.write_bytes(data[:index_offset - 5])        # the last chunk is torn
    res = nixrec("events", cut)
    assert res.returncode == 0
    assert res.stderr.splitlines() == [
        "nixrec: warning: recording interrupted after event 20; showing what was recorded"]
    assert seqs(res) == list(range(1, 21))
    assert json.loads(lines(nixrec("events", cut, "--json", "--from", 19))[0])["argv0"] \
        == "sleep"


def test_corrupt_chunk_is_warned_about(trace, tmp_path):
    data = bytearray(trace.read_bytes())
    first_chunk = data.index(fmt.CHUNK_TAG)
    second = data.index(fmt.CHUNK_TAG, first_chunk + 1)
    data[second + fmt.CHUNK_HEAD_SIZE + 2] ^= 0x40
    bad = tmp_path / "bad.nixrec"
    bad.write_bytes(bytes(data))
    res = nixrec("events", bad)
    assert res.returncode == 0
    assert res.stderr.splitlines() == [
        f"nixrec: warning: chunk 2 at offset {second} is corrupt (checksum mismatch); "
        "skipped events 5-8"]
    assert seqs(res) == [1, 2, 3, 4] + list(range(9, 23))


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty, not a nixrec trace"),
    (b"#!/bin/sh\necho hi\n", "is not a nixrec trace"),
    (fmt.PREFIX.pack(fmt.MAGIC, 9, 0, 0), "trace format v9 is newer than this nixrec "
                                          "(reads up to v2)"),
])
def test_bad_trace_is_one_line_exit_2(tmp_path, content, message):
    p = tmp_path / "x.nixrec"
    if content is not None:
        p.write_bytes(content)
    res = nixrec("events", p)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("nixrec: ") and message in res.stderr


def test_bad_option_is_exit_2(trace):
    res = nixrec("events", trace, "--from", 0)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1
