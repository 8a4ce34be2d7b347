"""Every real Nix the tests compare nixrec with (issue 24).

- "host": the host's own nix-build (Debian 12: 2.8.0; Debian 13: 2.26.x);
- "root": Debian 13's nix-bin, 2.26.3, in the debootstrapped root that
  scripts/nix-root.sh makes once per machine and enters with unshare + pivot_root.

Each runs as a multi-user install builds: as root with build users (the nixbld
group and nixbld1-10), never `build-users-group = ''`, with the sandbox on and
`sandbox-fallback = false`, so a sandbox that cannot be made fails loudly.

    @pytest.mark.parametrize("oracle", ORACLES, indirect=True)   (conftest's fixture)
    drv = oracle.instantiate("record.nix", "probe"); oracle.build(drv); oracle.log(drv)
    run_nixrec("record", drv, *oracle.nixrec_args(tmp_path))

The root's store is its own: a fixture instantiated there has the same .drv
path as on the host (same store dir, same sources), so nixrec (on the host)
and the root's Nix build the very same derivation.
"""

import functools
import os
import shutil
import subprocess

from nixfix import FIXTURES, REPO, instantiate as host_instantiate, missing, nix_env

ORACLES = ("host", "root")
SCRIPT = REPO / "scripts" / "nix-root.sh"
OPTIONS = ["--option", "sandbox", "true", "--option", "sandbox-fallback", "false",
           "--option", "build-users-group", "nixbld", "--option", "substituters", ""]
# Settings that shape the sandbox, as the root's Nix reports them (the ones
# compiled in, such as Debian 13's /bin/sh, are in no nix.conf).
SHAPING = ("sandbox-paths", "sandbox-build-dir", "sandbox-dev-shm-size", "system-features",
           "ssl-cert-file")


class Oracle:
    def __init__(self, name, prefix, root=None):
        self.name = name
        self.prefix = prefix          # argv that runs a command where this Nix is
        self.root = root              # the root's host path ("root" only)

    def run(self, argv, check=True, **kw) -> subprocess.CompletedProcess:
        p = subprocess.run(self.prefix + [str(a) for a in argv], env=nix_env(),
                           capture_output=True, cwd=REPO, **kw)
        if check and p.returncode != 0:
            import pytest
            pytest.fail(f"{self.name}: {' '.join(map(str, argv))} failed:\n"
                        f"{p.stderr.decode(errors='replace')[-3000:]}", pytrace=False)
        return p

    @functools.cached_property
    def version(self) -> str:
        return self.run(["nix-build", "--version"]).stdout.decode().split()[-1]

    def instantiate(self, nixfile, attr) -> str:
        drv = host_instantiate(nixfile, attr)
        if self.root is not None:
            path = FIXTURES / nixfile
            got = self.run(["nix-instantiate", path, "-A", attr]).stdout.decode().split()[-1]
            assert got == drv, f"the root instantiated {attr} as {got}, the host as {drv}"
        return drv

    def build(self, drv, *options, check=True) -> subprocess.CompletedProcess:
        """nix-build DRV (with --check when its output is valid already, so it
        is built again and its log is this build's)."""
        outs = self.run(["nix-store", "-q", "--outputs", drv]).stdout.decode().split()
        valid = self.run(["nix-store", "--check-validity", *outs], check=False).returncode == 0
        argv = ["nix-build", *OPTIONS, *options, drv, "--no-out-link"]
        return self.run(argv + (["--check"] if valid else []), check=check, timeout=300)

    def log(self, drv) -> bytes:
        return self.run(["nix-store", "--read-log", drv]).stdout

    def out_path(self, path) -> str:
        """Where the host sees a store path of this Nix."""
        return path if self.root is None else self.root + path

    def nixrec_args(self, tmp_path) -> list:
        """`nixrec record` arguments that make the sandbox this Nix makes: its
        version, and its sandbox-shaping settings in a nix.conf (NIX_CONF_DIR:
        see nixrec_env) whose sources are the root's files."""
        return ["--nix-version", self.version]

    def nixrec_env(self, tmp_path) -> dict:
        env = nix_env()
        if self.root is None:
            return env
        conf = tmp_path / "oracle-conf"
        conf.mkdir(exist_ok=True)
        lines = []
        for key, val in self.settings().items():
            if key == "sandbox-paths":
                val = " ".join(self._rooted(item) for item in val.split())
            elif key == "ssl-cert-file" and val:
                val = self.root + val
            lines.append(f"{key} = {val}\n")
        (conf / "nix.conf").write_text("".join(lines))
        env["NIX_CONF_DIR"] = str(conf)
        # As the root's Nix runs (env -i): its ssl-cert-file, not the host's.
        for var in ("NIX_SSL_CERT_FILE", "SSL_CERT_FILE"):
            env.pop(var, None)
        return env

    def _rooted(self, item):
        opt = "?" if item.endswith("?") else ""
        item = item.rstrip("?")
        target, eq, source = item.partition("=")
        source = source if eq else target
        if not source.startswith("/nix/store/"):
            source = self.root + source
        return f"{target}={source}{opt}"

    @functools.lru_cache(maxsize=None)
    def settings(self) -> dict:
        out = self.run(["nix", "--extra-experimental-features", "nix-command",
                        "show-config"]).stdout.decode()
        found = {}
        for line in out.splitlines():
            key, _, val = (s.strip() for s in line.partition("="))
            if key in SHAPING:
                found[key] = val
        return found


@functools.lru_cache(maxsize=None)
def _root_path():
    """-> (the root's path, None) or (None, why it cannot be made)."""
    if os.geteuid() != 0:
        return None, "the Nix 2.26 root needs root (debootstrap, unshare, pivot_root)"
    if shutil.which("unshare") is None:
        return None, "unshare is missing (util-linux)"
    p = subprocess.run(["bash", str(SCRIPT), "make"], capture_output=True, text=True,
                       timeout=1200)
    if p.returncode != 0:
        return None, ("the Nix 2.26 root could not be made (scripts/nix-root.sh make): "
                      + (p.stderr.strip().splitlines() or ["?"])[-1])
    return p.stdout.strip().splitlines()[-1], None


def oracle(name) -> Oracle:
    """The named Nix, or a skip (a failure under CI=true) saying why it is missing."""
    if name == "host":
        if shutil.which("nix-build") is None:
            missing("nix-build is not installed (apt-get install nix-bin)")
        return Oracle("host", [])
    root, why = _root_path()
    if root is None:
        missing(why)
    return Oracle("root", ["bash", str(SCRIPT), "run"], root=root)
