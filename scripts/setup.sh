#!/usr/bin/env bash
# One-time set-up for nixrec: system packages, the .venv, the fixture busybox.
# Called by `make setup` (and so by `make demo` and `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the recorder and its tests need:
#   nix-bin        real Nix 2.8, the oracle (nix-instantiate, nix-build, nix-store)
#   nix-setup-systemd  creates the nixbld build users real Nix builds with
#   busybox-static self-contained builders for the fixture derivations
#   strace         the peer the tests and benchmarks compare against
#   gcc make libc6-dev  the host toolchain the C fixtures (demo, GNU hello, the
#                  static helpers of fixtures/hostile and fixtures/failing) build with
#   tmux           a real terminal for the status line's test (tests/test_status.py)
#   chromium       a real browser (headless) the tests load `nixrec report`'s page in
#   the real-world corpus (fixtures/realworld: each case runs a host tool in
#   the sandbox, and needs the file the sandbox then hides from it):
#     cmake pkg-config python3-pip nodejs npm cargo golang-go git bzip2
#                    the tools (bzip2: tar xjf of zlib's tarball)
#     zlib1g-dev     /usr/include/zlib.h (cmake's find_package(ZLIB))
#     systemd        /usr/share/pkgconfig/systemd.pc (pkg-config's query)
#     tzdata         /usr/share/zoneinfo (the zoneinfo test)
#     ca-certificates  /etc/ssl/certs/ca-certificates.crt (the pip cases)
#   issue 21's cases of fixtures/realworld (labels.json "set": "issue21"):
#     netbase        /etc/services, /etc/protocols (the getservbyname and
#                    getprotobyname tests in python, perl, ruby)
#     perl libjson-perl  perl, pod2man, prove; JSON.pm in /usr/share/perl5
#     ruby ruby-webrick  ruby and minitest; webrick, a gem of
#                    /usr/share/rubygems-integration
#     openjdk-17-jdk-headless libcommons-cli-java  javac (through
#                    /etc/alternatives) and /usr/share/java/commons-cli.jar
#     dpkg-dev       /usr/share/dpkg/architecture.mk (a Makefile's include)
#     meson ninja-build  meson's dependency('systemd')
#     xsltproc docbook-xsl docbook-xml  DocBook man pages through /etc/xml/catalog
#     autoconf       configureDocbook's configure script (realworld/prepare.sh)
#     libblas3       libblas.so.3, a link into /etc/alternatives (-l:libblas.so.3,
#                    the loader); not libblas-dev, whose pkgconfig/blas.pc link
#                    into /etc/alternatives every pkg-config search then reads
#     gnupg          gpg making ~/.gnupg
#     media-types    /etc/mime.types (python's mimetypes)
#     locales        the de_DE source localedef compiles below (pyLocale)
PKGS="nix-bin nix-setup-systemd busybox-static strace gcc make libc6-dev
      cmake pkg-config python3-pip nodejs npm cargo golang-go git bzip2
      zlib1g-dev systemd tzdata ca-certificates chromium tmux
      netbase perl libjson-perl ruby ruby-webrick openjdk-17-jdk-headless
      libcommons-cli-java dpkg-dev meson ninja-build xsltproc docbook-xsl docbook-xml
      autoconf libblas3 gnupg media-types locales"
# A package whose program another one provides already: NodeSource's nodejs
# ships npm, and conflicts with Debian's npm package.
provided() {
    case $1 in npm) command -v npm >/dev/null ;; *) false ;; esac
}
missing=""
for p in $PKGS; do
    provided "$p" && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq $missing >/dev/null
    else
        echo "setup: missing Debian packages:$missing" >&2
        echo "setup: install them with: sudo apt-get install$missing" >&2
        exit 2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    # Debian's python3 makes venvs only with python3-venv (ensurepip).
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "setup: installing python3 python3-venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        else
            echo "setup: $PY cannot make a venv: sudo apt-get install python3-venv" >&2
            exit 2
        fi
    fi
    "$PY" -m venv .venv
fi
# Re-install only when pyproject.toml changed since the last install.
stamp=.venv/.nixrec-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # (this image's pip.conf names wheel folders that may not exist: quiet them)
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
        | { grep -v '^WARNING: Location' || true; }
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "setup: pip install failed" >&2; exit 1; }
    touch "$stamp"
fi

# The tracer's hot path in C (recorder/trace/fastpath.c with fp_state.c,
# fp_read.c and fastpath.h, loaded with ctypes): rebuilt when a source is
# newer. Without it nixrec runs its Python loop (slower).
so=recorder/trace/_fastpath.so
fp_src="recorder/trace/fastpath.c recorder/trace/fp_state.c recorder/trace/fp_read.c"
stale=0
[ -f "$so" ] || stale=1
for f in $fp_src recorder/trace/fastpath.h; do [ "$f" -nt "$so" ] && stale=1; done
if [ "$stale" = 1 ]; then
    gcc -O2 -Wall -shared -fPIC -o "$so.tmp" $fp_src \
        && mv "$so.tmp" "$so" \
        || echo "setup: could not build $so (gcc): the recorder runs without it, slower" >&2
fi

bash fixtures/prepare.sh
# fixtures/realworld's pyLocale needs the host to have de_DE.UTF-8 (in
# /usr/lib/locale/locale-archive), as a German developer's machine does.
if ! locale -a 2>/dev/null | grep -qx 'de_DE.utf8'; then
    if [ "$(id -u)" = 0 ]; then
        localedef -i de_DE -f UTF-8 de_DE.UTF-8 \
            || echo "setup: localedef de_DE.UTF-8 failed: the pyLocale case will not run" >&2
    else
        echo "setup: no de_DE.UTF-8 locale (sudo localedef -i de_DE -f UTF-8 de_DE.UTF-8): the pyLocale case will not run" >&2
    fi
fi
# The release tarballs of fixtures/realworld's prebuiltLoader, loaderBlas and
# configureDocbook cases (needs ../shared/corpus; the tests say so when missing).
bash fixtures/realworld/prepare.sh || echo "setup: fixtures/realworld/prepare.sh failed: the prebuiltLoader, loaderBlas and configureDocbook cases will not run" >&2
