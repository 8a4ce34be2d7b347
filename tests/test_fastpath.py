"""The tracer's C loop (recorder/trace/fastpath.c) against its Python loop.

The C loop handles most stops (a call with one path, its exit, wait4,
redirected writes to fd 1/2, forks, exits, signals, exec events) and Python
the rest; with NIXREC_FASTPATH=0 Python handles every stop. Both must record
the same events: the same builds are recorded both ways, through the CLI, and
their events compared one by one (all but the time). Each fixture is a
sequential build, so the order of its events is the same on every run.

The fixtures cover what the C loop decides by itself: lookups answered from
the answers predict.py taught it, successful plain opens answered with the
lowest free fd (record.nix lookups: gaps, a closed stdin, EMFILE under
`ulimit -n`, an unreadable file, directories), an ENOENT on a dangling
link (explained by Python while the process is held: symlinkOut), failed and
successful opens in /build and /usr, an exec of
a missing interpreter, a refused setuid chmod, the network, wait4 statuses.
(`killed` is not among them: its two exits race, in either loop.)
"""

import subprocess

import pytest

from nixfix import HOST_TREES, events, instantiate, locked_tree, missing, run_nixrec, summary

pytestmark = pytest.mark.e2e

# (nix file, attribute, extra `record` arguments; "LOCKED": the host trees and
# a /locked tree with a directory the build user may not search).
CASES = [
    ("record.nix", "lookups", ("--extra-sandbox-paths", "LOCKED")),
    ("record.nix", "tries", ()),
    ("failing/default.nix", "symlinkOut", ()),
    ("failing/default.nix", "deepProbes", ("--extra-sandbox-paths", HOST_TREES)),
    ("failing/default.nix", "envShebang", ()),
    ("failing/default.nix", "setuid", ()),
    ("failing/default.nix", "network", ()),
    ("failing/default.nix", "killOutside", ()),
]


def _record(monkeypatch, drv, out, fast: bool, *extra):
    monkeypatch.setenv("NIXREC_FASTPATH", "1" if fast else "0")
    p = run_nixrec("record", drv, "-o", out, *extra, timeout=120)
    assert p.returncode in (0, 1), p.stderr.decode(errors="replace")[-2000:]
    return p.returncode


def _without_time(evs):
    for ev in evs:
        ev.pop("time", None)
    return evs


@pytest.fixture(scope="module")
def built():
    from nixrec.recorder.trace import fastpath
    if not fastpath.built():
        missing(f"{fastpath.LIBRARY} is not built (bash scripts/setup.sh builds it with gcc)")


@pytest.mark.parametrize("nixfile,attr,extra", CASES, ids=[a for _, a, _ in CASES])
def test_c_loop_records_the_events_the_python_loop_records(built, tmp_path, monkeypatch,
                                                            nixfile, attr, extra):
    drv = instantiate(nixfile, attr)
    extra = [locked_tree(tmp_path) if a == "LOCKED" else a for a in extra]
    py = _record(monkeypatch, drv, tmp_path / "py.nixrec", False, *extra)
    c = _record(monkeypatch, drv, tmp_path / "c.nixrec", True, *extra)
    assert py == c
    # The C loop did handle stops (else this would compare Python with itself).
    assert summary(tmp_path / "c.nixrec")["stops_c"] > 0
    assert summary(tmp_path / "py.nixrec")["stops_c"] == 0
    a = _without_time(events(tmp_path / "py.nixrec"))
    b = _without_time(events(tmp_path / "c.nixrec"))
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"event {i + 1} differs"
    assert len(a) == len(b)
    if attr == "lookups":
        # Lookups in the fixed trees were answered at entry, by the C loop too,
        # and it alone answered the successful plain opens (with their fd).
        py_answered = summary(tmp_path / "py.nixrec")["answered_at_entry"]
        assert summary(tmp_path / "c.nixrec")["answered_at_entry"] > py_answered > 0


def test_c_loop_hands_a_dangling_link_to_python_and_it_is_explained(built, tmp_path,
                                                                     monkeypatch):
    drv = instantiate("failing/default.nix", "symlinkOut")
    _record(monkeypatch, drv, tmp_path / "c.nixrec", True)
    words = [e for e in events(tmp_path / "c.nixrec")
             if e.get("path") == "/build/words" and e["syscall"] == "openat"]
    assert words, "wc's open of the dangling link is in the trace"
    assert all(e["errno"] == "ENOENT" and e["args"].get("link_target") == "/usr/share/dict/words"
               for e in words)


def test_a_library_that_is_not_built_is_not_loaded(tmp_path, monkeypatch):
    from nixrec.recorder.trace import fastpath
    monkeypatch.delenv("NIXREC_FASTPATH", raising=False)
    monkeypatch.setattr(fastpath, "LIBRARY", str(tmp_path / "absent.so"))
    monkeypatch.setattr(fastpath, "_lib", None)
    assert fastpath._load() is None and not fastpath.available()


def test_a_library_of_another_version_is_not_used(tmp_path, monkeypatch):
    from nixrec.recorder.trace import fastpath
    src = tmp_path / "old.c"
    src.write_text("int fp_abi(void) { return 0; }\n")
    so = tmp_path / "old.so"
    p = subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src)], capture_output=True)
    if p.returncode != 0:
        missing("gcc cannot build a shared library here")
    monkeypatch.delenv("NIXREC_FASTPATH", raising=False)
    monkeypatch.setattr(fastpath, "LIBRARY", str(so))
    monkeypatch.setattr(fastpath, "_lib", None)
    assert fastpath._load() is None and not fastpath.available()


OPENS_C = r"""
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static void *idle(void *arg) { return arg; }
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "thread")) {   /* the fd table is shared from now on */
        pthread_t t;
        pthread_create(&t, 0, idle, 0);
        pthread_join(t, 0);
    }
    if (argc > 1 && !strcmp(argv[1], "ring")) {     /* the kernel may add fds from now on */
        char params[120] = {0};                     /* struct io_uring_params */
        printf("ring %ld\n", syscall(SYS_io_uring_setup, 4, params));
    }
    for (int i = 0; i < 3; i++)
        printf("%d\n", open("/usr/include/stdio.h", O_RDONLY | O_CLOEXEC));
    return 0;
}
"""


def test_c_loop_answers_no_open_of_a_process_that_shares_its_fd_table(built, tmp_path,
                                                                        monkeypatch):
    """The lowest free fd is the answer only for a process no other one can
    change the fd table of meanwhile (fastpath.c lowest_free_fd): after a
    thread (CLONE_FILES) or an io_uring (the kernel may open files for it),
    the process's opens keep their exit stop."""
    prog = tmp_path / "prog"
    prog.mkdir()
    (tmp_path / "opens.c").write_text(OPENS_C)
    p = subprocess.run(["gcc", "-static", "-pthread", "-O1", "-o", str(prog / "opens"),
                        str(tmp_path / "opens.c")], capture_output=True)
    if p.returncode != 0:
        missing("gcc cannot build a static program here (libc6-dev)")
    drv = instantiate("record.nix", "threadOpens")
    trees = f"{HOST_TREES} /prog={prog}"
    _record(monkeypatch, drv, tmp_path / "py.nixrec", False, "--extra-sandbox-paths", trees)
    _record(monkeypatch, drv, tmp_path / "c.nixrec", True, "--extra-sandbox-paths", trees)
    a = _without_time(events(tmp_path / "py.nixrec"))
    b = _without_time(events(tmp_path / "c.nixrec"))
    assert a == b
    opens = [e["result"] for e in b if e["path"] == "/usr/include/stdio.h"]
    rings = [e["result"] for e in b if e["syscall"] == "io_uring_setup"]
    # The ring is fd 3 where io_uring works (kernel.io_uring_disabled=0); where
    # it is refused the process is marked all the same (at the call's entry).
    assert len(rings) == 1 and rings[0] in (3, -1)
    assert opens == [3, 4, 5, 3, 4, 5] + ([4, 5, 6] if rings[0] == 3 else [3, 4, 5])
    # Of the nine, the C loop answered the three of the process with neither.
    answered = [summary(tmp_path / n)["answered_at_entry"] for n in ("py.nixrec", "c.nixrec")]
    assert answered[1] - answered[0] == 3
