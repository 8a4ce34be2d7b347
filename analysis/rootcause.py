"""Why did the build fail (`nixrec why`): failure chain, ranked root causes, replay.

Pure functions of (header, processes, events). The shape of the answer:
  1. the failure chain: builder -> ... -> origin, following a parent that
     waited for a failed child and then failed itself;
  2. candidate causes, one per suspicious event (rules below), scored
     (scoring.py) by where they happened (origin > chain > elsewhere), whether
     the build log names them, and whether they were just a probe that later
     succeeded;
  3. see-through steps: an exec ENOENT on a file that exists is a missing
     interpreter; a "file missing" whose producer failed earlier is that
     producer's cause (data flow); a symlink out of the sandbox names its target.
"""

import functools
import posixpath
import re

from nixrec.analysis import races
from nixrec.analysis.idioms import operation
from nixrec.analysis.includes import include_searches
from nixrec.analysis.searches import file_searches, host_candidate
from nixrec.analysis.noise import NOISE, is_noise, is_probe
from nixrec.analysis.deps import (PROCESS_CALLS, PathClassifier, access_of, basename,
                                  store_path_of)
from nixrec.analysis.facts import collect, is_ancestor, no_cycle_gc, parent_of
from nixrec.analysis import hints
from nixrec.analysis.incomplete import (decided_failure, forget_interrupt, incompleteness,
                                       last_failure)
from nixrec.analysis.limits import limit_cause, limit_chain
from nixrec.analysis.outputcheck import output_cause
from nixrec.analysis.phases import focus as phase_focus
from nixrec.analysis.producers import find_producer, missing_product
from nixrec.analysis.scoring import GOOD, leader, log_of, order, rank, with_threads
from nixrec.recorder.tracefile.hostview import HostView

SECCOMP_ERRNO = ("ENOTSUP", "EOPNOTSUPP")
DENIED_ERRNO = ("EACCES", "EROFS", "EPERM")
OWNER_ERRNO = ("EINVAL", "EPERM")


# -- failure chain --------------------------------------------------------------

def failure_chain(facts):
    """[builder, ..., origin] tree paths; [] if the build succeeded."""
    root = facts.procs.get("1")
    if root is None or not root.failed:
        return []
    if facts.killed:
        # Killed for a limit: everything died at once, nobody waited.
        chain = limit_chain(facts)
        if chain:
            return chain
    return _chain_from(facts, "1")


def _failed_child(facts, proc):
    """The child whose failure `proc` propagated: the last failed one it waited for."""
    q = facts.procs[proc]
    failed = [c for c in q.children if c in facts.procs and facts.procs[c].failed]
    if not failed:
        return None
    # SIGPIPE is how a pipeline's writer ends when its reader quits first
    # (`... | head`): the one to follow only when no other child failed
    # (`set -o pipefail`).
    failed = [c for c in failed if facts.procs[c].exit_signal != "SIGPIPE"] or failed
    waited = {}
    for seq, child, status in facts.waits.get(proc, ()):
        if child in failed:
            waited[child] = seq
    if waited:
        return max(waited, key=waited.get)
    # No wait recorded (interrupted trace, or reaped by a signal handler).
    return max(failed, key=lambda c: facts.procs[c].exit_seq or facts.procs[c].last_seq)


# -- candidate causes: one per suspicious event ----------------------------------

def _cause(kind, ev, facts, **fields):
    q = facts.procs.get(ev.proc)
    argv = q.argv if q and q.argv else []       # shared: _public() copies it
    if not argv and ev.kind == "exec":
        argv = ev.args.get("argv") or []        # a builder that never started
    c = {"kind": kind, "seq": ev.seq, "proc": ev.proc, "argv": argv,
         "syscall": ev.syscall, "errno": ev.errno}
    if ev.path and "path" not in fields and kind not in ("network", "dns"):
        c["path"] = ev.path
    c.update({k: v for k, v in fields.items() if v is not None})
    return c


def classify_event(ev, facts, cls):
    """The most specific cause kind for one failed (or HOME-writing) event, or None."""
    access = access_of(ev)
    name = ev.syscall or ""
    if ev.errno in SECCOMP_ERRNO and "xattr" in name:
        return _cause("seccomp", ev, facts, what="extended attribute")
    if ev.errno == "EPERM" and "chmod" in name and (ev.flags or 0) & 0o6000:
        return _cause("seccomp", ev, facts, what="setuid/setgid bit")
    if ev.errno in OWNER_ERRNO and operation(name) == "owner":
        # One user in the sandbox (uid 1000, gid 100): giving a file to any
        # other (install -o root) is EINVAL (unmapped) or EPERM.
        return _cause("write-denied", ev, facts, what="ownership")
    if ev.args.get("dns"):
        return _cause("dns", ev, facts, host=ev.args["dns"])
    if access == "connect":
        return _network_cause(ev, facts, cls)
    if not ev.path:
        return None
    cat = cls.category(ev.path)
    if cat == "home":
        return _cause("home", ev, facts) if access == "write" else None
    if access == "write" and cat in ("host", "store"):
        return _cause("write-outside", ev, facts)
    if access == "write" and ev.errno in DENIED_ERRNO:
        return _cause("write-denied", ev, facts)
    if ev.kind == "exec" and ev.errno == "ENOENT" and ev.args.get("interpreter"):
        # The tracer read the ELF PT_INTERP or #! line of the file that exists.
        interp = ev.args["interpreter"]
        return _cause("missing-interpreter", ev, facts, command=ev.path,
                      interpreter=interp, interpreter_dir=posixpath.dirname(interp),
                      dir_mounted=cls.mounted_from_host(interp),
                      interpreter_found=not ev.args.get("interpreter_missing", True))
    out = _link_out(ev, cls)
    if out:
        link, target, full = out
        kind = "undeclared-store-path" if cls.category(full) == "store" \
            else "undeclared-host-path"
        return _cause(kind, ev, facts, path=full, link=link, link_target=target,
                      accessed=ev.path, access=access,
                      store_path=store_path_of(full, cls.store_dir))
    if ev.kind == "exec" and ev.errno == "ENOENT":
        return _exec_enoent(ev, facts, cls)
    if cat == "store":
        return _cause("undeclared-store-path", ev, facts,
                      store_path=store_path_of(ev.path, cls.store_dir))
    if cat == "host":
        return _cause("undeclared-host-path", ev, facts, access=access)
    link = _symlink_out(ev.path, facts, cls)
    if link:
        return _cause("undeclared-host-path", ev, facts, path=link[1], link=link[0],
                      access=access)
    return _cause("fallback", ev, facts)


def _network_cause(ev, facts, cls):
    addr = ev.args.get("address") or ""
    if ev.args.get("family") == "AF_UNIX" and (not cls.undeclared(addr)
                                                or NOISE.search(addr)):
        return None      # the build's own sockets, or glibc asking for nscd
    port = addr.rsplit(":", 1)[-1]
    if port == "53":             # a resolver query without a decoded question
        return _cause("dns", ev, facts, address=addr, host=_guess_host(facts, ev.proc))
    return _cause("network", ev, facts, address=addr)


_HOST_IN_LOG = re.compile(r"(?:resolve host:?|bad address|resolve|lookup|host)\s+"
                          r"'?([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)'?")
_HOSTNAME = re.compile(r"^(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}$")
_FILE_EXT = re.compile(r"\.(c|h|cc|o|so|a|txt|json|py|sh|mk|in|am|ac|nix|pc|gz|xz|tar)$")


def _guess_host(facts, proc):
    """The name a resolver query was for, when the tracer could not decode it:
    the build log ("Could not resolve host: X") or the program's arguments.
    The log of its program's other threads too (Go resolves in one thread
    and reports in another)."""
    writers = _log_writers(facts, proc)
    writers += [p for p in with_threads(facts, [leader(facts, proc)]) if p not in writers]
    for p in writers:
        m = _HOST_IN_LOG.search(facts.stderr_text([p]))
        if m:
            return m.group(1)
    q = facts.procs.get(proc)
    for arg in (q.argv[1:] if q else ()):
        word = re.sub(r"^[a-z]+://", "", arg).split("/", 1)[0].split(":", 1)[0]
        if _HOSTNAME.match(word) and not _FILE_EXT.search(word):
            return word
    return None


def _log_writers(facts, proc, limit=64):
    """Who may have reported `proc`'s failure: itself, the processes below it
    running the same program (the threads of a Go or Node process are each
    other's children in the tree), then each ancestor and its children running
    the same program (the go command, pip, make report what a child could not
    do). At most `limit` of them."""
    q = facts.procs.get(proc)
    exe = q.exe if q else None
    seen = [proc]
    todo = list(q.children if q else ())
    while todo and len(seen) < limit:
        c = todo.pop(0)
        cq = facts.procs.get(c)
        if cq and exe and cq.exe == exe:
            seen.append(c)
            todo.extend(cq.children)
    p = parent_of(proc)
    while p and len(seen) < limit:
        seen.append(p)
        a = facts.procs.get(p)
        for c in (a.children if a else ()):
            cq = facts.procs.get(c)
            if c not in seen and cq and exe and cq.exe == exe:
                seen.append(c)
        p = parent_of(p)
    return seen[:limit]


def _exec_enoent(ev, facts, cls):
    """ENOENT from execve: a missing program, or (if the file exists) its interpreter."""
    if _file_exists(facts, cls, ev.path, ev.seq):
        interp = _interpreter_of(ev, facts)
        return _cause("missing-interpreter", ev, facts, interpreter=interp,
                      command=ev.path)
    return _cause("missing-executable", ev, facts, command=basename(ev.path),
                  looked_in=[ev.path.rsplit("/", 1)[0] or "/"])


def _file_exists(facts, cls, path, seq):
    """The file was there at `seq`: by the trace's file state at that point
    (not an earlier success: configure removes its conftest before the next
    compile, which may never write it), else because it is inside a declared
    input (immutable)."""
    state = facts.exists_at(path, seq)
    if state is not None:
        return state
    return cls.category(path) == "input"


def _interpreter_of(ev, facts):
    """The interpreter the kernel failed to find, if the trace (or the store) shows it."""
    peek = getattr(facts, "peek", None)
    for f in facts.failures_of(ev.proc):
        # Some tracers report the kernel's own open of the interpreter.
        if f.seq in (ev.seq - 1, ev.seq + 1) and f.path \
                and f.path != ev.path and f.errno == "ENOENT":
            return f.path
    return peek(ev.path) if peek else None


def _link_out(ev, cls):
    """(link, target, resolved path) when the tracer saw `ev.path` go through a
    symlink whose target the sandbox hides (/usr/bin/cc -> /etc/alternatives/cc).
    A link into a mounted sandbox path (/lib -> usr/lib) is not the problem."""
    link, target = ev.args.get("link"), ev.args.get("link_target")
    if not link or not target or ev.errno != "ENOENT":
        return None
    if not target.startswith("/"):
        target = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    if cls.visible(target):
        return None
    rest = ev.path[len(link):] if ev.path and ev.path.startswith(link + "/") else ""
    return link, target, target + rest


def _symlink_out(path, facts, cls):
    """(link, target) if `path` or a parent is a recorded symlink to outside the sandbox."""
    p = path
    while p and p != "/":
        target = facts.symlinks.get(p)
        if target:
            if not target.startswith("/"):
                target = p.rsplit("/", 1)[0] + "/" + target
            full = target + path[len(p):]
            if cls.undeclared(full):
                return (p, full)
            return None
        p = p.rsplit("/", 1)[0]
    return None


# -- causes made of several events -----------------------------------------------

def path_searches(facts, cls, claimed=frozenset()):
    """missing-executable causes from PATH searches in which every entry failed.

    Shells search PATH with stat() (busybox ash) or execve() per entry; a search
    that later succeeds on the same name is noise. A stat-only search counts only
    if the log says "not found" or the process exited 127, since configure also
    stats PATH entries on purpose. readlink is realpath's question, never a PATH
    search; an entry that is a symlink out of the sandbox is that symlink's cause.
    """
    groups = {}
    for ev in facts.failures:
        if ev.errno != "ENOENT" or not ev.path or access_of(ev) not in ("stat", "exec") \
                or ev.seq in claimed or (ev.syscall or "").startswith("readlink") \
                or is_noise(ev.path, facts, ev.seq):
            continue
        name = basename(ev.path)
        g = groups.setdefault((ev.proc, name), [])
        g.append(ev)
    for (proc, name), evs in groups.items():
        last = evs[-1]
        if facts.base_succeeded_later(last.path, last.seq):
            continue
        if any(_link_out(e, cls) for e in evs):
            continue
        dirs = sorted({e.path.rsplit("/", 1)[0] or "/" for e in evs})
        execd = any(e.kind == "exec" for e in evs)
        q = facts.procs.get(proc)
        # The bare name: "ls: /proc/42: No such file" is about a path, not a command.
        said = _not_found_re(name).search(facts.stderr_text([proc]))
        if not execd and not said and not (q and q.exit_status == 127):
            continue
        if execd and len(dirs) == 1 and _file_exists(facts, cls, last.path, last.seq):
            continue          # one exec of a file that exists: an interpreter problem
        # The entry the host has (hostview.py) is the one the sandbox hid.
        found = host_candidate(facts, cls, evs) or last
        yield _cause("missing-executable", found, facts, command=name, looked_in=dirs,
                     path=found.path)


@functools.lru_cache(maxsize=4096)
def _not_found_re(name):
    return re.compile(r"(?<![\w./-])" + re.escape(name) + r"(: not found|"
                      r": command not found|: No such file)")


def race_causes(facts):
    for r in races.find_races(facts):
        ev = r["event"]
        fields = dict(path=r["path"], creator=r["creator"], created_seq=r["created_seq"])
        if ev is not None:
            yield _cause("race", ev, facts, **fields)
        else:
            q = facts.procs.get(r["proc"])
            yield {"kind": "race", "seq": r["seq"], "proc": r["proc"],
                   "argv": list(q.argv) if q else [], "syscall": "openat",
                   "errno": None, **fields}


def signal_causes(facts, chain):
    """A process in the chain killed by a signal (timeout, OOM killer, segfault);
    killed by the recorder for a limit, the limit is the cause instead."""
    if facts.killed:
        yield limit_cause(facts, chain)
        return
    for proc in chain:
        q = facts.procs[proc]
        if not q.exit_signal:
            continue
        yield {"kind": "signal", "seq": q.exit_seq or q.last_seq, "proc": proc,
               "argv": list(q.argv), "syscall": None, "errno": None,
               "signal": q.exit_signal}


def process_causes(facts, chain):
    """The origin's last failed call was a kill or ptrace of another process:
    refused (ESRCH: not in the build's PID namespace; EPERM) and then it gave up."""
    origin = chain[-1]
    fails = [e for e in facts.failures_of(origin)
             if not (e.path and is_noise(e.path, facts, e.seq))]
    if not fails or fails[-1].syscall not in PROCESS_CALLS:
        return
    ev = fails[-1]
    sig = ev.args.get("signal") if ev.syscall != "ptrace" else None
    yield _cause("process", ev, facts, target_pid=ev.args.get("target_pid"),
                 signal=sig or None)


def candidates(facts, chain, cls):
    found, claimed = include_searches(facts, cls)
    log = log_of(facts, chain)
    found += file_searches(facts, cls, chain + reported_children(facts, chain, log),
                           claimed)
    out = [_cause(kind, ev, facts, **fields) for kind, ev, fields in found]
    for ev in facts.failures:
        if ev.seq in claimed or is_probe(ev, facts, cls):
            continue
        if is_noise(ev.path, facts, ev.seq) and not log.says(
                {"path": ev.path, "syscall": ev.syscall, "errno": ev.errno,
                 "seq": ev.seq}):
            continue         # never a suspect unless the log speaks of it
        c = classify_event(ev, facts, cls)
        if c:
            out.append(c)
    for ev in facts.home_writes:
        out.append(_cause("home", ev, facts))
    for ev in facts.network:
        # A UDP connect to a resolver succeeds; only the query after it fails.
        if not ev.failed and (ev.args.get("dns") or
                              (ev.args.get("address") or "").endswith(":53")):
            c = classify_event(ev, facts, cls)
            if c:
                out.append(c)
    out.extend(path_searches(facts, cls, claimed))
    out.extend(race_causes(facts))
    out.extend(signal_causes(facts, chain))
    out.extend(process_causes(facts, chain))
    return out


_WORD = re.compile(r"[A-Za-z][\w.+-]{3,}")


def reported_children(facts, chain, log):
    """Failed children of the chain's processes, off the chain, whose command
    line names a word of the chain's complaint: meson's "Dependency "systemd"
    not found, tried pkgconfig" reports `pkg-config --modversion systemd`,
    which failed, although meson went on to try cmake, whose failure the
    chain followed. Their file searches are candidates too."""
    words = set(_WORD.findall(log.text))
    out = []
    for p in chain:
        q = facts.procs.get(p)
        for c in (q.children if q else ()):
            cq = facts.procs.get(c)
            if c in chain or c in facts.threads or cq is None or not cq.failed:
                continue
            if any(a in words for a in cq.argv[1:]):
                out.append(c)
    return out


# -- see past the symptom: data flow -----------------------------------------------

# How many producers deep `why` follows (a generated file made from another).
PRODUCER_DEPTH = 4


def _follow_data_flow(ranked, facts, chain, cls, depth=0):
    """If the top cause is a file the build makes that was missing at that
    point (filestate.py), and a process that was to make it failed earlier
    (producers.py), put that process's own causes first, and follow again
    from the best of them (a header generated from a file another step was
    to make). The first hop is the `via` the user sees; every hop adds its
    events to the top cause's `evidence_chain`."""
    if not ranked or depth >= PRODUCER_DEPTH:
        return ranked
    top = ranked[0]
    path = missing_product(top, facts, cls)
    found = find_producer(facts, path, top["seq"], chain) if path else None
    if found is None:
        return ranked
    producer, removed = found
    sub = _chain_from(facts, producer)
    inner = [c for c in candidates(facts, sub, cls)
             if c["proc"] == producer or is_ancestor(producer, c["proc"])]
    inner = [c for c in rank(inner, facts, sub) if c["score"] > -3]
    if not inner:
        return ranked
    # The symptom, where the file went away, each producer's exit, then the cause.
    hop = [top["seq"]] + ([removed] if removed else []) + \
        [facts.procs[p].exit_seq for p in sub if facts.procs[p].exit_seq]
    for c in inner:
        c["via"] = top.get("via") or {"missing": path, "consumer": top["proc"],
                                      "producer": producer}
        c["followed"] = top.get("followed", []) + hop
    seen = {c["seq"] for c in inner}
    inner = _follow_data_flow(inner, facts, sub, cls, depth + 1)
    rest = [c for c in ranked if c["seq"] not in seen]
    # A cause of the cause outranks the symptom: it inherits the consumer's
    # standing, lifted by the least that puts it above everything left.
    lift = max((c["score"] for c in rest), default=0) + 1 - min(c["score"] for c in inner)
    if lift > 0:
        for c in inner:
            c["score"] += lift
    return inner + rest


def _chain_from(facts, proc):
    """[proc, ..., origin]: its failure chain, as failure_chain from the builder."""
    sub = [proc]
    while True:
        nxt = _failed_child(facts, sub[-1])
        if nxt is None or nxt in sub:
            return sub
        sub.append(nxt)


# -- the report -----------------------------------------------------------------

def explain(header, processes, events, problems=(), summary=None, trace_path="TRACE",
            peek=None, phases=None):
    """The whole `why` answer as plain data (render/ formats it)."""
    with no_cycle_gc():
        return _explain(header, processes, events, problems, summary, trace_path, peek,
                        phases)


def _explain(header, processes, events, problems, summary, trace_path, peek, phases=None):
    facts = collect(header, processes, events)
    facts.peek = peek
    facts.host = HostView(summary)
    root = facts.procs.get("1")
    # The builder's own exit, before the summary's (which counts Nix's checks
    # on the outputs): a builder that exited 0 failed no call worth blaming.
    output = output_cause(facts, summary, root.exit_status if root else None, trace_path)
    # A recording without its end has no verdict (incomplete.py); `why`
    # explains the last failure it saw, if any. The builder's own exit
    # decides, not the summary's (an interrupt makes that 1).
    inc = incompleteness(summary, problems, facts)
    decided = bool(inc) and decided_failure(facts)
    _apply_summary(facts, summary)
    cls = PathClassifier(facts.plan)
    if inc:
        forget_interrupt(facts, summary)
    if inc and not decided:
        last = None if output else last_failure(facts)
        chain = _chain_from(facts, last) if last else []
        status = "incomplete"
    else:
        chain = [] if output else failure_chain(facts)
        status = "failed" if chain or output else "succeeded"
    ranked = [output] if output else []
    if chain:
        ranked = rank(candidates(facts, chain, cls), facts, chain)
        ranked = _follow_data_flow(ranked, facts, chain, cls)
        ranked = [c for c in ranked if c["score"] > -3] or ranked[:1]
        limit = [c for c in ranked if c["kind"] == "limit"]
        if limit:
            # The recorder ended the build: that is certain, whatever else failed.
            rest = [c for c in ranked if c["kind"] != "limit"]
            _above(limit, rest)
            ranked = limit + rest
        elif not ranked or ranked[0]["kind"] == "fallback" or ranked[0]["score"] < GOOD:
            ranked = _with_fallback(ranked, facts, chain)
        ranked = order(ranked)
    for c in ranked:
        c["evidence_chain"] = _evidence_chain(c)
        hints.describe(c, facts)
    if chain and phases:
        # A stdenv build: the cause inside the phase that failed (phases.py).
        ranked = phase_focus(ranked, facts, chain, phases, trace_path)
    until = ranked[0]["seq"] if ranked else facts.last_seq
    return {
        "status": status,
        "exit_code": root.exit_status if root else None,
        "exit_signal": root.exit_signal if root else None,
        "killed": facts.killed,
        "partial": list(problems or ()),
        "incomplete": inc,
        "failure_chain": [_chain_entry(facts, p) for p in chain],
        "root_causes": [_public(c) for c in ranked[:10]],
        "stderr_tail": _stderr_tail(facts, chain),
        "replay": f"nixrec replay {trace_path} --until {until}",
    }


def _evidence_chain(c):
    """The seqs `why` followed to this cause, symptom first: the producer
    hops (_follow_data_flow), the cause's event, the events it stands with
    (an include directory's failed stat)."""
    own = [c["seq"]] + [e[0] for e in c.get("extra_events", ())]
    return [s for s in c.get("followed", ()) if s not in own] + own


def _apply_summary(facts, summary):
    root = facts.proc("1")
    if summary:
        if summary.get("exit_status") is not None:
            root.exit_status = summary["exit_status"]
        if summary.get("exit_signal"):
            root.exit_signal = summary["exit_signal"]
        facts.killed = summary.get("killed") or None


def _with_fallback(ranked, facts, chain):
    """No cause explains it well: point at the origin's last failed call."""
    origin = chain[-1]
    fails = [e for e in facts.failures_of(origin)
             if not is_noise(e.path or e.args.get("address") or "", facts, e.seq)
             and not (e.path and facts.base_succeeded_later(e.path, e.seq))]
    q = facts.procs[origin]
    if fails:
        ev = fails[-1]
        fb = _cause("fallback", ev, facts)
    else:
        fb = {"kind": "fallback", "seq": q.exit_seq or q.last_seq, "proc": origin,
              "argv": list(q.argv), "syscall": None, "errno": None}
    rest = [c for c in ranked if c["seq"] != fb["seq"]]
    # Nothing explains it well: the origin's last failed call is the best
    # lead, one above the rest.
    fb["score"] = -1
    _above([fb], rest)
    return [fb] + rest


def _above(first, rest):
    """Raise the scores of `first` (in place) to one above the best of `rest`."""
    top = max((c["score"] for c in rest), default=None)
    if top is not None:
        for c in first:
            c["score"] = max(c["score"], top + 1)


PUBLIC = ("kind", "seq", "proc", "argv", "syscall", "errno", "path", "address",
          "host", "command", "header", "looked_for", "looked_in", "interpreter", "link",
          "link_target", "accessed", "hidden", "store_path",
          "creator", "created_seq", "signal", "limit", "setting", "target_pid",
          "access", "via", "check", "output", "forbidden", "through", "blamed_files",
          "summary", "hint", "on_host", "tolerated", "log_idiom",
          "evidence", "evidence_chain", "log_mention", "score")


def _public(c):
    out = {k: c[k] for k in PUBLIC if c.get(k) is not None}
    if "argv" in out:
        out["argv"] = list(out["argv"])
    return out


def _chain_entry(facts, proc):
    q = facts.procs[proc]
    return {"proc": proc, "pid": q.pid, "argv": list(q.argv),
            "exit_code": q.exit_status, "signal": q.exit_signal}


def _stderr_tail(facts, chain, limit=12):
    """The last lines of the build log, as Nix shows them, with who wrote them."""
    lines = [(s, p, l) for p in facts.stderr for s, l in facts.stderr[p]]
    lines.sort()
    return [{"proc": p, "text": l} for _, p, l in lines[-limit:]]
