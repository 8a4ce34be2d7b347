"""#include searches that failed: which header, and which directory the sandbox hid.

A compiler's search is not a PATH search: it stats its include directories once
at start, drops the missing ones, and later opens DIR/header in those left.
"""

import re

from nixrec.analysis.deps import access_of
from nixrec.analysis.noise import path_noise

# What gcc and clang print when an #include is not found.
_HEADER_MISSING = re.compile(r"fatal error: (?:'([^']+)' file not found|"
                             r"([^\s:]+): No such file or directory)")


def include_searches(facts, cls):
    """([(kind, event, fields)], claimed seqs) for #include searches that failed.

    A compiler that cannot find a header says so ("fatal error: zlib.h: No such
    file or directory"); the trace shows where it looked (failed opens of
    DIR/zlib.h) and which include directories it stat'ed at start-up and dropped
    because they were missing. A dropped directory the sandbox hides
    (/usr/include, not a sandbox path) is the cause: undeclared-host-path. If
    every directory was there, the header is simply not installed in any of them:
    missing-header. The events of the search are claimed, so they are not read
    again as PATH searches or separate suspects.
    """
    causes, claimed = [], set()
    for proc, lines in facts.stderr.items():
        headers = {}
        for _, line in lines:
            for m in _HEADER_MISSING.finditer(line):
                headers.setdefault(m.group(1) or m.group(2), line.strip())
        for h, line in headers.items():
            c = _include_cause(facts, cls, proc, h, claimed)
            if c:
                c[2]["log_line"] = line
                causes.append(c)
    # A compiler whose stderr went to a file (configure: 2>conftest.err) says
    # nothing in the log: its failed lookups say which header it gave up on.
    for proc in facts.fails:
        q = facts.procs.get(proc)
        if q is None or not q.failed or proc in facts.stderr:
            continue
        h = unlogged_header(facts, proc)
        c = _include_cause(facts, cls, proc, h, claimed) if h else None
        if c:
            causes.append(c)
    return causes, claimed


def unlogged_header(facts, proc):
    """The header a failed process looked for last and never found: its last
    failed open of DIR/X in an include directory (DIR/sys/X for <sys/X>), if
    no process opened that name later. gcc's silent probes (stdc-predef.h,
    X.gch) are not it."""
    for f in reversed(facts.failures_of(proc)):
        if not f.path or f.errno != "ENOENT" or access_of(f) != "read" \
                or path_noise(f.path) is True:
            continue
        header = _under_include_dir(f.path)
        if header is None:
            continue
        return None if facts.base_succeeded_later(f.path, f.seq) else header
    return None


def _under_include_dir(path):
    """"stdio.h" for /usr/include/stdio.h, "sys/types.h" for
    /usr/include/sys/types.h: the part below the last include directory."""
    parts = path.split("/")
    for i in range(len(parts) - 2, 0, -1):
        if parts[i].startswith("include"):
            rest = "/".join(parts[i + 1:])
            return rest if _HEADER_FILE.search(rest) else None
    return None


def _include_cause(facts, cls, proc, header, claimed):
    mine = [f for f in facts.failures_of(proc) if f.path]
    lookups = [f for f in mine if f.path.endswith("/" + header)
               or f.path.endswith("/" + header + ".gch")]
    tried = [f for f in lookups if access_of(f) == "read"]
    seen = {f.seq for f in lookups}
    dirs = [f for f in mine if f.errno == "ENOENT" and access_of(f) == "stat"
            and is_include_dir(f.path) and f.seq not in seen]
    if not lookups and not dirs:
        return None
    # gcc canonicalizes each include directory: readlink of its ancestors.
    wanted = {f.path for f in dirs}
    parents = [f for f in mine if f.errno == "ENOENT" and access_of(f) == "stat"
               and any(d.startswith(f.path + "/") for d in wanted)]
    claimed.update(f.seq for f in lookups + dirs + parents)
    hidden = []
    for f in dirs:
        if not cls.visible(f.path) and f.path not in hidden:
            hidden.append(f.path)
    ev = tried[-1] if tried else (lookups or dirs)[-1]
    # Blame a system directory (/usr/include), not /usr/local: a host has that one
    # empty or missing as often as not, so its absence alone explains nothing.
    system = [d for d in hidden if not d.startswith("/usr/local/")]
    if system:
        # The shortest: /usr/include rather than its multiarch subdirectory.
        path = min(system, key=lambda d: (d.count("/"), hidden.index(d)))
        mine = [f for f in dirs if f.path == path]
        stat = next((f for f in mine if not (f.syscall or "").startswith("readlink")),
                    mine[0])
        hidden.remove(path)
        return ("undeclared-host-path", ev, dict(
            path=path, header=header, looked_in=[path] + hidden, accessed=ev.path,
            access="read", extra_events=[(stat.seq, stat.syscall, stat.path, stat.errno)]))
    if tried and not cls.visible(tried[-1].path):
        # It looked right at a host or foreign store path: that open is the cause.
        claimed.difference_update(f.seq for f in tried)
        return None
    looked = sorted({f.path[:-len(header) - 1] for f in tried})
    return ("missing-header", ev, dict(path=ev.path, header=header, looked_in=looked,
                                       hidden=hidden or None))


_HEADER_FILE = re.compile(r"\.(h|hh|hpp|gch)$")


def is_include_dir(path):
    """A directory a compiler searches for headers (/usr/include, .../include-fixed,
    /usr/x86_64-linux-gnu/include): some component starts with "include"."""
    return "/include" in path \
        and any(part.startswith("include") for part in path.split("/")) \
        and not _HEADER_FILE.search(path)
