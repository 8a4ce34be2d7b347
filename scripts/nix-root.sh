#!/usr/bin/env bash
# A second real Nix for the tests to compare nixrec with: Debian 13 (trixie)'s
# nix-bin, 2.26.x, in a debootstrapped root. A test oracle, never a dependency
# of nixrec (docs/sandbox.md "Which Nix"; issue 24).
#
#   scripts/nix-root.sh make          make the root once per machine (~2-4 min), print its path
#   scripts/nix-root.sh path          print its path if it is made, else exit 1
#   scripts/nix-root.sh run CMD...    run CMD in it (as root), the repo at the same path
#
# The root is cached in $NIXREC_NIX_ROOT (default /var/cache/nixrec-oracle/trixie),
# so it survives test runs; making it takes a lock (flock), so two test runs
# that want it at once make it once. A half-made root is never used: it is
# built beside the cache and renamed into place when whole.
#
# `run` enters it with `unshare -m -p` and pivot_root, never chroot: in a
# chroot the kernel refuses new user namespaces, and Nix's sandbox-fallback
# then builds without a sandbox and says nothing. Callers pass
# `--option sandbox-fallback false` to every build all the same.
# The new PID namespace keeps Nix's kill(-1) as a build user (it clears
# leftovers of the uid it picked) away from the host's processes.
set -euo pipefail

ROOT=${NIXREC_NIX_ROOT:-/var/cache/nixrec-oracle/trixie}
SUITE=trixie
MIRROR=${NIXREC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "nix-root: $*" >&2; exit 2; }

# The root's build users get ids no host user has (nixbld1-10 = BASE+1..10,
# group BASE): Nix kills every process of a build user's uid before it
# builds, and the host's Nix, whose nixbld ids Debian numbers from 999 down
# as Debian 13's numbers the root's, would otherwise kill a build of the other.
UID_BASE=${NIXREC_NIX_ROOT_UID_BASE:-30000}
MARK="nixrec-nix-root 2 uids=$UID_BASE"

made() { [ -x "$ROOT/usr/bin/nix-build" ] && [ "$(cat "$ROOT/.nixrec-made" 2>/dev/null)" = "$MARK" ]; }

make_root() {
    if made; then echo "$ROOT"; return; fi
    [ "$(id -u)" = 0 ] || die "making the Nix 2.26 root needs root (debootstrap)"
    mkdir -p "$(dirname "$ROOT")"
    exec 9>>"$ROOT.lock"
    flock 9
    if made; then echo "$ROOT"; return; fi
    if ! command -v debootstrap >/dev/null; then
        command -v apt-get >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
        echo "nix-root: installing debootstrap" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -qq debootstrap >/dev/null; } \
            || die "could not install debootstrap"
    fi
    local tmp="$ROOT.part"
    rm -rf "$tmp"
    local t0=$SECONDS
    echo "nix-root: debootstrap --variant=minbase $SUITE $tmp" >&2
    debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$ROOT.log" 2>&1 \
        || die "debootstrap failed (see $ROOT.log)"
    # nix-bin's postinst makes the nixbld group and nixbld1-10, as a
    # multi-user install has them.
    echo "nix-root: apt-get install nix-bin (in the root)" >&2
    enter "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin \
        >>"$ROOT.log" 2>&1 || die "apt-get install nix-bin failed in the root (see $ROOT.log)"
    enter "$tmp" apt-get clean >>"$ROOT.log" 2>&1 || true
    local i
    for i in $(seq 0 10); do
        ! getent passwd $((UID_BASE + i)) >/dev/null \
            || die "uid $((UID_BASE + i)) is a host user's: set NIXREC_NIX_ROOT_UID_BASE"
    done
    getent group "$UID_BASE" >/dev/null && die "gid $UID_BASE is a host group's: set NIXREC_NIX_ROOT_UID_BASE"
    enter "$tmp" groupmod -g "$UID_BASE" nixbld >>"$ROOT.log" 2>&1 \
        || die "could not renumber the root's nixbld group (see $ROOT.log)"
    for i in $(seq 1 10); do
        enter "$tmp" usermod -u $((UID_BASE + i)) -g "$UID_BASE" "nixbld$i" >>"$ROOT.log" 2>&1 \
            || die "could not renumber the root's nixbld$i (see $ROOT.log)"
    done
    echo "$MARK" >"$tmp/.nixrec-made"
    rm -rf "$ROOT"
    mv "$tmp" "$ROOT"
    echo "nix-root: made $ROOT in $((SECONDS - t0)) s ($(enter "$ROOT" nix-build --version))" >&2
    echo "$ROOT"
}

# enter DIR CMD...: run CMD with DIR as / (a new mount and PID namespace).
enter() {
    local dir=$1; shift
    mkdir -p "$dir$REPO" "$dir/proc" "$dir/dev" "$dir/sys" "$dir/.old-root"
    # The host's resolver, for apt-get in the root while it is being made.
    cp -f /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
    unshare -m -p -f --propagation private -- /bin/sh -eu -c '
        dir=$1 repo=$2 cwd=$3; shift 3
        mount --bind "$dir" "$dir"
        mount -t proc proc "$dir/proc"
        mount --rbind /dev "$dir/dev"
        mount -t sysfs sysfs "$dir/sys"
        mount --bind "$repo" "$dir$repo"
        # The shared corpus beside the clone (../shared), where tests reach it.
        if [ -d "$repo/../shared" ]; then
            shared=$(cd "$repo/../shared" && pwd -P)
            mkdir -p "$dir$shared" && mount --bind "$shared" "$dir$shared"
        fi
        cd "$dir"
        pivot_root . .old-root
        umount -l /.old-root
        cd "$cwd" 2>/dev/null || cd /
        exec "$@"' nix-root "$dir" "$REPO" "$PWD" \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root NIX_REMOTE= "$@"
}

case ${1:-} in
    make) make_root ;;
    path) made && echo "$ROOT" ;;
    run)
        shift
        [ "$(id -u)" = 0 ] || die "running the Nix 2.26 root needs root (unshare, pivot_root)"
        # Shared: a `make` that replaces an outdated root waits for us.
        made || die "the Nix 2.26 root is not made (scripts/nix-root.sh make)"
        exec 9>>"$ROOT.lock"
        flock -s 9
        made || die "the Nix 2.26 root is not made (scripts/nix-root.sh make)"
        enter "$ROOT" "$@" ;;
    *) echo "usage: $0 make | path | run CMD..." >&2; exit 2 ;;
esac
