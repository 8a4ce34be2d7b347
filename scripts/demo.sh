#!/usr/bin/env bash
# `make demo` (after `make setup`): record the bundled failing build,
# fixtures/demo.nix, explain it with `nixrec why`, and write the same as one
# HTML page, out/demo.html (`nixrec report`).
#
# The build compiles a C program that includes <zlib.h> with the host's gcc,
# which the sandbox shows through extra-sandbox-paths, as a user trying "just
# use the system compiler" would; /usr/include is not among those paths, so
# the build fails. That failure is the point: exit 0 when the build failed and
# `why` explained it, non-zero when anything else broke (record exit code other
# than 1, or `why` failing).
set -uo pipefail
cd "$(dirname "$0")/.."

NIXREC=.venv/bin/nixrec
TRACE=out/demo.nixrec
# The compiler and the libraries it runs with. A trailing ? makes a path
# optional (hosts without /lib64 or /usr/libexec), as in Nix's setting.
SANDBOX_PATHS="/bin /lib /lib64? /usr/bin /usr/lib /usr/lib64? /usr/libexec?"

# As root with no daemon, NIX_REMOTE must be empty or Nix dials the socket.
[ "$(id -u)" = 0 ] && export NIX_REMOTE=

if [ ! -x "$NIXREC" ]; then
    echo "demo: $NIXREC is missing: run make setup" >&2
    exit 2
fi
# The build runs the host's tools from /usr/bin (its PATH is /usr/bin:/bin).
for tool in gcc make; do
    if [ ! -x "/usr/bin/$tool" ]; then
        echo "demo: the demo builds with the host's $tool, and there is no" \
             "/usr/bin/$tool: apt-get install gcc make" >&2
        exit 2
    fi
done

mkdir -p out
echo "demo: recording fixtures/demo.nix (a C program using <zlib.h>, built by the" \
     "host's gcc) in a Nix sandbox -> $TRACE"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$NIXREC" record fixtures/demo.nix --extra-sandbox-paths "$SANDBOX_PATHS" \
    -o "$TRACE" -q >/dev/null 2>"$log"
rc=$?
case $rc in
    1) ;;                      # the build failed, as it should: explain it
    0) echo "demo: the build succeeded, so there is nothing to explain" \
            "(is /usr/include in extra-sandbox-paths?)" >&2
       exit 1 ;;
    *) cat "$log" >&2
       echo "demo: nixrec record failed (exit code $rc)" >&2
       exit "$rc" ;;
esac
echo "demo: the build failed, as expected; nixrec why $TRACE:"
echo
"$NIXREC" why "$TRACE"
rc=$?
[ "$rc" = 0 ] || exit "$rc"
# The same explanation as one self-contained HTML page (nixrec report).
PAGE=out/demo.html
"$NIXREC" report "$TRACE" -o "$PAGE" 2>/dev/null || {
    echo "demo: nixrec report failed" >&2; exit 1; }
echo
echo "demo: the report as one page (timeline, dependencies, log): $PAGE (open it in a browser)"
