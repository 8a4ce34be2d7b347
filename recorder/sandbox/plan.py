"""The sandbox plan: plain data, everything the sandbox will contain and how
the builder starts, as the Nix it follows makes it (../shared/reference/nix-sandbox.md
§2; the versions: nixversion.py), shaped by the host's nix.conf as Nix's is.

It is stored in the trace header, so replay rebuilds the same sandbox from the
trace alone. The steps that carry it out are `steps.py`.
"""

import functools
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess

from nixrec.recorder.nix import store
from nixrec.recorder.sandbox import nixversion

BUILD_DIR = "/build"
HOME = "/homeless-shelter"
# As root, the sandbox's uid 1000 / gid 100 map to this host id, which owns
# nothing on the host, as Nix's build users do (nixbld1...). Mapped to root
# instead, a builder without capabilities still owns every root-owned host file
# it can see (/proc/sys/kernel/core_pattern, the bound /dev nodes): the hole
# Nix has as root with build-users-group = "". The number is the last id of
# Nix's own auto-allocate-uids range (872415232 + 65535), never a login user.
ROOT_BUILD_ID = 872480767
STORE_DIR = "/nix/store"
SANDBOX_UID, SANDBOX_GID = 1000, 100

# §2.4: the /etc files of a sandboxed build, byte for byte as 2.8 and 2.26
# write them; the home directory is sandbox-build-dir.
ETC_PASSWD_FMT = ("root:x:0:0:Nix build user:{build}:/noshell\n"
                  "nixbld:x:1000:100:Nix build user:{build}:/noshell\n"
                  "nobody:x:65534:65534:Nobody:/:/noshell\n")
ETC_PASSWD = ETC_PASSWD_FMT.format(build=BUILD_DIR)
ETC_GROUP = "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n"
ETC_HOSTS = "127.0.0.1 localhost\n::1 localhost\n"
ETC_NSSWITCH_FOD = "hosts: files dns\nservices: files\n"

# §2.4 /dev: bind mounts of these host devices, plus symlinks.
DEV_NODES = ("full", "null", "random", "tty", "urandom", "zero")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
             "ptmx": "/dev/pts/ptmx"}

class SandboxPlan:
    """What the sandbox holds and how the builder starts. Plain data (to_dict)."""

    FIELDS = ("drv_path", "name", "builder", "argv", "env", "cwd", "uid", "gid",
              "host_uid", "host_gid",
              "hostname", "domainname", "network", "fixed_output", "inputs",
              "sandbox_paths", "build_files", "etc_files", "etc_binds", "outputs",
              "no_sandbox", "cores", "dev_shm_size", "store_dir", "build_dir", "home",
              "uname26",
              # Issue 24: the Nix version followed ("2.8", "2.26"), the host's
              # (None: none installed), what differs by it (nixversion.ROWS),
              # and /dev/kvm (system-features). Absent: a trace made as 2.8.
              "nix_version", "host_nix_version", "nix_features", "kvm")

    def __init__(self, **kw):
        for f in self.FIELDS:
            setattr(self, f, kw.get(f))

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "SandboxPlan":
        return cls(**{f: d.get(f) for f in cls.FIELDS})


# --- the plan -----------------------------------------------------------------------

def parse_sandbox_paths(text: str) -> list:
    """`sandbox-paths` syntax: `target=source` or `path`; a trailing `?` makes it optional."""
    out = []
    for item in (text or "").split():
        optional = item.endswith("?")
        if optional:
            item = item[:-1]
        target, _, source = item.partition("=")
        out.append({"target": target, "source": source or target, "optional": optional})
    return out


NIX_CONF_DEFAULTS = {"sandbox-paths": "", "extra-sandbox-paths": "", "cores": None,
                     "impersonate-linux-26": "false", "sandbox-build-dir": BUILD_DIR,
                     "sandbox-dev-shm-size": "50%", "system-features": None,
                     "extra-system-features": "", "build-users-group": None,
                     "auto-allocate-uids": "false", "ssl-cert-file": None}
# Old names Nix still reads (globals.hh's aliases).
NIX_CONF_ALIASES = {"build-sandbox-paths": "sandbox-paths", "build-chroot-dirs": "sandbox-paths",
                    "build-cores": "cores",
                    "build-impersonate-linux-26": "impersonate-linux-26",
                    "build-extra-sandbox-paths": "extra-sandbox-paths",
                    "build-extra-chroot-dirs": "extra-sandbox-paths"}


def nix_conf_path() -> str:
    """Where Nix reads its settings: $NIX_CONF_DIR/nix.conf, else /etc/nix/nix.conf."""
    return os.path.join(os.environ.get("NIX_CONF_DIR") or "/etc/nix", "nix.conf")


def read_nix_conf(path=None) -> dict:
    """The sandbox-related settings of nix.conf (later lines win, extra- appends)."""
    conf = dict(NIX_CONF_DEFAULTS)
    try:
        lines = open(path or nix_conf_path(), encoding="utf-8",
                     errors="replace").read().splitlines()
    except OSError:
        return conf
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        key, _, val = (s.strip() for s in line.partition("="))
        key = NIX_CONF_ALIASES.get(key, key)
        if key.startswith("extra-") and key in conf:
            conf[key] = (conf[key] + " " + val).strip()
        elif key in conf:
            conf[key] = val
    return conf


def host_nix_conf() -> dict:
    """The settings the host's Nix builds with, as `nix show-config` prints
    them: nix.conf ($NIX_CONF_DIR), NIX_CONFIG and the defaults compiled in,
    such as Debian 13's sandbox-paths `/bin/sh=/usr/bin/bash-static`, which
    is in no nix.conf. Without Nix: nix.conf alone."""
    conf = read_nix_conf()
    text = _show_config(os.environ.get("NIX_CONF_DIR"), os.environ.get("NIX_CONFIG"))
    # A setting this Nix does not know (2.8 has no ssl-cert-file) keeps its
    # nix.conf value: it shapes the sandbox of the version followed.
    for line in (text or "").splitlines():
        key, eq, val = (s.strip() for s in line.partition("="))
        if eq and key in conf:
            conf[key] = val
    return conf


@functools.lru_cache(maxsize=4)
def _show_config(conf_dir, nix_config):
    exe = shutil.which("nix")
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, "--extra-experimental-features", "nix-command", "show-config"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def ca_file(conf: dict):
    """ssl-cert-file as Nix resolves it (globals.cc: NIX_SSL_CERT_FILE or
    SSL_CERT_FILE, else the first of its defaults that exists), its links
    followed (canonPath(caFile, true)); None when there is none."""
    ca = os.environ.get("NIX_SSL_CERT_FILE") or os.environ.get("SSL_CERT_FILE") \
        or conf.get("ssl-cert-file")
    if ca is None:
        ca = next((f for f in (CA_BUNDLE, "/nix/var/nix/profiles/default/etc/ssl/certs/"
                               "ca-bundle.crt") if os.access(f, os.R_OK)), "")
    return os.path.realpath(ca) if ca and os.path.exists(ca) else None


def kvm_wanted(conf: dict) -> bool:
    """Is /dev/kvm bound in? Nix binds it when "kvm" is in system-features and
    /dev/kvm exists; the default system-features has kvm when /dev/kvm is
    usable (globals.cc getDefaultSystemFeatures)."""
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    feats = conf.get("system-features")
    feats = ("kvm" if usable else "") if feats is None else feats
    feats = (feats + " " + (conf.get("extra-system-features") or "")).split()
    return "kvm" in feats and os.path.exists("/dev/kvm")


def build_env(drv, drv_path, cores, build_dir, fixed_output, attrs_in_sandbox=False):
    """§2.6: the builder's environment, in initEnv's order (later wins), plus the
    files it implies in the build directory (passAsFile, structured attrs).
    `build_dir` is /build in the sandbox, the host path without one.
    -> (env, files)."""
    env, files = {}, {}
    env["PATH"] = "/path-not-set"
    env["HOME"] = HOME
    env["NIX_STORE"] = STORE_DIR
    env["NIX_BUILD_CORES"] = str(cores)
    attrs = drv.structured_attrs
    if attrs is None:
        pass_as_file = set(drv.pass_as_file)
        for k, v in drv.env.items():
            if k in pass_as_file:
                fn = ".attr-" + store.nix32(hashlib.sha256(k.encode()).digest())
                files[fn] = v
                env[k + "Path"] = f"{build_dir}/{fn}"
            else:
                env[k] = v
    else:
        full = dict(attrs)
        full["outputs"] = {name: o.path for name, o in drv.outputs.items()}
        files[".attrs.json"] = json.dumps(full, separators=(",", ":"))
        files[".attrs.sh"] = attrs_sh(full)
        # 2.8-2.14 bug kept on purpose: these name the *host* directory
        # (nix-sandbox.md §2.6 step 5), which does not exist in the sandbox.
        # Since 2.15 they name the build directory (nixversion.ROWS).
        nix_top = build_dir if attrs_in_sandbox else \
            f"/tmp/nix-build-{os.path.basename(drv_path)[33:]}-0"
        env["NIX_ATTRS_SH_FILE"] = nix_top + "/.attrs.sh"
        env["NIX_ATTRS_JSON_FILE"] = nix_top + "/.attrs.json"
    for k in ("NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"):
        env[k] = build_dir
    if fixed_output:
        env["NIX_OUTPUT_CHECKED"] = "1"
        for name in (drv.env.get("impureEnvVars") or "").split():
            env[name] = os.environ.get(name, "")
    env["NIX_LOG_FD"] = "2"
    env["TERM"] = "xterm-256color"
    return env, files


_SH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _sh_simple(v):
    """writeStructuredAttrsShell's handleSimpleType: None for nested values."""
    if isinstance(v, bool):
        return "1" if v else ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "'\\''") + "'"
    if v is None:
        return "''"
    return None


def attrs_sh(attrs: dict) -> str:
    """.attrs.sh: `declare` lines for the top-level keys that are shell names."""
    out = []
    for key, val in attrs.items():
        if not _SH_NAME.match(key):
            continue
        s = _sh_simple(val)
        if s is not None:
            out.append(f"declare {key}={s}\n")
        elif isinstance(val, list):
            items = [_sh_simple(x) for x in val]
            if all(i is not None for i in items):
                out.append(f"declare -a {key}=(" + "".join(i + " " for i in items) + ")\n")
        elif isinstance(val, dict):
            items = {k: _sh_simple(x) for k, x in val.items()}
            if all(i is not None for i in items.values()):
                body = "".join(f"[{_sh_simple(k)}]={v} " for k, v in items.items())
                out.append(f"declare -A {key}=({body})\n")
    return "".join(out)


def make_plan(drv, drv_path, inputs, cores=None, extra_sandbox_paths="",
              no_sandbox=False, nix_conf=None, host_build_dir=None,
              impersonate_linux_26=None, nix_version=None,
              host_nix_version=None) -> SandboxPlan:
    """Everything the sandbox will be, from the derivation and the input closure.

    nix_version: the checked Nix whose sandbox to make ("2.8", "2.26";
    nixversion.follow chose it); None: 2.8. nix_conf: the host's settings
    (read_nix_conf), which shape it as they shape Nix's.

    no_sandbox: as Nix's `sandbox = false` would run it: the host filesystem
    visible (read-only here), the build in `host_build_dir` (a host path, as
    Nix uses its temporary directory), the host network and hostname; still
    uid 1000 and PID 1 of its own PID namespace, so the trace stays whole.
    """
    conf = nix_conf if nix_conf is not None else host_nix_conf()
    nix_version = nix_version or nixversion.DEFAULT
    feats = nixversion.plan_features(nix_version)
    if impersonate_linux_26 is None:
        impersonate_linux_26 = conf.get("impersonate-linux-26") == "true"
    if cores is None:
        cores = int(conf["cores"]) if conf.get("cores") not in (None, "") else os.cpu_count()
    fixed = drv.is_fixed_output
    if no_sandbox and not host_build_dir:
        raise ValueError("no_sandbox needs the host build directory")
    sandbox_build = conf.get("sandbox-build-dir") or BUILD_DIR
    if sandbox_build.startswith(STORE_DIR):
        raise ValueError("`sandbox-build-dir` must not contain the storeDir")
    build_dir = host_build_dir if no_sandbox else sandbox_build
    env, files = build_env(drv, drv_path, cores, build_dir, fixed,
                           attrs_in_sandbox=feats["attrs_files_in_sandbox"])
    spaths = parse_sandbox_paths(conf.get("sandbox-paths", "")) + parse_sandbox_paths(
        conf.get("extra-sandbox-paths", "")) + parse_sandbox_paths(extra_sandbox_paths)
    etc_files = {"passwd": ETC_PASSWD_FMT.format(build=sandbox_build), "group": ETC_GROUP}
    etc_binds = []
    if fixed:
        # §2.4: fixed-output builds share the host network and see its resolver files.
        etc_files["nsswitch.conf"] = ETC_NSSWITCH_FOD
        for f in ("resolv.conf", "services", "hosts"):
            if os.path.exists("/etc/" + f):
                etc_binds.append(f)
        ca = ca_file(conf)
        if feats["fod_ca_bundle"] and ca:
            spaths.append({"target": CA_BUNDLE, "source": ca, "optional": True})
    else:
        etc_files["hosts"] = ETC_HOSTS
    hostname, domainname, network = "localhost", "(none)", not fixed
    if no_sandbox:
        hostname, domainname, network = socket.gethostname(), _host_domainname(), False
        spaths, etc_files, etc_binds = [], {}, []
    host_uid, host_gid = host_ids()
    return SandboxPlan(
        drv_path=drv_path, name=drv.env.get("name", os.path.basename(drv_path)),
        builder=drv.builder, argv=[os.path.basename(drv.builder)] + list(drv.args),
        env=sorted(env.items()), cwd=build_dir, uid=SANDBOX_UID, gid=SANDBOX_GID,
        host_uid=host_uid, host_gid=host_gid,
        hostname=hostname, domainname=domainname, network=network, fixed_output=fixed,
        inputs=sorted(inputs), sandbox_paths=spaths, build_files=files,
        etc_files=etc_files, etc_binds=etc_binds,
        outputs={name: o.path for name, o in drv.outputs.items()},
        no_sandbox=no_sandbox, cores=cores,
        dev_shm_size=conf.get("sandbox-dev-shm-size") or "50%",
        store_dir=STORE_DIR, build_dir=build_dir, home=HOME,
        # runChild: UNAME26 for x86_64-linux and i686-linux builds only.
        uname26=bool(impersonate_linux_26) and drv.system in ("x86_64-linux", "i686-linux"),
        nix_version=nix_version, host_nix_version=host_nix_version,
        nix_features=feats, kvm=kvm_wanted(conf))


def features_of(plan) -> dict:
    """The version rows a plan follows (a trace from before issue 24: 2.8's)."""
    return plan.nix_features or nixversion.plan_features(plan.nix_version or nixversion.DEFAULT)


def host_ids():
    """The host uid/gid the sandbox's nixbld maps to: an id owning nothing when
    nixrec runs as root (like Nix's build users), else the caller's own."""
    if os.geteuid() == 0:
        return ROOT_BUILD_ID, ROOT_BUILD_ID
    return os.getuid(), os.getgid()


def _host_domainname():
    try:
        with open("/proc/sys/kernel/domainname") as f:
            return f.read().strip()
    except OSError:
        return "(none)"
