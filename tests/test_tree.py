"""recorder/tree.py: walking and removing what a build left, at any depth,
read-only as Nix leaves outputs, also as a user who is not root (issue 23)."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from nixfix import missing
from nixrec.recorder import tree
from nixrec.recorder.nix import store

DEPTH = 1500        # past Python's recursion limit (1000), as in issue 23


def deep(top, depth=DEPTH):
    """top/d/d/.../d (depth levels), a file at the bottom and one per 100
    levels; made with relative mkdir+chdir-free dir fds so no path gets long."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(depth):
        os.mkdir("d", dir_fd=fd)
        if i % 100 == 0:
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
                f.write(str(i))
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)


@pytest.fixture
def tmp_path(tmp_path):
    """pytest's own, emptied with tree.remove afterwards: pytest cleans old
    numbered directories with shutil.rmtree, which a deep tree would crash
    (for every later session on this machine)."""
    yield tmp_path
    for name in os.listdir(tmp_path):
        tree.remove(str(tmp_path / name), ignore_errors=True)


def readonly(top):
    for p in reversed(list(tree.entries(top))):
        os.chmod(p, 0o555 if os.path.isdir(p) else 0o444)


def test_walk_and_entries_go_as_deep_as_the_tree(tmp_path):
    top = str(tmp_path / "out")
    deep(top)
    assert sum(1 for _ in tree.walk(top)) == DEPTH + 1
    names = list(tree.entries(top))
    assert len(names) == 1 + DEPTH + DEPTH // 100
    assert names[0] == top and names[1] == top + "/d"
    # And os.walk's order on a small tree.
    small = str(tmp_path / "small")
    for p in ("a/x", "b", "a/y"):
        os.makedirs(os.path.join(small, p))
    mine = {r: (sorted(d), sorted(f)) for r, d, f in tree.walk(small)}
    assert mine == {r: (sorted(d), sorted(f)) for r, d, f in os.walk(small)}


def test_nar_and_reference_scan_of_a_deep_output(tmp_path):
    top = str(tmp_path / "out")
    deep(top)
    assert store.nar_size(top) > 0
    assert store.references_in(top, ["/nix/store/" + "a" * 32 + "-x"]) == set()


def test_remove_a_deep_read_only_tree(tmp_path):
    top = str(tmp_path / "out")
    deep(top)
    readonly(top)
    with pytest.raises(RecursionError):
        shutil.rmtree(top)          # what nixrec used: the bug this replaces
    tree.remove(top)
    assert not os.path.lexists(top)
    tree.remove(top)                # gone already: nothing to do


def test_remove_as_a_user_who_is_not_root():
    """A user's own read-only output (0555 directories, as canonicalised):
    shutil.rmtree fails with EACCES, tree.remove empties it."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        missing("needs root and setpriv to become another user")
    base = tempfile.mkdtemp(prefix="nixrec-tree-")      # pytest's tmp_path is 0700
    try:
        os.chmod(base, 0o777)
        top = os.path.join(base, "out")
        script = (f"import os, sys, shutil\nsys.path[:0] = {sys.path!r}\n"
                  f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                  "from test_tree import deep, readonly\nfrom nixrec.recorder import tree\n"
                  f"top = {top!r}\ndeep(top, 50)\nreadonly(top)\n"
                  "try:\n    shutil.rmtree(top)\nexcept PermissionError:\n"
                  "    print('rmtree: EACCES')\n"
                  "tree.remove(top)\nprint('gone' if not os.path.lexists(top) else 'left')\n")
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", script], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["rmtree:", "EACCES", "gone"]
    finally:
        tree.remove(base, ignore_errors=True)


def test_disk_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    assert tree.disk_bytes(str(tmp_path)) >= 100_000
    assert tree.disk_bytes(str(tmp_path / "nothing")) == 0


# -- destination.py: the previous trace replaced only once the new one exists --

def _previous(tmp_path):
    from nixrec.recorder.destination import Destination
    trace = tmp_path / "t.nixrec"
    trace.write_bytes(b"previous")
    deep(str(trace) + ".d", 1200)
    readonly(str(trace) + ".d")
    return Destination(str(trace)), trace


def test_destination_rollback_leaves_the_previous_trace(tmp_path):
    dest, trace = _previous(tmp_path)
    with open(dest.tmp, "wb") as f:
        f.write(b"new header")
    dest.make_workdir()
    os.mkdir(os.path.join(dest.workdir, "sandbox"))
    dest.rollback()
    assert trace.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["t.nixrec", "t.nixrec.d"]
    assert sum(1 for _ in tree.walk(str(trace) + ".d")) == 1201      # all of it, back


def test_destination_commit_replaces_both(tmp_path):
    dest, trace = _previous(tmp_path)
    with open(dest.tmp, "wb") as f:
        f.write(b"new")
    dest.make_workdir()
    assert dest.commit() is None
    assert trace.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["t.nixrec", "t.nixrec.d"]
    assert os.listdir(str(trace) + ".d") == []
    dest.rollback()                     # after the commit: nothing to undo
    assert trace.read_bytes() == b"new"


def test_destination_recovers_what_a_kill_9_left(tmp_path):
    """Killed before its commit: TRACE.tmp-PID and TRACE.d.old-PID (the
    previous directory) are left; the next recording puts it back."""
    from nixrec.recorder.destination import Destination
    dead = subprocess.Popen(["true"])
    dead.wait()                                     # a pid that is gone
    trace = tmp_path / "t.nixrec"
    trace.write_bytes(b"previous")
    os.makedirs(f"{trace}.d.old-{dead.pid}/outputs")
    os.makedirs(f"{trace}.d/sandbox")                # the aborted recording's
    open(f"{trace}.tmp-{dead.pid}", "w").close()
    open(f"{trace}.tmp-{os.getpid()}", "w").close()  # a live recorder's: left alone
    Destination(str(trace)).recover()
    assert sorted(os.listdir(tmp_path)) == ["t.nixrec", "t.nixrec.d",
                                            f"t.nixrec.tmp-{os.getpid()}"]
    assert os.listdir(f"{trace}.d") == ["outputs"]
    # Killed after its commit, while removing the old directory: removed.
    os.makedirs(f"{trace}.d.old-{dead.pid}/x")
    Destination(str(trace)).recover()
    assert not os.path.exists(f"{trace}.d.old-{dead.pid}")
