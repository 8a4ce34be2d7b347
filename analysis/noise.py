"""Failures every build has and shrugs off: never a suspect unless the log names them.

Each pattern names the program that makes the probe and why its failure is
expected (docs/analysis.md, "Noise"). Pure predicates of a path or an event.
"""

import functools
import re

from nixrec.analysis.deps import access_of

# Probes every libc or shell makes and shrugs off; a failure here is noise.
NOISE = re.compile(
    r"(/locale|locale\.alias|locale-archive|/gconv|\.mo$|/ld\.so\.|/etc/ld\.so|"
    r"nsswitch\.conf|/etc/localtime|/usr/share/zoneinfo|/terminfo|/etc/mtab|"
    r"/nscd|/etc/resolv\.conf|/etc/host\.conf|/etc/gai\.conf|/etc/services|"
    r"/etc/protocols|/\.inputrc|/etc/inputrc|/etc/profile|/\.profile|/\.ashrc|"
    r"/\.bashrc|/etc/bash\.bashrc|/etc/nix|/\.nix-|/dev/tty$|/etc/ssl|/etc/pki|"
    # busybox stats its suid-applet config at every start, found or not.
    r"/etc/busybox\.conf$|"
    # gcc's implicit `-include stdc-predef.h`, skipped in silence when missing.
    r"/stdc-predef\.h$|"
    # gcc: a precompiled X.gch before each header, a specs file in each lib dir.
    r"\.gch$|/(?:gcc|[^/]+-linux-gnu)/(?:[^/]+/)*specs$|"
    # coreutils and friends ask whether SELinux is configured.
    r"^/etc/selinux/|"
    # ttyname(): the builder's pty lives in the host's devpts, not the sandbox's.
    r"^/dev/pts/\d+$|"
    # the dynamic loader's hwcaps/tls subdirectories of each library directory
    # (glibc-hwcaps, and the legacy haswell, xeon_phi, avx512_1 ones).
    r"/lib[^/]*/(?:[^/]+-linux-gnu/)?(?:glibc-hwcaps|tls|x86_64|haswell|xeon_phi|"
    r"avx512_1)(?:/|$))")
# What a program reads while it formats a message (message catalogs, the
# locale, charset conversion, the terminal's description): never what the
# message is about.
MESSAGE_MACHINERY = re.compile(r"/locale|locale\.alias|\.mo$|/gconv|/terminfo|"
                               r"charset\.alias|/etc/localtime$")
# A shared library: a failed open of one that is found later is the loader's
# (or libtool's) search path, not a missing library.
SHARED_LIB = re.compile(r"\.so(?:\.\d+)*$")


def is_noise(path, facts, seq) -> bool:
    """A failure every build has and shrugs off (NOISE), or a library probe."""
    if not path:
        return False
    kind = path_noise(path)
    if kind is True:
        return True
    return kind == "lib" and facts.base_succeeded_later(path, seq)


# Asked once per candidate: a big build has few distinct paths but many failures.
@functools.lru_cache(maxsize=1 << 16)
def path_noise(path):
    """True (NOISE), "lib" (a shared library: noise if found later) or False."""
    if NOISE.search(path):
        return True
    return "lib" if SHARED_LIB.search(path) else False


# Directories GNU make searches for `include` directives, stat'ed at every start.
MAKE_INCLUDE_DIRS = frozenset(("/usr/gnu/include", "/usr/local/include", "/usr/include"))


def is_probe(ev, facts, cls):
    """A failed lookup that is how a tool decides what to do, not a problem."""
    return _checked_before_create(ev, facts) or _make_probe(ev, facts, cls)


def _make_probe(ev, facts, cls):
    """make stats every target (and RCS/SCCS) to decide what to rebuild, and its
    built-in include directories at start: ENOENT is an answer. Its PATH search
    for a recipe's command is not a probe (that is a missing command)."""
    q = facts.procs.get(ev.proc)
    if not q or q.argv0() not in ("make", "gmake") or ev.errno != "ENOENT" \
            or access_of(ev) != "stat" or not ev.path:
        return False
    return ev.path in MAKE_INCLUDE_DIRS or cls.category(ev.path) == "build"


def _checked_before_create(ev, facts):
    """A failed lookup of a path the build then made: cp, install and mkdir -p
    ask "is it there?" before they create it. The answer was no, as expected."""
    if ev.errno != "ENOENT" or not ev.path or access_of(ev) != "stat":
        return False
    return any(seq > ev.seq for seq, _ in facts.created.get(ev.path, ()))
