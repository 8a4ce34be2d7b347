"""How much a candidate cause explains a failed build (`nixrec why`): each
cause's score and the ranked, merged list rootcause.py reports.

A cause's kind gives its prior (PRIOR); then where it happened (the origin of
the failure chain, the chain, elsewhere), whether the build log names it, and
whether it was only a probe, noise or a `test -e` move it up or down.
"""

import functools
import re

from nixrec.analysis.deps import access_of, basename
from nixrec.analysis.facts import is_ancestor
from nixrec.analysis.idioms import ERRNO_TEXT, IDIOMS, errno_said, failure_lines, is_failure_line
from nixrec.analysis.noise import MESSAGE_MACHINERY, is_noise

# How much a kind of cause explains a build failure on its own (before context).
PRIOR = {
    "limit": 8, "signal": 6, "seccomp": 5, "process": 4, "network": 5, "dns": 5, "home": 5,
    "missing-interpreter": 5, "race": 5, "missing-executable": 4,
    "undeclared-store-path": 4, "write-outside": 4, "write-denied": 4,
    "undeclared-host-path": 3, "missing-header": 4, "fallback": 0,
}
# A top cause scoring below this explains too little: the fallback goes first.
GOOD = 4


def _score(c, facts, chain, log):
    # A thread is its program: the JVM's main thread, the Go runtime's
    # threads are children in the tree only because clone() made them.
    chain = [leader(facts, p) for p in chain]
    origin = chain[-1] if chain else None
    s = PRIOR.get(c["kind"], 0)
    proc = leader(facts, c["proc"])
    if proc == origin:
        s += 4
    elif proc in chain:
        s += 2
    elif origin and is_ancestor(origin, proc):
        s += 2
    elif chain and any(is_ancestor(p, proc) for p in chain[1:]):
        s += 1
    s += _log_points(c, log)
    said = c.get("log_mention") in ("path", "idiom")
    # What the process asked for (a symlink, DIR/header.h), not what it resolved to.
    path = c.get("accessed") or c.get("path") or ""
    named = bool(c.get("log_mention"))
    # A failed search (searches.py) is judged as a whole: its name was found
    # nowhere, and its probes are not noise; one probe's stat says nothing.
    if c["kind"] not in ("race", "signal") and path and not c.get("searched"):
        if facts.base_succeeded_later(path, c["seq"]):
            s -= 4           # a probe: the same name was found afterwards
        if is_noise(path, facts, c["seq"]) and not said:
            s -= 6
        if c.get("syscall") and access_of_name(c["syscall"]) == "stat" \
                and not named:
            s -= 5           # `test -e`, configure checks: asked, not needed
    if c["kind"] not in ("race", "signal") and path and c.get("syscall"):
        later = facts.op_succeeded_later(path, c["syscall"], c["seq"])
        if later:
            s -= 6           # the same operation succeeded next: tolerated
            c["tolerated"] = later
    s += _host_points(c, facts)
    if c.get("link") and c.get("accessed") == c["link"] and (named or access_of_name(
            c.get("syscall") or "") != "stat"):
        s += 1           # it named the symlink itself: the clearest event to show
                         # (not a bare existence check: python's sitecustomize)
    if c["kind"] == "race" and proc not in chain and c.get("errno") is None:
        s -= 6           # a read that raced but did not make anything fail
    q = facts.procs.get(proc)
    if q and origin == proc and c["seq"] >= q.exec_seq:
        s += 1           # in the program that finally failed, not its shell parent
    return s


def leader(facts, proc):
    """The process a thread belongs to (itself for a process)."""
    while proc in facts.threads:
        q = facts.procs.get(proc)
        if q is None or not q.parent:
            break
        proc = q.parent
    return proc


def _log_points(c, log):
    """+3 when the chain's log says, about a failure, the cause's path, name,
    host or address (log_mention "path" or "name"), a tool idiom about it
    (log_mention "idiom", log_idiom the row) or its errno in words with its
    operation (log_mention "errno"); +1 for each further kind of saying."""
    key = c.get("header") or c.get("path") or c.get("address") or c.get("host") or ""
    name = c.get("command") or basename(c.get("accessed") or key)
    path = c.get("accessed") or c.get("path") or ""
    # A directory the log prints only as the start of a longer path (make's
    # "No rule to make target '/usr/share/dpkg/architecture.mk'" after a
    # stat of /usr/share/dpkg): the log speaks of the file, not of it.
    named = (mentioned(key, name, log.text) or bool(c.get("looked_for")) and mentioned(
        key, c["looked_for"], log.text)) and not _only_longer(path, log.text)
    # The log prints the very path: the program says this is what it needed
    # ("invalid path: /etc/ssl/certs/ca-certificates.crt").
    said = named and bool(path) and path in log.text and bool(_path_re(path).search(log.text))
    idiom = log.idiom(c)
    errno = log.errno_said(c)
    before = c["seq"] in log.leads
    kinds = [k for k, v in (("path", said), ("idiom", idiom), ("name", named),
                            ("errno", errno), ("before", before)) if v]
    if not kinds:
        return 0
    c["log_mention"] = kinds[0]
    if idiom:
        c["log_idiom"] = idiom
    return 3 + (bool(idiom) and named) + (errno and (named or bool(idiom)))


# Kinds whose cause is a lookup the host can answer (the host's view).
LOOKUP_KINDS = frozenset(("undeclared-host-path", "undeclared-store-path",
                          "missing-executable", "missing-header", "fallback"))


def _host_points(c, facts):
    """The host's view (hostview.py): a path the sandbox hides and the host
    has is the difference that makes a sandbox-only failure (+2, on_host
    true; not for a bare existence check nothing else speaks for); one the
    host lacks as well is a probe (-5, on_host false: below GOOD on its own)."""
    if c["kind"] not in LOOKUP_KINDS or not c.get("errno"):
        return 0
    path = c.get("path") or ""
    has = facts.host.has(path) if path else None
    if has is None and c.get("searched") and c.get("accessed"):
        path = c["accessed"]     # a search's dropped directory (pkg-config's)
        has = facts.host.has(path)
    if has is None:
        return 0
    if has and facts.cls.visible(path):
        return 0         # the sandbox shows it: not the difference
    if not has and c.get("log_mention") in ("path", "idiom"):
        return 0         # the log pins it: the cause, if not a sandbox-only one
    c["on_host"] = has
    if has and not c.get("log_mention") and not c.get("searched") \
            and access_of_name(c.get("syscall") or "") == "stat":
        return 0         # asked whether it is there, and never said it needed it
    return 2 if has else -5


def _only_longer(path, text):
    """Every place the log prints `path` goes on with "/NAME"."""
    if not path or path not in text:
        return False
    ends = [m.end() for m in _path_re(path).finditer(text)]
    return bool(ends) and all(text[e:e + 1] == "/" for e in ends)


class LogWords:
    """The failure chain's log as evidence: only the lines about a failure
    (idioms.failure_lines), their text, and each idiom they hold; `leads`,
    the failed calls each process of the chain made last before it first
    said something failed (complaint_leads)."""

    def __init__(self, lines, leads=None):
        self.lines = failure_lines(lines)
        self.text = "\n".join(self.lines)
        self._idioms = [(i, m) for line in self.lines for i in IDIOMS
                        for m in [i.pattern.search(line)] if m]
        self.leads = leads or {}
        self._by_errno = {}

    def idiom(self, c):
        return next((i.name for i, m in self._idioms if i.links(m, c)), None)

    def errno_said(self, c):
        errno = c.get("errno")
        if not errno:
            return False
        lines = self._by_errno.get(errno)
        if lines is None:          # the lines holding this errno's text, once
            text = ERRNO_TEXT.get(errno) or "\0"
            lines = self._by_errno[errno] = [l for l in self.lines if text in l]
        return bool(lines) and errno_said(c, lines)

    def says(self, c):
        """The log names this cause's path or name, an idiom is about it, or
        it is the call the process made last before it complained."""
        path = c.get("path") or ""
        return mentioned(path, basename(path), self.text) or bool(self.idiom(c)) \
            or c.get("seq") in self.leads


def with_threads(facts, chain):
    """The chain and the threads below its processes: a Go or Java program's
    threads are each other's children in the tree, and the one that prints
    the error is not always the one whose exit the chain followed."""
    out, todo = list(chain), list(chain)
    while todo:
        q = facts.procs.get(todo.pop())
        for c in (q.children if q else ()):
            if c in facts.threads and c not in out:
                out.append(c)
                todo.append(c)
    return out


def log_of(facts, chain):
    """The chain's LogWords, made once per chain."""
    key = tuple(chain)
    cache = facts.__dict__.setdefault("_log_words", {})
    if key not in cache:
        lines = sorted((s, l) for p in with_threads(facts, chain)
                       for s, l in facts.stderr.get(p, ()))
        log = cache[key] = LogWords([l for _, l in lines])
        log.leads = complaint_leads(facts, chain, log)
    return cache[key]


# The lookups the host's view can answer (hostview.ERRNOS).
_HIDDEN_ERRNOS = frozenset(("ENOENT", "ENOTDIR", "EACCES", "EPERM", "ELOOP"))


def complaint_leads(facts, chain, log):
    """{seq: seq of the complaint}: for each process of the chain that says
    in its log that something failed, its last failed lookup before its first
    such line of a path the sandbox hides and the host has (the trace's
    host_view). A program that gets nothing back where the host would have
    answered, and then complains, complains about that: perl's getservbyname
    returns undef without a word when /etc/services is missing, and the test
    fails on the value. The origin that said nothing complains by its failed
    exit (not a thread: its exit is its program's).

    A guess, so only when the log does not say what failed (no idiom, no
    failed path printed), and never:
    - what a program reads while it formats the message (message catalogs,
      locale, charset conversion: noise.MESSAGE_MACHINERY);
    - what many processes failed to find (STARTUP_PROCS or more: the
      loader's ld.so.cache, nsswitch.conf), which every program does without;
    - a directory the process then searched in (failed lookups under it:
      cmake's /opt, a search root; the search speaks for itself);
    - in a process with a failed child: its complaint may well be the
      child's (meson reports pkg-config's "not found");
    - before the process first touched the build's own files: its start-up
      (the loader's ld.so.cache, python's site directories and
      sitecustomize), not its work."""
    out = {}
    if not facts.host.known or log._idioms or \
            any(ev.path and ev.path in log.text for p in chain for ev in facts.failures_of(p)):
        return out
    spread = None
    for p in chain:
        said = next((s for s, line in facts.stderr.get(p, ()) if is_failure_line(line)), None)
        q = facts.procs.get(p)
        if q is not None and any(c not in facts.threads and facts.procs[c].failed
                                 for c in q.children if c in facts.procs):
            continue                 # its complaint may well be a child's
        if said is None and p == chain[-1] and q is not None and q.failed \
                and p not in facts.threads:
            said = q.exit_seq
        if said is None:
            continue
        fails = facts.failures_of(p)
        # Only once the program was at its own work (it had touched the
        # build's files): before that, an interpreter's and the loader's
        # start-up probes (site's dist-packages, sitecustomize, ld.so.cache).
        start = facts.first_build.get(p)
        if start is None:
            continue
        for ev in reversed(fails):
            path = ev.path
            if ev.seq < start:
                break
            if ev.seq > said or not path or ev.errno not in _HIDDEN_ERRNOS \
                    or MESSAGE_MACHINERY.search(path) or not facts.host.has(path) \
                    or facts.cls.visible(path):
                continue
            if spread is None:
                spread = _spread(facts)
            if spread.get(path, 0) >= STARTUP_PROCS or any(
                    f.path and f.path.startswith(path + "/") for f in fails):
                continue
            out[ev.seq] = said
            break
    return out


# A path this many processes failed to find is a start-up probe, not a lead.
STARTUP_PROCS = 3


def _spread(facts):
    """path -> how many processes failed a lookup of it (of the failures kept)."""
    seen = {}
    for ev in facts.failures:
        if ev.path:
            seen.setdefault(ev.path, set()).add(ev.proc)
    return {p: len(procs) for p, procs in seen.items()}


# Directory names too generic to count as the log naming a path ("#include"
# does not name /usr/include, "lib" is everywhere).
GENERIC_NAMES = frozenset(("include", "lib", "lib64", "bin", "sbin", "share", "etc",
                           "usr", "local", "src", "build", "tmp", "var", "opt"))


_ADDRESS = re.compile(r"^[\d.]+:\d+$")


# Memoized: a big build has hundreds of thousands of candidates but only
# thousands of distinct paths, and the log (the chain's stderr) is one string.
@functools.lru_cache(maxsize=1 << 16)
def mentioned(key, name, log_text):
    """The build log names this path, command, host or address (host part).

    A name of 3+ characters counts as a word anywhere; a 2-letter one (cc, ld,
    as) only as the subject of a message ("make: cc: No such file")."""
    if not key:
        return False
    # The whole path, not the start of a longer name: "/.git" is not named by
    # "/homeless-shelter/.gitconfig".
    if key in log_text and _path_re(key).search(log_text):
        return True
    host = key.rsplit(":", 1)[0] if _ADDRESS.match(key) else None
    for word in (name, host):
        if not word or word in GENERIC_NAMES or word not in log_text:
            continue
        if len(word) >= 3 and _word_re(word).search(log_text):
            return True
        if len(word) == 2 and _subject_re(word).search(log_text):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _path_re(path):
    return re.compile(re.escape(path) + r"(?![\w-]|\.\w)")


@functools.lru_cache(maxsize=4096)
def _word_re(word):
    # Not a directory of a longer path ("pkgconfig" in /usr/lib/pkgconfig/x.pc).
    return re.compile(r"(?<![\w.-])" + re.escape(word) + r"(?![\w/-])")


@functools.lru_cache(maxsize=4096)
def _subject_re(word):
    return re.compile(r"(?:^|\s)" + re.escape(word) + r":", re.M)


class _NameOnly:
    """access_of wants an event; this is the name-only question."""
    __slots__ = ("syscall",)
    kind, flags = "syscall", 0

    def __init__(self, syscall):
        self.syscall = syscall


@functools.lru_cache(maxsize=None)      # one entry per syscall name
def access_of_name(syscall):
    return access_of(_NameOnly(syscall))


# Kinds that are a failed access to a path: the ones the log can vouch for.
PATH_KINDS = frozenset(("undeclared-host-path", "undeclared-store-path", "missing-header",
                        "missing-executable", "missing-interpreter", "write-outside",
                        "write-denied", "fallback"))


def _believe_the_log(causes):
    """A failed access the log names outranks the failed accesses of the same
    process the log never mentions: pip's "invalid path:
    /etc/ssl/certs/ca-certificates.crt" over the openssl.cnf it opened first
    and did without. Only a named cause that stands on its own (GOOD) does:
    a name found later anyway (a probe) vouches for nothing."""
    named = {}
    for c in causes:
        if c.get("log_mention") and c["kind"] in PATH_KINDS and c["score"] >= GOOD:
            named[c["proc"]] = max(named.get(c["proc"], c["score"]), c["score"])
    for c in causes:
        top = named.get(c["proc"])
        if top is not None and c["kind"] in PATH_KINDS and not c.get("log_mention") \
                and c["score"] >= top:
            c["score"] = top - 1
    # A tool idiom is the tool saying what it wanted: it outranks what the
    # same process's log names only in passing (libxml2's "failed to load
    # external entity \"http://host/...\"" wanted the catalog that maps the
    # URL; the host's name in it is where it went next).
    said = {}
    for c in causes:
        if c.get("log_mention") == "idiom" and c["score"] >= GOOD:
            said[c["proc"]] = max(said.get(c["proc"], c["score"]), c["score"])
    for c in causes:
        top = said.get(c["proc"])
        if top is not None and c.get("log_mention") == "name" and c["score"] >= top:
            c["score"] = top - 1


def rank(causes, facts, chain):
    log = log_of(facts, chain)
    best = {}
    for c in causes:
        c["score"] = _score(c, facts, chain, log)
    _believe_the_log(causes)
    for c in causes:
        # One cause per event; the rule with the higher score wins it.
        k = c["seq"]
        if k not in best or c["score"] > best[k]["score"]:
            best[k] = c
    merged, by_path = {}, {}
    for c in sorted(best.values(), key=lambda c: (-c["score"], -c["seq"])):
        ident = (c["kind"], c.get("path"), c.get("address"), c.get("host"),
                 c.get("command"))
        # One suspect per path and process: cp's stat of the file it then fails
        # to write is part of that write, not a second suspect.
        same = merged.get(ident) or (c.get("path") and c["kind"] != "signal"
                                     and by_path.get((c["proc"], c["path"])))
        if same:
            same.setdefault("also_seq", []).append(c["seq"])
            continue
        merged[ident] = c
        if c.get("path"):
            by_path.setdefault((c["proc"], c["path"]), c)
    return list(merged.values())


def order(causes):
    """THE order of causes `why` reports, in text and JSON alike: by score,
    highest first (a stable sort: among equal scores, the order the rules
    found them in, which is the latest event first)."""
    return sorted(causes, key=lambda c: -c["score"])
