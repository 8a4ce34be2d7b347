"""Shared helpers for tests that need real Nix and the fixture busybox.

style.md §8: a missing prerequisite skips with its reason on a developer's
machine, but under CI=true it fails the run (a skip is not a pass).

    from nixfix import require_nix, instantiate, show_derivation, run_nixrec
"""

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
# The console script next to the interpreter running pytest (.venv/bin/nixrec).
NIXREC = Path(sys.executable).parent / "nixrec"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str):
    """Skip locally; fail under CI=true, where every prerequisite must exist."""
    if in_ci():
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def nix_env() -> dict:
    # As root with no daemon, NIX_REMOTE must be empty or Nix dials the socket.
    env = dict(os.environ)
    if os.geteuid() == 0:
        env["NIX_REMOTE"] = ""
    return env


def require_nix() -> None:
    for tool in ("nix-instantiate", "nix-store", "nix"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (apt-get install nix-bin)")


def require_busybox() -> None:
    if not (FIXTURES / ".busybox" / "bin" / "busybox").exists():
        missing("fixtures/.busybox is missing (run bash fixtures/prepare.sh)")


def _nix(argv) -> bytes:
    p = subprocess.run(argv, env=nix_env(), capture_output=True)
    if p.returncode != 0:
        # Nix is there but refused: that is a broken fixture, never a skip.
        pytest.fail(f"{' '.join(map(str, argv))} failed:\n{p.stderr.decode(errors='replace')}",
                    pytrace=False)
    return p.stdout


@functools.lru_cache(maxsize=None)
def _instantiate(nixfile: str, attr: str) -> str:
    out = _nix(["nix-instantiate", nixfile, "-A", attr]).decode()
    return out.strip().splitlines()[-1]


def instantiate(nixfile, attr: str) -> str:
    """`nix-instantiate NIXFILE -A ATTR` -> the .drv path (cached per session).

    NIXFILE may be relative to fixtures/ ("drv-examples.nix")."""
    require_nix()
    require_busybox()
    path = Path(nixfile)
    if not path.is_absolute():
        path = FIXTURES / path
    return _instantiate(str(path), attr)


def show_derivation(drv_path: str) -> bytes:
    """Raw stdout of Nix's `nix show-derivation DRV_PATH` (2.8 spelling)."""
    require_nix()
    return _nix(["nix", "--extra-experimental-features", "nix-command",
                 "show-derivation", drv_path])


def add_to_store(path) -> str:
    """`nix-store --add PATH` -> its store path (Nix validates a .drv on the way)."""
    require_nix()
    return _nix(["nix-store", "--add", str(path)]).decode().strip()


def run_nixrec(*args, **kw) -> subprocess.CompletedProcess:
    """Run the real console script; stdout/stderr as bytes."""
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing (run bash scripts/setup.sh)")
    return subprocess.run([str(NIXREC), *map(str, args)], capture_output=True,
                          env=kw.pop("env", None) or nix_env(), timeout=kw.pop("timeout", 60),
                          **kw)


def nixrec_json(verb, trace, *args):
    """`nixrec VERB TRACE --json` (why, deps) -> the parsed object; must exit 0."""
    import json
    p = run_nixrec(verb, trace, "--json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def events(trace, *args) -> list:
    """`nixrec events TRACE --json ARGS` -> the events as dicts; must exit 0."""
    import json
    p = run_nixrec("events", trace, "--json", *args)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def summary(trace) -> dict:
    """The summary of a complete trace (what the recorder closed it with)."""
    from nixrec.recorder.tracefile import open_trace
    with open_trace(str(trace)) as r:
        assert r.complete
        return r.summary


# The host toolchain, as the tests that build C with it expose it.
HOST_TREES = "/usr /bin /lib /lib64"


def locked_tree(tmp_path) -> str:
    """A host tree to bind at /locked: open/ (755; in it readable, 644, and
    unreadable, 600, root's) and secret/ (700, root's), which the build user
    may not search. -> the extra-sandbox-paths value."""
    top = tmp_path / "locked"
    (top / "open").mkdir(parents=True)
    (top / "secret").mkdir()
    (top / "secret" / "x").write_text("x")
    for name, mode in (("readable", 0o644), ("unreadable", 0o600)):
        (top / "open" / name).write_text(name)
        (top / "open" / name).chmod(mode)
    top.chmod(0o755)
    (top / "open").chmod(0o755)
    (top / "secret").chmod(0o700)
    return f"{HOST_TREES} /locked={top}"
