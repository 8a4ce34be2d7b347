"""Walking and removing directory trees the build made, without recursion.

A build chooses the depth of what it leaves (its outputs, its /build): 1,500
nested directories made Python 3.11's os.walk and shutil.rmtree (both
recursive) raise RecursionError, and every later `record -o` to the same
trace crashed the same way (issue 23). Everything here keeps its own stack.

Outputs are read-only once canonicalised (as Nix leaves them: 0555
directories), so `remove` gives each directory back its owner's write
permission before emptying it; that is what lets a non-root user record to
the same -o twice.
"""

import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def walk(top):
    """os.walk(top) top-down, symlinks not followed, with a stack instead of
    recursion. Yields (root, dirs, files); unreadable directories are skipped
    as os.walk skips them."""
    todo = [top]
    while todo:
        root = todo.pop()
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        dirs, files = [], []
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(e.name)
        yield root, dirs, files
        # Reversed, so that the first directory is walked first (as os.walk).
        todo.extend(os.path.join(root, d) for d in reversed(dirs))


def entries(path):
    """`path`, then everything under it, each directory's entries by name
    (the order NARs and canonicalisation use)."""
    yield path
    if not os.path.isdir(path) or os.path.islink(path):
        return
    todo = [path]
    while todo:
        root = todo.pop()
        try:
            names = sorted(os.listdir(root), key=os.fsencode)
        except OSError:
            continue
        subdirs = []
        for n in names:
            p = os.path.join(root, n)
            yield p
            if os.path.isdir(p) and not os.path.islink(p):
                subdirs.append(p)
        todo.extend(reversed(subdirs))


def disk_bytes(path) -> int:
    """The bytes `path` takes on its disk (allocated blocks), 0 if it is gone."""
    total = 0
    for p in entries(path):
        try:
            total += os.lstat(p).st_blocks * 512
        except OSError:
            pass
    return total


def remove(path, ignore_errors=False) -> None:
    """rm -rf `path`, restoring the owner's write permission on each
    directory first. Works on directory fds (one level open at a time,
    `..` to climb back), so neither depth nor path length stops it.
    Raises the first OSError unless ignore_errors."""
    try:
        _remove(path)
    except OSError:
        if not ignore_errors:
            raise


def _remove(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    _writable(path)
    fd = os.open(path, _DIR_FLAGS)
    # One frame per open level: (the name in its parent, its subdirectories left).
    stack = [(None, _clear_files(fd))]
    try:
        while stack:
            name, subdirs = stack[-1]
            if subdirs:
                sub = subdirs.pop()
                _writable(sub, fd)
                try:
                    child = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                os.close(fd)
                fd = child
                stack.append((sub, _clear_files(fd)))
                continue
            stack.pop()
            if name is None:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _clear_files(fd) -> list:
    """Unlink every non-directory in the directory `fd`; -> its subdirectories."""
    subdirs = []
    with os.scandir(fd) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e.name)
            else:
                try:
                    os.unlink(e.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
    return subdirs


def _writable(name, dir_fd=None):
    """u+rwx on a directory (a canonicalised output's are 0555). The owner
    may always chmod; root needs none of it, so a failure is left for the
    unlink to report."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        if mode & 0o700 != 0o700:
            os.chmod(name, stat.S_IMODE(mode) | 0o700, dir_fd=dir_fd)
    except (OSError, NotImplementedError):
        pass
