"""Nix's checks on a finished build's outputs (nix-sandbox.md §2.8), so that a
build recorded by nixrec fails where Nix would fail it, with Nix's words.

Data in, data out: `check` takes the plan and where the outputs are, and
returns the first error message or None; `canonicalise` then sets modes and
mtimes as the store would have them.
"""

import base64
import hashlib
import os
import stat

# registerOutputs' file types: anything else is "an unsupported type".
_ALLOWED = (stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK)


def check(plan, outputs_dir, drv_outputs) -> str:
    """-> Nix's error for the first output that fails a check, or None.

    outputs_dir holds each output by its store basename; drv_outputs is the
    derivation's {name: Output} (hash_algo and hash for fixed outputs).
    """
    for name, out in sorted(drv_outputs.items()):
        path = os.path.join(outputs_dir, os.path.basename(out.path))
        if not os.path.lexists(path):
            continue                      # reported by the caller, as Nix does first
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return (f"suspicious ownership or permission on '{out.path}' for output "
                    f"'{name}'; rejecting this build output")
        bad = _unsupported(path)
        if bad:
            return f"file '{out.path}{bad[len(path):]}' has an unsupported type"
        if out.hash_algo and out.hash:
            err = _check_fixed(plan, name, out, path)
            if err:
                return err
    return None


def _unsupported(path):
    for root, dirs, files in _walk(path):
        for p in [root] + [os.path.join(root, n) for n in files + dirs]:
            mode = os.lstat(p).st_mode
            if not any(ok(mode) for ok in _ALLOWED):
                return p
    return None


def _walk(path):
    if os.path.isdir(path) and not os.path.islink(path):
        return os.walk(path)
    return [(path, [], [])]


def _check_fixed(plan, name, out, path):
    """Fixed-output: the declared hash (flat or NAR), as registerOutputs checks it."""
    algo = out.hash_algo
    recursive = algo.startswith("r:")
    algo = algo[2:] if recursive else algo
    if not recursive:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o111:
            return (f"output path '{out.path}' should be a non-executable regular file "
                    "since recursive hashing is not enabled (outputHashMode=flat)")
    try:
        h = hashlib.new(algo)
    except ValueError:
        return None                       # an algorithm Python lacks: nothing to compare
    if recursive:
        for chunk in nar(path):
            h.update(chunk)
    else:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    got = h.hexdigest()
    if got == out.hash:
        return None
    # Nix's message, on one line (nixrec's results are one line each).
    return (f"hash mismatch in fixed-output derivation '{plan.drv_path}': "
            f"specified: {_sri(algo, out.hash)}, got: {_sri(algo, got)}")


def _sri(algo, hex_hash):
    return f"{algo}-{base64.b64encode(bytes.fromhex(hex_hash)).decode()}"


# --- NAR: Nix's archive format, for recursive hashes ------------------------------------

def _s(b: bytes) -> bytes:
    return len(b).to_bytes(8, "little") + b + b"\0" * (-len(b) % 8)


def nar(path):
    """The NAR serialisation of `path`, in chunks (libutil/archive.cc dump)."""
    yield _s(b"nix-archive-1")
    yield from _nar_node(path)


def _nar_node(path):
    st = os.lstat(path)
    yield _s(b"(")
    if stat.S_ISLNK(st.st_mode):
        yield _s(b"type") + _s(b"symlink") + _s(b"target") + _s(os.fsencode(os.readlink(path)))
    elif stat.S_ISDIR(st.st_mode):
        yield _s(b"type") + _s(b"directory")
        for name in sorted(os.listdir(path), key=os.fsencode):
            yield _s(b"entry") + _s(b"(") + _s(b"name") + _s(os.fsencode(name)) + _s(b"node")
            yield from _nar_node(os.path.join(path, name))
            yield _s(b")")
    else:
        yield _s(b"type") + _s(b"regular")
        if st.st_mode & 0o100:
            yield _s(b"executable") + _s(b"")
        yield _s(b"contents") + st.st_size.to_bytes(8, "little")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                yield block
        yield b"\0" * (-st.st_size % 8)
    yield _s(b")")


def canonicalise(path) -> None:
    """canonicalisePathMetaData: 0444 or 0555 (user-executable), mtime 1."""
    for root, dirs, files in _walk(path):
        for p in [root] + [os.path.join(root, n) for n in files + dirs]:
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(p, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)
            os.utime(p, (1, 1), follow_symlinks=False)
