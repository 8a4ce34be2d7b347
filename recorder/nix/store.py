"""The Nix store as nixrec sees it: where it is, what a derivation's inputs
close over, and the calls into real Nix (when installed) to make or realise .drv files.
"""

import hashlib
import os
import re
import stat
from typing import Optional
import shutil
import subprocess

from nixrec.recorder.errors import BadInput, HostUnsupported

STORE_DIR = "/nix/store"


def nix_env() -> dict:
    """Environment for nix-* commands: talk to the local store directly when root.

    As root without a daemon, NIX_REMOTE must be empty or Nix tries the socket.
    """
    env = dict(os.environ)
    if os.geteuid() == 0:
        env["NIX_REMOTE"] = ""
    return env


def have_nix() -> bool:
    return shutil.which("nix-store") is not None and shutil.which("nix-instantiate") is not None


def _run_nix(argv, what):
    try:
        # Store paths may hold any byte: decode as the rest of nixrec does.
        p = subprocess.run(argv, env=nix_env(), capture_output=True, text=True,
                           errors="surrogateescape")
    except FileNotFoundError:
        raise BadInput(f"{what}: {argv[0]} is not installed (apt-get install nix-bin)")
    if p.returncode != 0:
        msg = nix_error(p.stderr) or f"exit code {p.returncode}"
        if "daemon-socket" in msg and os.geteuid() != 0:
            # A user asks Nix through its daemon; root talks to the store itself.
            raise HostUnsupported(f"{what}: {msg}: Nix needs its daemon for a user who is not "
                                  "root: start it (systemctl start nix-daemon) or join the "
                                  "group that may use its socket, or pass a .drv path")
        raise BadInput(f"{what}: {msg}")
    return p.stdout


def nix_error(stderr: str):
    """The message of Nix's error output, on one line: its `error:` line
    (Nix prints the source excerpt and a caret after it, and a
    `--show-trace` hint last), with the `at FILE:LINE:COL` that follows.
    None if there is nothing."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    first = next((i for i, l in enumerate(lines) if l.startswith("error:")), None)
    if first is None:
        rest = [l for l in lines if not l.startswith("warning:")]
        return rest[-1] if rest else None
    msg = lines[first][len("error:"):].strip()
    nxt = lines[first + 1] if first + 1 < len(lines) else ""
    if nxt.startswith("at ") and nxt.endswith(":"):
        msg += f" ({nxt[:-1]})"
    return msg


def instantiate(nix_file: str, attr: str = None, nix_args=()) -> str:
    """`nix-instantiate FILE [-A ATTR] [--arg N E] [--argstr N V]` -> the .drv
    path (a real one, made by Nix). nix_args: (kind, name, value), kind
    "arg" or "argstr", passed on in order as nix-build passes them."""
    if not os.path.exists(nix_file):
        raise BadInput(f"no such file: {nix_file}")
    argv = ["nix-instantiate", nix_file]
    if attr:
        argv += ["-A", attr]
    for kind, name, value in nix_args:
        argv += [f"--{kind}", name, value]
    out = _run_nix(argv, f"cannot instantiate {nix_file}")
    paths = [l.strip() for l in out.splitlines() if l.strip().endswith(".drv")]
    if len(paths) != 1:
        raise BadInput(f"{nix_file}: expected one derivation, got {len(paths)} (use -A ATTR)")
    return paths[0]


def valid(paths) -> bool:
    """Are all these store paths valid (registered in Nix's database; without
    Nix: present)?"""
    if not all(os.path.lexists(p) for p in paths):
        return False
    if not have_nix():
        return True
    p = subprocess.run(["nix-store", "--check-validity", *paths], env=nix_env(),
                       capture_output=True)
    return p.returncode == 0


def realise(paths) -> None:
    """Make sure every input exists in the store: `paths` is [(path, how)], how
    being `DRV!OUT` for an input derivation's output (built with real Nix,
    `nix-store --realise DRV!OUT`) or None for a source that must be there."""
    missing = [(p, how) for p, how in paths if not os.path.exists(p)]
    if not missing:
        return
    sources = [p for p, how in missing if how is None]
    if sources:
        raise BadInput(f"input source not in the store: {sources[0]}")
    if not have_nix():
        raise BadInput(f"input not in the store and Nix is not installed: {missing[0][0]}")
    _run_nix(["nix-store", "--realise", *[how for _, how in missing]],
             "cannot realise the inputs")


def closure(paths) -> list:
    """The store paths `paths` refer to, transitively (sorted).

    With Nix: `nix-store -qR`. Without it (documented fallback, docs/sandbox.md):
    scan each path for the hash parts of the store paths present on this
    machine, the rule Nix uses for references (references_in).
    """
    paths = sorted(set(paths))
    if not paths:
        return []
    if have_nix():
        try:
            out = _run_nix(["nix-store", "-qR", *paths], "cannot compute the input closure")
            return sorted(set(l.strip() for l in out.splitlines() if l.strip()))
        except BadInput:
            pass  # paths not registered (copied by hand): fall back to scanning
    return _closure_by_scan(paths)


def _closure_by_scan(paths) -> list:
    """References by scanning for hash parts, as scanForReferences does."""
    try:
        names = os.listdir(STORE_DIR)
    except OSError:
        names = []
    present = [os.path.join(STORE_DIR, n) for n in names if is_store_path(os.path.join(STORE_DIR, n))]
    seen, todo = set(), list(paths)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            todo += [r for r in references_in(p, present) if r not in seen]
        except OSError:
            pass        # unreadable: what it refers to cannot be told
    return sorted(seen)


# Nix's base-32 alphabet (libutil/hash.cc base32Chars): no e, o, t, u.
_NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
_RUN = re.compile(rb"[0-9a-df-np-sv-z]{32,}")


def is_store_path(p: str) -> bool:
    """A path directly in the store whose name is a hash part, '-' and a name."""
    d, name = os.path.split(p)
    return (d == STORE_DIR and len(name) > 33 and name[32] == "-"
            and all(c in _NIX32 for c in name[:32]))


# A store path written out in full: the store, a hash part, '-' and a name
# (Nix's name characters), up to the next '/' or other character.
_NAMED = re.compile(rb"/nix/store/([0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+)")
_NAMED_MAX = len(STORE_DIR) + 1 + 33 + 211     # Nix limits a store path name to 211


def scan(path: str, candidates) -> tuple:
    """One pass over `path`'s NAR (file contents, names and symlink targets
    alike) -> (the candidates it refers to, the store paths it names in full).

    References are Nix's (scanForReferences, RefScanSink): a candidate whose
    32-character hash part is one of the 32-character windows of base-32
    characters. Nix looks for nothing else: a store path named here in full
    that is no candidate is a reference Nix does not record."""
    by_hash = {os.path.basename(c)[:32].encode(): c for c in candidates}
    refs, named, tail = set(), set(), b""
    for chunk in nar(path):
        # What straddles two chunks is found with the tail carried over (the
        # longest store path; any 31 bytes would do for a hash window).
        data = tail + chunk
        for m in _RUN.finditer(data):
            run = m.group()
            for i in range(len(run) - 31):
                hit = by_hash.get(run[i:i + 32])
                if hit is not None:
                    refs.add(hit)
        for m in _NAMED.finditer(data):
            if m.end() < len(data):        # one touching the end may go on
                named.add(f"{STORE_DIR}/{m.group(1).decode()}")
        tail = data[-_NAMED_MAX:]
    return refs, named      # a NAR ends with ")" and padding: nothing is left in tail


def references_in(path: str, candidates) -> set:
    """The candidates (store paths) `path` refers to, as Nix finds them (scan)."""
    return scan(path, candidates)[0]


def nar_size(path: str) -> int:
    return sum(len(b) for b in nar(path))


def nar_sizes(paths) -> dict:
    """{path: size of its NAR}: from Nix's database for valid paths (`nix-store
    -q --size`), else by serialising it."""
    sizes = {}
    if have_nix() and paths:
        try:
            out = _run_nix(["nix-store", "-q", "--size", *paths], "cannot query sizes")
            sizes = dict(zip(paths, (int(w) for w in out.split())))
        except (BadInput, ValueError):
            sizes = {}
    for p in paths:
        if p not in sizes:
            sizes[p] = nar_size(p)
    return sizes


def path_hash(path: str) -> str:
    """A content hash of a store path (sha256 over a NAR-like walk), for the trace header.

    Replay compares these to refuse a changed input. Not Nix's NAR hash: cheap,
    stable, and enough to tell "changed" from "same".
    """
    h = hashlib.sha256()
    if os.path.islink(path) or not os.path.isdir(path):
        _hash_entry(h, path, "")
        return "sha256:" + h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            _hash_entry(h, os.path.join(root, name), os.path.relpath(os.path.join(root, name), path))
        for d in dirs:
            h.update(b"D" + os.path.relpath(os.path.join(root, d), path).encode() + b"\0")
    return "sha256:" + h.hexdigest()


def _hash_entry(h, full, rel):
    if os.path.islink(full):
        h.update(b"L" + rel.encode() + b"\0" + os.readlink(full).encode() + b"\0")
        return
    st = os.stat(full)
    h.update(b"F" + rel.encode() + b"\0" + (b"x" if st.st_mode & 0o111 else b"-"))
    with open(full, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


# --- store path arithmetic ---------------------------------------------------------
# What reading v4 JSON needs (a fixed output given as a content address without
# its path) and the sandbox's .attr-<hash> names: Nix's own encodings.

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32(h: bytes) -> str:
    """Nix's base-32 (libutil/hash.cc printHash32): last 5-bit group first."""
    n = (len(h) * 8 - 1) // 5 + 1
    out = []
    for k in range(n - 1, -1, -1):
        b = k * 5
        i, j = b // 8, b % 8
        c = (h[i] >> j) | (h[i + 1] << (8 - j) if i + 1 < len(h) else 0)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


def make_store_path(kind: str, hex_hash: str, name: str) -> str:
    """makeStorePath: nix32 of the 20-byte XOR-fold of sha256(fingerprint)."""
    fp = f"{kind}:sha256:{hex_hash}:{STORE_DIR}:{name}".encode()
    digest = hashlib.sha256(fp).digest()
    folded = bytearray(20)
    for i, byte in enumerate(digest):
        folded[i % 20] ^= byte
    return f"{STORE_DIR}/{nix32(bytes(folded))}-{name}"


def fixed_output_path(hash_algo: str, hex_hash: str, name: str) -> Optional[str]:
    """makeFixedOutputPath for flat and NAR methods; None for text/git."""
    if hash_algo == "r:sha256":
        return make_store_path("source", hex_hash, name)
    if hash_algo.startswith(("text:", "git:")):
        return None
    inner = hashlib.sha256(f"fixed:out:{hash_algo}:{hex_hash}:".encode()).hexdigest()
    return make_store_path("output:out", inner, name)


# --- NAR: Nix's archive format, for recursive hashes ------------------------------------

def _s(b: bytes) -> bytes:
    return len(b).to_bytes(8, "little") + b + b"\0" * (-len(b) % 8)


def nar(path):
    """The NAR serialisation of `path`, in chunks (libutil/archive.cc dump).
    With its own stack: a build chooses its outputs' depth (issue 23)."""
    yield _s(b"nix-archive-1")
    # The stack holds what is still to be written: a path to dump as a node,
    # or bytes (the closing of an entry or a directory).
    todo = [path]
    while todo:
        item = todo.pop()
        if isinstance(item, bytes):
            yield item
            continue
        st = os.lstat(item)
        yield _s(b"(")
        if stat.S_ISLNK(st.st_mode):
            yield _s(b"type") + _s(b"symlink") + _s(b"target") + _s(os.fsencode(os.readlink(item)))
        elif stat.S_ISDIR(st.st_mode):
            yield _s(b"type") + _s(b"directory")
            later = [_s(b")")]
            for name in sorted(os.listdir(item), key=os.fsencode):
                later.append(_s(b"entry") + _s(b"(") + _s(b"name") + _s(os.fsencode(name))
                             + _s(b"node"))
                later.append(os.path.join(item, name))
                later.append(_s(b")"))
            todo.extend(reversed(later[1:] + later[:1]))
            continue
        else:
            yield _s(b"type") + _s(b"regular")
            if st.st_mode & 0o100:
                yield _s(b"executable") + _s(b"")
            yield _s(b"contents") + st.st_size.to_bytes(8, "little")
            with open(item, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    yield block
            yield b"\0" * (-st.st_size % 8)
        yield _s(b")")
