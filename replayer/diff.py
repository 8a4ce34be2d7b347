"""`nixrec diff A B`: why two recordings of a build differ (docs/analysis.md).

Two traces of the same derivation (two machines, two days, a sandboxed and a
`--no-sandbox` build, `--cores 1` and `--cores 2`) are aligned the way replay
follows a live build: by process tree path and each process's own event
order, tolerant of `make -j` (procmap.Follower; B plays the live build, A the
recording). That is why the verb lives here and not in analysis/: the
alignment is the replay matcher's (one owner), and analysis/ may import only
the trace format and the syscall table. What it reports, in this order:

1. the inputs and plan that differ (drv, closure hashes, sandbox paths,
   cores, environment, host facts);
2. per process, the first event where the two go different ways (another
   call, exec, argv, path, outcome, a process only on one side), with both
   seqs; from there on that process and the children it forks later are not
   compared (their differences follow from it);
3. each output file that differs (both outputs kept in TRACE.d/outputs/),
   the event that wrote it on each side, and what its writer read that
   differs from run to run (analysis/nondet.py), with 2.'s differences in
   the processes that made it.

Everything is a value: `diff_traces` returns one dict, the JSON of
`--json`; analysis/render/text.py formats it.
"""

import os

from nixrec.analysis.nondet import Flow, rank
from nixrec.recorder.nix.outputs import differing
from nixrec.recorder.tracefile import Event
from nixrec.recorder.tracefile.reader import open_trace
from nixrec.replayer.matcher import RecordedIndex, counted, hooked, same_argv
from nixrec.replayer.matcher import Divergence
from nixrec.replayer.procmap import Follower

# Output files named per output (differing() stops there): enough to see a
# pattern; the count says when there were more.
FILES_LIMIT = 20

# Plan fields compared, in the order they are printed: (key, what it is).
# Not compared: host_uid/host_gid (a fresh id per run), start time, the drv
# text (the drv path names it).
PLAN_FIELDS = (("no_sandbox", "sandbox off (--no-sandbox)"),
               ("sandbox_paths", "sandbox paths"),
               ("build_dir", "build directory"),
               ("cores", "cores (NIX_BUILD_CORES)"),
               ("hostname", "hostname"), ("domainname", "domainname"),
               ("network", "own network namespace"), ("uid", "uid"), ("gid", "gid"),
               ("uname26", "impersonate-linux-26"), ("fixed_output", "fixed output"))
# Environment variables the plan fields above already name.
ENV_OF_FIELD = {"NIX_BUILD_CORES": "cores"}


def diff_traces(path_a, path_b) -> dict:
    """The whole comparison of two traces, as one dict (the --json output)."""
    ra, rb = open_trace(path_a), open_trace(path_b)
    try:
        return _diff(path_a, ra, path_b, rb)
    finally:
        ra.close()
        rb.close()


def _diff(path_a, ra, path_b, rb) -> dict:
    ha, hb = ra.header, rb.header
    pa, pb = ha.get("plan") or {}, hb.get("plan") or {}
    plan, env = plan_differences(ha, hb)
    files = output_differences(path_a, ra, path_b, rb)
    # Who made what is asked only of files that differ (most pairs: none).
    flow_a = Flow(f["a_path"] for f in files if f.get("a_path"))
    flow_b = Flow(f["b_path"] for f in files if f.get("b_path"))
    index = RecordedIndex()
    if flow_a.targets:
        for ev in ra.events():
            index.add(ev)
            flow_a.add(ev)
    else:
        for ev in ra.events():
            index.add(ev)
    rebase = _rebaser(pb.get("build_dir"), pa.get("build_dir"))
    divs = align(index, rb.events(), rebase, flow_b.add if flow_b.targets else None)
    divs = [_divergence(d, ra.processes, rb.processes, index) for d in divs]
    for d in divs:
        d["env"] = _env_in_argv(d, env)
    inputs = [p for p in plan if p["what"] == "closure"]
    for f in files:
        f["sources"] = _sources_of(f, flow_a, flow_b, divs, env, inputs)
        f["a_writer"] = _writer(flow_a, f.get("a_path"), ra.processes)
        f["b_writer"] = _writer(flow_b, f.get("b_path"), rb.processes)
    outputs = _outputs_made(ra, rb)
    rep = {"a": path_a, "b": path_b, "plan": plan, "divergences": divs, "files": files,
           "outputs": outputs, "partial": {"a": ra.problems, "b": rb.problems}}
    rep["first_cause"] = first_cause(rep)
    rep["different"] = bool(plan or divs or files or any(o["only_in"] for o in outputs))
    return rep


# --- 1. inputs and plan ---------------------------------------------------------------

def plan_differences(ha, hb):
    """-> ([{what, a, b}] in print order, {env var: (a, b)} that differ)."""
    out = []
    if ha.get("drv_path") != hb.get("drv_path"):
        out.append({"what": "drv", "a": ha.get("drv_path"), "b": hb.get("drv_path")})
    ca = {c["path"]: c.get("hash") for c in ha.get("closure") or ()}
    cb = {c["path"]: c.get("hash") for c in hb.get("closure") or ()}
    for path in sorted(set(ca) | set(cb)):
        if ca.get(path) != cb.get(path):
            out.append({"what": "closure", "path": path, "a": ca.get(path),
                        "b": cb.get(path)})
    pa, pb = ha.get("plan") or {}, hb.get("plan") or {}
    for key, what in PLAN_FIELDS:
        if pa.get(key) != pb.get(key):
            out.append({"what": key, "label": what, "a": pa.get(key), "b": pb.get(key)})
    env = _env_differences(pa, pb)
    for var, (a, b) in env.items():
        if var not in ENV_OF_FIELD:
            out.append({"what": "env", "var": var, "a": a, "b": b})
    host_a, host_b = ha.get("host") or {}, hb.get("host") or {}
    for key in sorted(set(host_a) | set(host_b)):
        if host_a.get(key) != host_b.get(key):
            out.append({"what": "host", "key": key, "a": host_a.get(key),
                        "b": host_b.get(key)})
    if ha.get("calls") != hb.get("calls"):
        out.append({"what": "calls", "a": _only(ha.get("calls"), hb.get("calls")),
                    "b": _only(hb.get("calls"), ha.get("calls"))})
    return out, env


def _env_differences(pa, pb):
    """The builder's environment, variable by variable; B's build directory
    read as A's (TMPDIR=/build against the host path of a --no-sandbox run is
    the build directory's difference, printed once)."""
    ea, eb = dict(pa.get("env") or ()), dict(pb.get("env") or ())
    da, db = pa.get("build_dir"), pb.get("build_dir")
    found = {}
    for var in sorted(set(ea) | set(eb)):
        a, b = ea.get(var), eb.get(var)
        if a != b and not (da and db and b is not None and b.replace(db, da) == a):
            found[var] = (a, b)
    return found


def _only(xs, ys):
    return sorted(set(xs or ()) - set(ys or ()))


# --- 2. the events, process by process -------------------------------------------------

def align(index, events_b, rebase=None, see=None):
    """B's events against A's index, as replay follows a live build:
    -> the Divergences, the first of each process (then the ones that
    stopped short of A). `see` is handed every event of B as read."""
    follow = Follower(index)
    found = []
    for ev in events_b:
        if see is not None:
            see(ev)
        if rebase is not None:
            ev = rebase(ev)
        d = None
        if counted(ev) and hooked(ev):      # a call: replay's entry hook sees it
            # The common case: exactly A's call at its place.
            if ev.kind == "syscall" and follow.ran(ev) is not None:
                continue
            loc, d = follow.entry(ev, follow.peek(ev), ev.seq)
            if d is None and ev.kind == "exec" and ev.proc not in follow.lenient:
                d = _argv_differs(follow, ev, loc)
        _, later = follow.emitted(ev, ev.seq, d is None)
        d = d or later
        if d is not None:
            d.b_event = ev
            found.append(d)
            follow.stop_following(ev.proc)
    return found + follow.unreached(each=True)


def _argv_differs(follow, ev, loc):
    """Replay lets a job's argv differ (make's next job is another sibling);
    diff names it: the same program run with other words."""
    if follow.index.count(loc.proc) < loc.k or ev.proc in follow.broken:
        return None
    rec = follow.index.argv(loc.proc, loc.k)
    pid = follow.index.key(loc.proc, loc.k)[5]
    argv = tuple(ev.args.get("argv") or ())
    if rec is None or same_argv(rec, argv, pid, ev.pid):
        return None
    seq = follow.index.at(loc)[0]
    return Divergence("a different argv", loc, seq, ev.seq, _argv_words(rec, argv),
                      _argv_words(argv, rec))


def _argv_words(argv, other):
    """The words of argv that are not in the other's, for the report."""
    diff = [w for i, w in enumerate(argv) if i >= len(other) or other[i] != w]
    return f"execve(argv[0]={argv[0] if argv else None!r}, differing words {diff[:6]!r})"


def _rebaser(old, new):
    """-> ev -> ev with B's build directory read as A's (a --no-sandbox build
    runs in a host directory), or None when both are the same."""
    if not old or not new or old == new:
        return None

    def move(p):
        if isinstance(p, str) and (p == old or p.startswith(old + "/")):
            return new + p[len(old):]
        return p

    def rebase(ev):
        argv = ev.args.get("argv") if ev.kind == "exec" else None
        if move(ev.path) is ev.path and move(ev.path2) is ev.path2 and \
                not any(isinstance(w, str) and old in w for w in argv or ()):
            return ev
        args = dict(ev.args)
        if argv is not None:
            args["argv"] = [w.replace(old, new) if isinstance(w, str) else w for w in argv]
        return Event(ev.kind, ev.proc, pid=ev.pid, syscall=ev.syscall, path=move(ev.path),
                     path2=move(ev.path2), flags=ev.flags, result=ev.result,
                     errno=ev.errno, args=args, time=ev.time, seq=ev.seq)
    return rebase


def _divergence(d, procs_a, procs_b, index):
    """A Divergence as the report's dict: both sides' seqs and programs."""
    a_proc, b_proc = d.loc.proc, d.live_proc or d.loc.proc
    ev = getattr(d, "b_event", None)
    rec = index.at(d.loc)
    path = (ev.path if ev is not None else None) or (rec[1][2] if rec else None)
    return {"why": d.why, "a_proc": a_proc, "b_proc": b_proc,
            "a_seq": d.rec_seq, "b_seq": d.live_seq, "a": d.recorded,
            "b": d.now,
            "path": path, "a_argv0": _argv0(procs_a, a_proc),
            "b_argv0": _argv0(procs_b, b_proc) if ev is not None else None}


def _env_in_argv(d, env):
    """The environment variable whose two values are the differing argv
    words (`make -j$NIX_BUILD_CORES`: -j1 / -j2), or None."""
    if d["why"] != "a different argv":
        return None
    for var, (a, b) in env.items():
        if a and b and a in d["a"] and b in d["b"]:
            return var
    return None


def _argv0(procs, proc):
    p = procs.get(proc)
    return os.path.basename(p.argv[0]) if p is not None and p.argv else None


# --- 3. outputs ----------------------------------------------------------------------

def _kept(path, reader, name):
    """Where the recorder kept output `name` of this trace, or None."""
    out = ((reader.header.get("plan") or {}).get("outputs") or {}).get(name)
    if not out or name not in ((reader.summary or {}).get("outputs") or {}):
        return None, out
    kept = f"{path}.d/outputs/{os.path.basename(out)}"
    return (kept if os.path.lexists(kept) else None), out


def _outputs_made(ra, rb):
    """Each output: made by both builds, or by one only."""
    sa = set((ra.summary or {}).get("outputs") or ())
    sb = set((rb.summary or {}).get("outputs") or ())
    return [{"output": n, "only_in": None if n in sa and n in sb else
             ("a" if n in sa else "b")} for n in sorted(sa | sb)]


def output_differences(path_a, ra, path_b, rb):
    """Files of the outputs both builds made and kept that differ, as Nix's
    --check compares them (recorder/nix/outputs.differing: type, executable bit,
    link target, contents)."""
    files = []
    names = set((ra.summary or {}).get("outputs") or ()) & \
        set((rb.summary or {}).get("outputs") or ())
    for name in sorted(names):
        (ka, oa), (kb, ob) = _kept(path_a, ra, name), _kept(path_b, rb, name)
        if ka is None or kb is None:
            files.append({"output": name, "file": None, "how": "not kept (TRACE.d/outputs "
                          "is missing)", "a_path": None, "b_path": None})
            continue
        for p in differing(ka, kb, FILES_LIMIT):
            rel = p[len(kb):]
            files.append({"output": name, "file": rel or "/", "how": _how(ka + rel, p),
                          "a_path": oa + rel, "b_path": ob + rel})
    return files


def _how(a, b):
    if not os.path.lexists(a):
        return "only in B"
    if not os.path.lexists(b):
        return "only in A"
    if os.path.islink(a) or os.path.islink(b):
        return "another link target" if os.path.islink(a) and os.path.islink(b) \
            else "another type"
    if os.path.isdir(a) != os.path.isdir(b):
        return "another type"
    if os.access(a, os.X_OK) != os.access(b, os.X_OK) and \
            os.path.getsize(a) == os.path.getsize(b):
        return "another executable bit"
    return "contents"


def _writer(flow, path, procs):
    w = flow.writer.get(path) if path else None
    if w is None:
        return None
    p = procs.get(w[1])
    return {"seq": w[0], "proc": w[1], "argv": list(p.argv[:4]) if p else []}


def _sources_of(f, flow_a, flow_b, divs, env, inputs):
    """What may have made file f differ: the differences diff found in the
    processes that made it (either side), the inputs and environment that
    differ, and what its makers read that differs between runs."""
    found = []
    for flow, side, key in ((flow_a, "a", "a_path"), (flow_b, "b", "b_path")):
        made = flow.makers(f.get(key)) if f.get(key) else None
        if made is None:
            continue
        (wseq, _), who = made
        how = dict(who)
        for d in divs:
            seq, via = d.get(f"{side}_seq"), how.get(d.get(f"{side}_proc"))
            # An ancestor's difference after it forked the writer's line is
            # not what the writer got from it (the builder's exit status).
            if via is None or (via == "ancestor" and (seq is None or seq > wseq)):
                continue
            if not any(s.get("divergence") is d for s in found):
                found.append(dict(_divergence_cause(d), proc=d[f"{side}_proc"], seq=seq,
                                  divergence=d, via=via, side=side))
        for s in flow.sources_of(f[key]):
            if not any(x["kind"] == s["kind"] and x["what"] == s["what"] for x in found):
                found.append(dict(s, side=side))
    for c in inputs:
        found.append({"kind": "input", "proc": None, "seq": None, "side": None,
                      "what": f"input {c['path']} differs ({c['a']} / {c['b']})"})
    for var, (a, b) in env.items():
        kind = "cores" if var == "NIX_BUILD_CORES" else "env"
        found.append({"kind": kind, "proc": "1", "seq": None, "side": None, "via": "ancestor",
                      "what": f"{var} is {a!r} in A, {b!r} in B (the builder's "
                              "environment, which every process inherits)"})
    for s in found:
        s.pop("divergence", None)
    return rank(found)


def _divergence_cause(d):
    """A difference of the events as a cause: `divergence`, or `cores`/`env`
    when it is an argv whose differing words are the values of a variable
    that differs (make -j$NIX_BUILD_CORES)."""
    what = f"{d['why']}: {d['a']} / {d['b']}"
    if d.get("env"):
        return {"kind": "cores" if d["env"] == "NIX_BUILD_CORES" else "env",
                "what": f"{what} (the values of {d['env']})"}
    return {"kind": "divergence", "what": what}


def first_cause(rep):
    """The one line a user reads first: the top source of the first file
    that differs, else the earliest divergence, else the first plan
    difference; None when nothing differs."""
    for f in rep["files"]:
        if f["sources"]:
            return dict(f["sources"][0], file=f["file"], output=f["output"])
    if rep["files"]:
        f = rep["files"][0]
        return {"kind": "unknown", "file": f["file"], "output": f["output"],
                "what": "nothing its makers read is known to differ"}
    divs = [d for d in rep["divergences"] if d["a_seq"] or d["b_seq"]]
    if divs:
        d = min(divs, key=lambda d: d["a_seq"] or d["b_seq"])
        return dict(_divergence_cause(d), proc=d["a_proc"], seq=d["a_seq"], path=d["path"])
    only = [o for o in rep["outputs"] if o["only_in"]]
    if only:
        return {"kind": "output", "what": f"output {only[0]['output']} made by "
                                          f"{only[0]['only_in'].upper()} only"}
    if rep["plan"]:
        p = rep["plan"][0]
        return {"kind": "plan", "what": f"{p['what']}: {p.get('a')!r} / {p.get('b')!r}"}
    return None

