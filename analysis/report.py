"""`nixrec report`: what the one-page HTML report shows, as plain data.

The verdict, root cause and failure chain are `why`'s (rootcause.explain),
the dependency and network tables `deps`' (deps.undeclared_accesses): the
caller passes both reports in, so the page says what the verbs say. This
module adds what only the page needs, from one pass over the events: per
process, when it started and ended, its cwd, its exit, its calls by name,
its last failed calls and its last log lines (render/html.py formats it).

It must stay usable on GNU hello (4,700 processes, 235k events, a page of at
most 5 MB): per process it keeps counts and a few last events, never every
event, and the failed calls it marks on the timeline are bucketed.
"""

import collections

from nixrec.analysis.loglines import LineSplitter

# Per process: the failed calls listed in its details (the last ones: a
# compiler's header search fails hundreds of times before it finds one).
FAILED_KEPT = 5
# Failure marks on a process's timeline bar: the failed calls bucketed by
# where they fall (a mark per bucket that has one).
MARK_BUCKETS = 4
# Log lines kept per process, and how long a line may be on the page.
TAIL_LINES = 4
LINE_CHARS = 200
# The argv shown, in characters (make's recipes run to kilobytes).
ARGV_CHARS = 240
# Processes listed in "last log lines": the chain's, then the last writers.
LOG_PROCS = 40


def call_line(ev) -> str:
    """An event as one short line (the page's lists)."""
    if ev.kind == "exec":
        argv = ev.args.get("argv") or []
        call = f"{ev.syscall}({ev.path}, {' '.join(map(str, argv))[:80]})"
    elif ev.kind == "fork":
        call = f"fork(child={ev.args.get('child')})"
    else:
        args = ", ".join(p for p in (ev.path, ev.path2) if p is not None)
        if not args and ev.args.get("address"):
            args = str(ev.args["address"])
        call = f"{ev.syscall or ev.kind}({args})"
    return call + (f" = -1 {ev.errno}" if ev.errno else "")


class _Proc:
    __slots__ = ("start", "end", "cwd", "calls", "nfailed", "failed", "marks", "log")

    def __init__(self, start, cwd):
        self.start, self.end, self.cwd = start, None, cwd
        self.calls = collections.Counter()
        self.nfailed = 0
        self.failed = collections.deque(maxlen=FAILED_KEPT)
        self.marks = []                  # times of failed calls (bucketed at the end)
        self.log = collections.deque(maxlen=TAIL_LINES)


def report_data(header, processes, events, why, deps, trace_path="TRACE", phases=()) -> dict:
    """-> everything the page shows (render/html.py): `why` and `deps` are
    the two verbs' reports of this trace, `phases` the reader's."""
    return assemble(header, processes, collect(header, events), why, deps, trace_path, phases)


class Collected:
    """What one pass over the events keeps for the page (collect)."""

    __slots__ = ("procs", "last_time", "last_writers")

    def __init__(self, procs, last_time, last_writers):
        self.procs, self.last_time, self.last_writers = procs, last_time, last_writers


def collect(header, events) -> Collected:
    """The pass over the events: per process its times, cwd, calls, failed
    calls and last log lines (a function of the events alone, so it can share
    one read of the trace with `why` and `deps`: onepass.py)."""
    plan = header.get("plan") or {}
    procs = {"1": _Proc(0, plan.get("cwd") or "/build")}
    last_time, last_writers = 0, collections.OrderedDict()
    splitter = LineSplitter(TAIL_LINES)     # linear in the log (loglines.py)
    for ev in events:
        last_time = max(last_time, ev.time)
        p = procs.get(ev.proc)
        if p is None:
            p = procs[ev.proc] = _Proc(ev.time, "?")
        if ev.kind == "fork":
            child = ev.args.get("child")
            if child:
                procs[child] = _Proc(ev.time, p.cwd)
            continue
        if ev.kind == "exit":
            p.end = ev.time
            continue
        if ev.kind == "output":
            lines = splitter.feed(ev.proc, ev.args.get("data"))
            p.log.extend(line[:LINE_CHARS] for line in lines)
            last_writers[ev.proc] = None
            last_writers.move_to_end(ev.proc)
            continue
        if ev.kind in ("syscall", "exec"):
            p.calls[ev.syscall or ev.kind] += 1
        if ev.syscall == "chdir" and not ev.errno and ev.path:
            p.cwd = ev.path
        if ev.errno and not (ev.errno == "ECHILD" and ev.syscall == "wait4"):
            # (a shell's wait loop ends with ECHILD: an answer, not a failure)
            p.nfailed += 1
            p.failed.append((ev.seq, call_line(ev)))
            p.marks.append(ev.time)
    for q, line in splitter.flush().items():
        procs[q].log.append(line[:LINE_CHARS])
    return Collected(procs, last_time, last_writers)


def assemble(header, processes, got: Collected, why, deps, trace_path="TRACE",
             phases=()) -> dict:
    """The page's data from the pass (collect) and the `why` and `deps` reports."""
    plan = header.get("plan") or {}
    procs, last_time, last_writers = got.procs, got.last_time, got.last_writers
    chain = [c["proc"] for c in why.get("failure_chain") or ()]
    causes = why.get("root_causes") or []
    rows = _rows(processes, procs, last_time, set(chain),
                 causes[0]["proc"] if causes else None)
    logged = [r for r in chain if procs.get(r) and procs[r].log]
    logged += [q for q in reversed(last_writers) if q not in logged][:LOG_PROCS]
    ran = [p for p in phases or () if p.get("first") is not None]
    undeclared = deps.get("undeclared") or []
    return {
        "trace": trace_path, "name": plan.get("name") or header.get("drv_path"),
        "drv": header.get("drv_path"), "why": why, "duration_us": last_time,
        "rows": rows, "chain": chain, "phases": ran, "groups": _groups(rows, ran),
        # Absent probes folded, as `deps` does (deps.py: not dependencies).
        "undeclared": [u for u in undeclared if u.get("category") != "probe"],
        "probes": [u for u in undeclared if u.get("category") == "probe"],
        "network": [u for u in deps.get("undeclared") or ()
                    if u.get("category") in ("network", "dns")],
        "logs": [{"proc": q, "argv0": _argv0(processes.get(q)),
                  "lines": list(procs[q].log)} for q in logged if q in procs],
        "replay": f"nixrec replay {trace_path} --until ",
    }


def _argv0(proc):
    return (proc.argv[0].rsplit("/", 1)[-1] if proc is not None and proc.argv else "?")


def _rows(processes, procs, total, chain, origin):
    """One timeline row per process, in the order they started."""
    total = max(total, 1)
    rows = []
    # Ties in start time in tree order, without splitting every path (a fork
    # bomb's are thousands of levels deep): fewer levels, then shorter, first.
    for name in sorted(procs, key=lambda q: (procs[q].start, q.count("."), len(q), q)):
        p, meta = procs[name], processes.get(name)
        end = p.end if p.end is not None else total
        status = None
        if meta is not None:
            status = f"signal {meta.exit_signal}" if meta.exit_signal else meta.exit_status
        marks = sorted({min(MARK_BUCKETS - 1, int((t - p.start) * MARK_BUCKETS /
                                                  max(end - p.start, 1)))
                        for t in p.marks})
        rows.append({
            "proc": name, "argv0": _argv0(meta),
            "argv": " ".join(meta.argv)[:ARGV_CHARS] if meta is not None else "",
            "cwd": p.cwd, "exit": status, "start": p.start, "end": end,
            "left": round(100.0 * p.start / total, 2),
            "width": round(max(0.2, 100.0 * (end - p.start) / total), 2),
            "marks": marks if 100.0 * (end - p.start) / total >= 1 else [],
            "nfailed": p.nfailed, "failed": list(p.failed),
            "calls": p.calls.most_common(8), "chain": name in chain,
            "origin": name == origin, "log": list(p.log),
            "failed_exit": status not in (0, None),
        })
    return rows


def _groups(rows, phases) -> list:
    """The timeline as groups of process subtrees, without recursion (a fork
    bomb is thousands of levels deep): [{"phase": phase or None, "roots":
    [row index]}], and in every row "kids" (row indexes, by start), "depth",
    "subtree" (processes under it) and "span_left"/"span_width" (its subtree's
    extent). A process is in the phase it started in; a child that started in
    another phase than its parent heads a subtree of that phase's group."""
    index = {r["proc"]: i for i, r in enumerate(rows)}

    def phase_of(r):
        for k, p in enumerate(phases):
            end = p["start"] + (p.get("duration") or 0)
            if p["start"] <= r["start"] and (r["start"] < end or k == len(phases) - 1):
                return k
        return None

    groups = {}
    for i, r in enumerate(rows):
        r["kids"], r["group"] = [], phase_of(r) if phases else None
        up = r["proc"]
        parent = None
        while "." in up and parent is None:
            up = up.rsplit(".", 1)[0]
            parent = index.get(up)
        r["depth"] = r["proc"].count(".")
        if parent is not None and rows[parent]["group"] == r["group"]:
            rows[parent]["kids"].append(i)
        else:
            groups.setdefault(r["group"], []).append(i)
    # Subtree sizes and extents, children before parents (deeper paths first).
    for i in sorted(range(len(rows)), key=lambda i: -rows[i]["depth"]):
        r = rows[i]
        r["subtree"] = sum(1 + rows[k]["subtree"] for k in r["kids"])
        r["span_l"] = min([r["left"]] + [rows[k]["span_l"] for k in r["kids"]])
        r["span_r"] = max([r["left"] + r["width"]] + [rows[k]["span_r"] for k in r["kids"]])
    order = ([None] if None in groups else []) + [k for k in range(len(phases)) if k in groups]
    return [{"phase": phases[k] if k is not None else None, "roots": groups[k]} for k in order]

