"""File searches that failed everywhere: which directory the sandbox hid.

Build tools look for one file name in a list of directories: cmake's
find_path/find_library (access(DIR/zlib.h) in forty prefixes), pkg-config
(it stats its search directories at start, drops the missing ones, then
opens DIR/NAME.pc in those left), Python's zoneinfo (TZPATH), a loader.
When the name is found nowhere and the process failed, the search is the
cause, and the directory that explains it is one the sandbox hides on a
host that would have it: a distribution directory (/usr/include,
/usr/share/..., /etc/...), not /usr/local, /opt or a legacy prefix a host
lacks as often as not. The probes of the search are claimed: they are one
cause, not forty.

#include searches are includes.py's (the compiler says which header);
PATH searches for a command are rootcause.path_searches'.
"""

import functools
import posixpath

from nixrec.analysis.deps import access_of, basename
from nixrec.analysis.noise import is_noise, is_probe

# Where a distribution installs packages. A hidden directory at or under one
# of these is where the host keeps the file; elsewhere (/usr/local, /opt,
# /usr/X11R6, /usr/pkg, /include) a search just tries its luck.
SYSTEM_DIRS = ("/usr/include", "/usr/share", "/usr/lib", "/usr/lib64", "/usr/libexec",
               "/usr/bin", "/usr/sbin", "/bin", "/sbin", "/lib", "/lib64", "/etc")
# Fewer directories than this is a lookup, not a search.
MIN_DIRS = 2


def is_system_dir(path):
    return any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS)


def hidden_lookups(cls):
    """path -> whether a lookup of it is in a hidden distribution directory,
    the probes a search is blamed on (facts.FailLog keeps them past its
    window). Memoized per directory: a search asks of the same few."""
    @functools.lru_cache(maxsize=4096)
    def in_hidden_dir(d):
        return is_system_dir(d) and not cls.visible(d)

    return lambda path: in_hidden_dir(posixpath.dirname(path))


def host_candidate(facts, cls, probes):
    """The first of a search's failed lookups whose path the host has and the
    sandbox hides (the trace's host_view), or None: the rest, missing on the
    host too, were the search trying its luck. One in a distribution directory
    first: /usr/local and /opt hold what a local admin installed (pip's
    /usr/local/lib/python3.11/dist-packages), /usr/lib/python3/dist-packages
    what a package did."""
    found = [p for p in probes if facts.host.has(p.path) and not cls.visible(p.path)]
    return next((p for p in found if is_system_dir(posixpath.dirname(p.path))),
                found[0] if found else None)


def file_searches(facts, cls, chain, claimed):
    """[(kind, event, fields)] for failed searches by the chain's processes;
    adds their probes' seqs to `claimed`."""
    by_event = {}
    for proc in chain:
        for name, probes in _searches(facts, proc, claimed).items():
            c = _search_cause(facts, cls, proc, name, probes)
            if not c:
                continue
            claimed.update(p.seq for p in probes)
            # Two names blamed on one dropped directory (pkg-config tries
            # X-uninstalled.pc, then X.pc): the one searched last is the one
            # that was wanted.
            old = by_event.get(c[1].seq)
            if old is None or probes[-1].seq > old[0]:
                by_event[c[1].seq] = (probes[-1].seq, c)
    return [c for _, c in by_event.values()]


def _searches(facts, proc, claimed):
    """basename -> the failed lookups of it in MIN_DIRS+ directories, when the
    name was never found afterwards (a probe that succeeded later is a search
    that worked)."""
    groups = {}
    for f in facts.failures_of(proc):
        if f.errno != "ENOENT" or not f.path or f.seq in claimed or f.kind == "exec" \
                or access_of(f) not in ("read", "stat") \
                or (f.syscall or "").startswith("readlink") or is_probe(f, facts, facts.cls):
            continue
        groups.setdefault(basename(f.path), []).append(f)
    out = {}
    for name, probes in groups.items():
        dirs = {posixpath.dirname(p.path) for p in probes}
        last = probes[-1]
        if len(dirs) < MIN_DIRS or facts.base_succeeded_later(last.path, last.seq) \
                or is_noise(last.path, facts, last.seq):
            continue
        out[name] = probes
    return out


def _search_cause(facts, cls, proc, name, probes):
    """undeclared-host-path naming NAME in the first hidden distribution
    directory of the search (its shortest searched ancestor: /usr/include
    rather than /usr/include/x86_64-linux-gnu), or None when none is hidden."""
    searched = []
    for p in probes:
        d = posixpath.dirname(p.path)
        if d not in searched:
            searched.append(d)
    # pkg-config-like: search directories stat'ed at start and dropped share
    # their last component with the ones searched (.../pkgconfig).
    leaves = {basename(d) for d in searched}
    first = probes[0].seq
    dropped = {}
    for f in facts.failures_of(proc):
        if f.seq < first and f.errno == "ENOENT" and f.path and access_of(f) == "stat" \
                and basename(f.path) in leaves and f.path not in searched:
            dropped.setdefault(f.path, f)
    order = list(dropped) + searched
    found = host_candidate(facts, cls, probes)
    if found is not None:
        # The host's view (hostview.py): the host has the name there and the
        # sandbox hides it. That is the one to name, wherever it is.
        top = posixpath.dirname(found.path)
        hidden = [top] + [d for d in order if d != top and not cls.visible(d)
                          and is_system_dir(d)]
        return ("undeclared-host-path", found, dict(
            path=found.path, looked_for=name, accessed=found.path, looked_in=hidden[:8],
            searched=len(order), access=access_of(found)))
    hidden = [d for d in order if is_system_dir(d) and not cls.visible(d)]
    if not hidden:
        return None
    top = hidden[0]
    top = min((d for d in hidden if top == d or top.startswith(d + "/")),
              key=lambda d: d.count("/"))
    # The clearest event: the probe in that directory, else its dropped stat.
    ev = next((p for p in reversed(probes) if posixpath.dirname(p.path) == top),
              dropped.get(top, probes[-1]))
    return ("undeclared-host-path", ev, dict(
        path=posixpath.join(top, name), looked_for=name, accessed=ev.path,
        looked_in=[top] + [d for d in hidden if d != top][:7],
        searched=len(order), access=access_of(ev)))
