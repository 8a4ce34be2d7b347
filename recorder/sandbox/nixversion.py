"""Which Nix's sandbox nixrec imitates: the version of the host's nix-build
(or `--nix-version X.Y`), and what differs between the versions a build can
see. One table, ROWS; docs/sandbox.md "Which Nix" shows it with the Nix
source line behind each row.

nixrec is checked against two real Nix builds (tests/test_record.py,
tests/test_nix_versions.py; tests/nixoracle.py runs them):
Debian 12's 2.8.0 and Debian 13's 2.26.3. Any other version follows the
checked one whose rows it shares (`follow`), with a warning from `record`.
"""

import functools
import re
import shutil
import subprocess

CHECKED = ("2.8", "2.26")
# Traces from before issue 24 recorded no version: they were made as 2.8.
DEFAULT = "2.8"

# (key, first version with the newer behaviour, what a build sees before / since,
#  the source). Keys are what the plan records (SandboxPlan.nix_features).
ROWS = (
    ("etc_readonly", (2, 14),
     "/etc is 0755 (drwxr-xr-x)", "/etc is 0555 (dr-xr-xr-x)",
     "2.26.3 src/libstore/unix/build/local-derivation-goal.cc:1991-1993 "
     "`chmod_(chrootRootDir + \"/etc\", 0555)`; absent from 2.8.0 "
     "src/libstore/build/local-derivation-goal.cc"),
    ("fod_ca_bundle", (2, 16),
     "a fixed-output build gets no CA bundle",
     "a fixed-output build gets ssl-cert-file (default /etc/ssl/certs/ca-certificates.crt, "
     "when it exists) bound at /etc/ssl/certs/ca-certificates.crt",
     "2.26.3 local-derivation-goal.cc:1916-1919 `pathsInChroot.try_emplace("
     "\"/etc/ssl/certs/ca-certificates.crt\", canonPath(caFile, true), true)`; "
     "globals.cc:238 getDefaultSSLCertFile; absent from 2.8.0"),
    ("attrs_files_in_sandbox", (2, 15),
     "NIX_ATTRS_SH_FILE/NIX_ATTRS_JSON_FILE name the host's temporary directory "
     "(/tmp/nix-build-NAME.drv-0/.attrs.sh), which the build cannot see",
     "they name /build/.attrs.sh and /build/.attrs.json",
     "2.8.0 local-derivation-goal.cc:1098 `tmpDir + \"/.attrs.sh\"`; 2.26.3 "
     "local-derivation-goal.cc:1269 `tmpDirInSandbox + \"/.attrs.sh\"`"),
    ("xattr_read_refused", (2, 24),
     "getxattr, lgetxattr, fgetxattr work",
     "they fail with ENOTSUP, as setxattr always did (listxattr still works)",
     "2.26.3 local-derivation-goal.cc:1761-1763 `SCMP_ACT_ERRNO(ENOTSUP), "
     "SCMP_SYS(getxattr)`, lgetxattr, fgetxattr; 2.8.0 :1550 has the set forms only"),
)
FEATURES = tuple(r[0] for r in ROWS)


def parse(text: str):
    """"2.26.3", "2.8", "nix-build (Nix) 2.8.0" -> (2, 26), (2, 8), (2, 8);
    None if no X.Y is in it."""
    m = re.search(r"(\d+)\.(\d+)(?:\.\d+)?", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


@functools.lru_cache(maxsize=1)
def host_version():
    """The version of the host's nix-build ("2.8.0"), or None when there is none."""
    exe = shutil.which("nix-build")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\d+\.\d+(?:\.\d+)?\S*", out)
    return m.group(0) if m else None


def features(version) -> dict:
    """key -> True where `version` ((major, minor)) has the newer behaviour."""
    return {key: version >= since for key, since, *_ in ROWS}


def follow(version_text):
    """-> (the checked version followed, "2.8" or "2.26"; exact: was it one of them).
    A version follows the checked one whose rows it shares; one between them
    (2.14-2.23) or past 2.26 follows 2.26, the nearest with its /etc rule."""
    v = parse(version_text)
    if v is None:
        return DEFAULT, False
    exact = f"{v[0]}.{v[1]}" in CHECKED
    same = [c for c in CHECKED if features(parse(c)) == features(v)]
    if same:
        return same[0], exact
    return CHECKED[-1] if v > parse(CHECKED[0]) else CHECKED[0], exact


def plan_features(followed: str) -> dict:
    """The rows a plan records for the version it follows."""
    return features(parse(followed))
