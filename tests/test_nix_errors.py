"""What Nix says, said in one line (issue 23): a .nix file's syntax error
gives Nix's `error:` line and where, not the caret under it; a user without
the daemon's socket is told what to do."""

import os
import shutil
import subprocess
import tempfile

import pytest

from nixfix import missing, require_nix, run_nixrec
from nixrec.recorder.errors import EXIT_BAD_INPUT, EXIT_HOST, HostUnsupported
from nixrec.recorder.nix import store


@pytest.fixture
def public_dir():
    """A directory any user can read (pytest's tmp_path is root's, 0700)."""
    d = tempfile.mkdtemp(prefix="nixrec-nixerr-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def test_syntax_error_gives_nix_error_line(public_dir):
    require_nix()
    nix = os.path.join(public_dir, "syn.nix")
    with open(nix, "w") as f:
        f.write("{ a = 1 }\n")
    p = run_nixrec("record", nix)
    lines = p.stderr.decode().splitlines()
    assert p.returncode == EXIT_BAD_INPUT, lines
    assert lines == [f"nixrec: cannot instantiate {nix}: syntax error, unexpected '}}', "
                     f"expecting ';' (at {nix}:1:9)"], lines


def test_nix_error_picks_the_error_line():
    # Nix 2.8's output for the file above, as printed.
    out = ("error: syntax error, unexpected '}', expecting ';'\n\n"
           "       at /tmp/syn.nix:1:9:\n\n            1| { a = 1 }\n"
           "             |         ^\n")
    assert store.nix_error(out) == "syntax error, unexpected '}', expecting ';' " \
                                   "(at /tmp/syn.nix:1:9)"
    assert store.nix_error("warning: x\nsomething broke\n") == "something broke"
    assert store.nix_error("") is None


def test_no_daemon_socket_says_what_to_do(public_dir, monkeypatch):
    """Real Nix run as `nobody` (no access to the daemon's socket), through
    nixrec's own call into Nix."""
    require_nix()
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        missing("needs root and setpriv to run Nix as another user")
    nix = os.path.join(public_dir, "x.nix")
    with open(nix, "w") as f:
        f.write('derivation { name = "x"; system = "x86_64-linux"; builder = "/bin/sh"; }\n')
    os.chmod(nix, 0o644)
    real_run = subprocess.run

    def as_nobody(argv, env=None, **kw):
        env = dict(env or os.environ, HOME=public_dir)
        env.pop("NIX_REMOTE", None)             # a user's default: the daemon
        return real_run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         *argv], env=env, **kw)
    monkeypatch.setattr(store.subprocess, "run", as_nobody)
    monkeypatch.setattr(store.os, "geteuid", lambda: 65534)
    with pytest.raises(HostUnsupported) as e:
        store.instantiate(nix)
    msg = str(e.value)
    assert e.value.exit_code == EXIT_HOST
    assert "\n" not in msg
    assert msg.startswith(f"cannot instantiate {nix}: ") and "daemon-socket" in msg, msg
    assert "start it (systemctl start nix-daemon)" in msg and "pass a .drv path" in msg, msg
