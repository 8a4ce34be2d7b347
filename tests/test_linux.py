"""The tracer's reading of a tracee (linux.py) and of the build's tree, without a build."""

import ctypes
import mmap
import os

from nixrec.recorder.sandbox import linux


def test_read_cstrs_answers_as_read_cstr_does_one_by_one():
    """An exec's argv is read with one process_vm_readv (read_cstrs): the
    words must be read_cstr's, whatever their length and wherever they end,
    up to a word cut by an unreadable page."""
    page = mmap.PAGESIZE
    m = mmap.mmap(-1, 4 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(base + 3 * page), page, 0) == 0   # PROT_NONE

    def put(off, data):
        m[off:off + len(data)] = data
        return base + off

    addrs = [
        put(0, b"cc\0"),
        put(16, b"x" * 300 + b"\0"),                 # longer than the first read
        put(400, b"\0"),                             # empty
        put(page - 5, b"abcd\0"),                    # ends at the page's end
        put(page - 3, b"ab"),                        # crosses into the next page
        put(page + 1, b"y" * 5000),                  # longer than the limit
        put(3 * page - 4, b"zzzz"),                  # runs into the unreadable page
        put(600, b"last\0"),                         # after the cut one
    ]
    m[page - 1:page + 1] = b"c\0"
    pid = os.getpid()
    one_by_one = [linux.read_cstr(pid, a, 4096) for a in addrs]
    assert one_by_one[0] == b"cc" and one_by_one[6] == b"zzzz" and one_by_one[7] == b"last"
    assert linux.read_cstrs(pid, addrs, 4096) == one_by_one
    # More words than one call takes (1,024 iovecs), and the empty list.
    many = [addrs[0], addrs[7]] * 700
    assert linux.read_cstrs(pid, many, 4096) == [b"cc", b"last"] * 700
    assert linux.read_cstrs(pid, [], 4096) == []


def test_an_enoent_answered_at_entry_is_explained_after_its_process_exited(tmp_path):
    """A lookup answered at entry is explained after its process was resumed
    (tracer._continue_entry); a short-lived process (`test -x /usr/bin/cc`)
    may have exited by then. The explanation walks the build's root, which
    predict.py holds open, not /proc/PID/root: it must not depend on the
    process (once, in CI, the dangling link went unexplained and the path
    was remembered as empty)."""
    import subprocess
    from nixrec.recorder.trace import predict, tracer
    from nixrec.recorder.tracefile.model import Event, Process
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    os.symlink("/etc/alternatives/cc", tmp_path / "usr" / "bin" / "cc")
    gone = subprocess.Popen(["true"])
    gone.wait()                                   # a pid with no process any more
    p = predict.Predictor(["/usr"], (65534, 65534))
    p.root_fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    tr = tracer.Tracer.__new__(tracer.Tracer)
    tr.predictor, tr._absent = p, set()
    t = tracer.Tracee(gone.pid, 2, "1.1", "/build", Process("1.1"))
    for _ in range(2):                            # and nothing wrong is remembered
        ev = Event("syscall", "1.1", 2, "newfstatat", "/usr/bin/cc", result=-1, errno="ENOENT")
        tr._explain_enoent(t, ev)
        assert ev.args == {"link": "/usr/bin/cc", "link_target": "/etc/alternatives/cc"}
    p.close()


def test_ptrace_goes_through_python_ptrace_and_fails_like_os():
    """linux.ptrace is python-ptrace's binding; a failure is the OSError the
    tracer handles (ESRCH: ProcessLookupError, a tracee gone)."""
    from ptrace.binding import func
    assert linux._ptrace is func.ptrace
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    for call in (lambda: linux.ptrace(linux.PTRACE_CONT, child),
                 lambda: linux.geteventmsg(child), lambda: linux.skip_syscall(child)):
        try:
            call()
        except ProcessLookupError:
            continue
        raise AssertionError("no ProcessLookupError")


def test_signal_names_are_python_ptraces_but_sigio():
    import signal
    from ptrace.signames import SIGNAMES
    from nixrec.recorder.trace.calls import signame
    for n, name in SIGNAMES.items():
        assert signame(n) == (name if n != signal.SIGIO else "SIGIO")
    assert signame(signal.SIGSEGV) == "SIGSEGV" and signame(40) == "SIG40"


def test_the_syscall_table_agrees_with_python_ptraces():
    """nixrec keeps its own table (the roles and classes python-ptrace has
    not; its numbers cost analysis no import of python-ptrace's syscall
    package, ~0.1 s: docs/performance.md). Every number it shares with
    python-ptrace's x86_64 table is the same."""
    from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES
    from nixrec.recorder.trace import syscalls
    theirs = {}
    for nr, name in sorted(SYSCALL_NAMES.items()):
        theirs.setdefault(name, nr)           # x32 repeats some names above 512
    ours = {sc.name: sc.nr for sc in syscalls.BY_NR.values()}
    assert {n: nr for n, nr in ours.items() if n in theirs} == \
        {n: theirs[n] for n in ours if n in theirs}
    assert set(ours) - set(theirs) <= {"fchmodat2"}       # python-ptrace 0.9.9 lacks it
