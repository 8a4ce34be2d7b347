"""The build as a graph (`nixrec graph`): processes, files, sockets and what linked them.

Built by streaming events: one node per process / distinct path / address and
one edge per (source, target, kind, ok), carrying the first seq, the last seq
and a count, so memory grows with processes and paths, not with events.

Node ids: "proc:1.2", "file:/build/x.c", "net:1.1.1.1:80", "dns:example.com".
Edge kinds: fork, exec, read, write, create, delete, rename, connect, wait (+stat).

`why` builds the data-flow part only (flow_only: processes, what they made,
wrote, removed, and their argv and cwd) in its own pass, and asks it who
makes a path (makers) and who was asked to (asked_to_make): the producer a
missing file leads to (rootcause.py, "the producer chain").
"""

import posixpath
import re

import networkx as nx

from nixrec.analysis.deps import access_of, creates, deletes, store_path_of
from nixrec.analysis.fdflow import FdFlow
from nixrec.recorder.trace.syscalls import OPEN_CALLS


def parent_of(proc: str):
    """The parent's tree path ("1.2.3" -> "1.2"); None for the builder."""
    return proc.rsplit(".", 1)[0] if "." in proc else None


class GraphBuilder:
    def __init__(self, header=None, processes=None, fold_store=False, hide_reads=False,
                 flow_only=False):
        self.g = nx.MultiDiGraph()
        self.fold_store = fold_store
        self.hide_reads = hide_reads
        # Data flow only: no reads, stats, sockets or waits (what `why` asks).
        self.flow_only = flow_only
        # Pipes and inherited fds (fdflow.py): fed by facts.py for `why`.
        self.fd = FdFlow() if flow_only else None
        plan = (header or {}).get("plan") or {}
        self.store_dir = plan.get("store_dir") or "/nix/store"
        # The builder starts in the build directory (Nix's cwd for it).
        self.g.graph["build_dir"] = plan.get("build_dir") or "/build"
        for path, p in (processes or {}).items():
            self._proc(path, argv=list(p.argv), parent=p.parent,
                       exit_status=p.exit_status, exit_signal=p.exit_signal)

    # -- nodes ----------------------------------------------------------------

    def _proc(self, proc, **attrs):
        n = "proc:" + proc
        if n not in self.g:
            self.g.add_node(n, type="process", proc=proc, parent=parent_of(proc),
                            argv=[], cwd=None, exit_status=None, exit_signal=None)
        for k, v in attrs.items():
            if v is not None:
                self.g.nodes[n][k] = v
        return n

    def _file(self, path):
        if self.fold_store:
            path = store_path_of(path, self.store_dir) or path
        n = "file:" + path
        if n not in self.g:
            self.g.add_node(n, type="file", path=path)
        return n

    def _net(self, ev):
        if ev.args.get("dns"):
            n = "dns:" + ev.args["dns"]
            self.g.add_node(n, type="dns", host=ev.args["dns"])
            return n
        n = "net:" + ev.args["address"]
        self.g.add_node(n, type="socket", address=ev.args["address"],
                        family=ev.args.get("family"))
        return n

    def _edge(self, u, v, kind, ev):
        ok = not ev.failed
        key = kind if ok else kind + "!"
        data = self.g.get_edge_data(u, v, key)
        if data is None:
            self.g.add_edge(u, v, key=key, kind=kind, ok=ok, seq=ev.seq,
                            last_seq=ev.seq, count=1,
                            **({"errno": ev.errno} if ev.errno else {}))
        else:
            data["last_seq"] = ev.seq
            data["count"] += 1

    # -- events ----------------------------------------------------------------

    def add(self, ev):
        p = self._proc(ev.proc)
        if ev.kind == "fork":
            child = ev.args.get("child")
            if child:
                c = self._proc(child, parent=ev.proc)
                self.g.nodes[c]["cwd"] = self.g.nodes[p]["cwd"]
                self._edge(p, c, "fork", ev)
        elif ev.kind == "exec":
            if not ev.failed:
                self._proc(ev.proc, argv=list(ev.args.get("argv") or []))
            if ev.path:
                self._edge(self._file(ev.path), p, "exec", ev)
        elif ev.kind == "exit":
            self._proc(ev.proc, exit_status=ev.args.get("status"),
                       exit_signal=ev.args.get("signal"))
        elif ev.kind == "syscall":
            self._syscall(ev, p)

    def add_process(self, ev):
        """A fork or a successful exec, for a flow_only graph: only what
        asked_to_make reads (the child's cwd, the new argv), no edges. It runs
        on every process of the build, so it skips _proc's generic path."""
        nodes = self.g.nodes
        p = self._proc(ev.proc)
        if ev.kind == "fork":
            child = ev.args.get("child")
            if child:
                c = self._proc(child)
                nodes[c]["parent"] = ev.proc
                nodes[c]["cwd"] = nodes[p]["cwd"]
                self.fd.fork(ev.proc, child, ev.seq)
        elif not ev.failed:
            nodes[p]["argv"] = list(ev.args.get("argv") or ())
            self.fd.exec(ev.proc)

    def add_fd(self, ev):
        """A successful pipe, socketpair or dup, for a flow_only graph."""
        self.fd.add(ev)

    def add_flow(self, ev, made, gone):
        """A successful syscall that is no read or stat (or a chdir), for a
        flow_only graph; made and gone are deps.creates/deletes of it, which
        the caller knows already (this runs on every write of a big build)."""
        if ev.args and (ev.args.get("address") or ev.args.get("dns")):
            return
        if ev.syscall in OPEN_CALLS and not ev.failed and (made or access_of(ev) == "write"):
            self.fd.opened(ev)
        self._syscall(ev, self._proc(ev.proc), made, gone)

    def _syscall(self, ev, p, made=None, gone=None):
        name = ev.syscall or ""
        if self.flow_only and (name.startswith("wait") or ev.args.get("address")
                               or ev.args.get("dns")):
            return
        if name.startswith("wait") and ev.args.get("child"):
            self._edge(p, self._proc(ev.args["child"]), "wait", ev)
            return
        if ev.args.get("address") or ev.args.get("dns"):
            self._edge(p, self._net(ev), "connect", ev)
            return
        if name == "chdir" and ev.path and not ev.failed:
            self.g.nodes[p]["cwd"] = ev.path
        if not ev.path:
            return
        access = access_of(ev)
        if made is None and gone is None:
            made, gone = creates(ev), deletes(ev)
        if name.startswith("rename") and ev.path2:
            self._edge(self._file(ev.path), self._file(ev.path2), "rename", ev)
            self._edge(p, self._file(ev.path2), "rename", ev)
        elif made:
            self._edge(p, self._file(made), "create", ev)
        elif gone:
            self._edge(p, self._file(gone), "delete", ev)
        elif access == "write":
            self._edge(p, self._file(ev.path), "write", ev)
        elif access in ("read", "stat"):
            if self.flow_only or (self.hide_reads and not ev.failed):
                return
            self._edge(self._file(ev.path), p, access, ev)


def build_graph(header, processes, events, fold_store=False, hide_reads=False):
    b = GraphBuilder(header, processes, fold_store=fold_store, hide_reads=hide_reads)
    for ev in events:
        b.add(ev)
    return b.g


# -- data flow: who makes a path ---------------------------------------------------

_MAKE_EDGES = ("create", "write", "rename")


def makers(g, path, after=0, before=None, fd=None):
    """[(proc, kind, seq, ok)]: the processes that created, wrote or renamed
    onto `path`, with an edge seq in (after, before) (the edge's first or last);
    with `fd` (fdflow.FdFlow), also those that held a write fd on it they
    inherited ("write") and the writers of the pipes its writers read ("pipe")."""
    out = []
    if fd is not None:
        held = [(p, "write", seq) for p, seq in fd.file_writers(path)]
        for p, kind, seq in held + [(p, "pipe", seq) for p, _, seq in fd.upstream(path)]:
            if seq > after and (before is None or seq < before):
                out.append((p, kind, seq, True))
    n = "file:" + path
    if n not in g:
        return out
    for u, _, d in g.in_edges(n, data=True):
        if d["kind"] not in _MAKE_EDGES or not u.startswith("proc:"):
            continue
        seqs = [s for s in (d["seq"], d["last_seq"])
                if s > after and (before is None or s < before)]
        if seqs:
            out.append((u[5:], d["kind"], max(seqs), d["ok"]))
    return out


# `-o X`, `-oX`, `--output=X`, `--out X`, `> X`: an argument that names an output.
_OUT_FLAG = re.compile(r"^(?:-o|--?out(?:put)?(?:-file)?|-output|>{1,2})$")
_OUT_JOINED = re.compile(r"^(?:-o|--?out(?:put)?(?:-file)?=|>{1,2})(.+)$")


def asked_to_make(g, path):
    """{proc: strength} of processes whose command line names `path` (resolved
    against their cwd): 2 as an output (-o X, --out=X, > X, also inside a
    `sh -c` script), 1 as a plain argument. A compiler told `-o conftest` is
    asked to make conftest even when it failed before opening it."""
    build_dir = g.graph.get("build_dir") or "/build"
    name = posixpath.basename(path)
    out = {}
    for n, d in g.nodes(data=True):
        if d.get("type") != "process" or not d.get("argv"):
            continue
        if not any(name in a for a in d["argv"][1:]):
            continue             # the cheap test first: most processes never name it
        cwd = d.get("cwd") or build_dir
        words = [w for a in d["argv"][1:] for w in _words(a)]
        best = 0
        for i, w in enumerate(words):
            m = _OUT_JOINED.match(w)
            if m and _resolve(m.group(1), cwd) == path:
                best = 2
            elif _resolve(w, cwd) == path:
                prev = words[i - 1] if i else ""
                best = max(best, 2 if _OUT_FLAG.match(prev) else 1)
        if best:
            out[d["proc"]] = best
    return out


def _words(arg):
    """An argument, or the words of a `sh -c` script (split on blanks and ;|&)."""
    if " " not in arg and "\n" not in arg:
        return [arg]
    return [w.strip("'\"") for w in re.split(r"[\s;|&()]+", arg) if w]


def _resolve(word, cwd):
    if not word or word.startswith("-"):
        return None             # an option, never a path
    return posixpath.normpath(posixpath.join(cwd, word))


def failure_subgraph(g, why: dict):
    """The failure's neighbourhood: chain processes, the processes of the top
    causes, what those touched that failed or that the causes name, one hop out."""
    procs = {"proc:" + e["proc"] for e in why.get("failure_chain", ())}
    named = set()
    for c in why.get("root_causes", ())[:3]:
        procs.add("proc:" + c["proc"])
        for k, prefix in (("path", "file:"), ("address", "net:"), ("host", "dns:")):
            if c.get(k):
                named.add(prefix + c[k])
        if c.get("creator"):
            procs.add("proc:" + c["creator"])
    keep = set(p for p in procs if p in g) | set(n for n in named if n in g)
    for p in list(keep):
        for _, v, d in g.out_edges(p, data=True):
            if not d["ok"] or v in named or d["kind"] in ("fork", "wait"):
                keep.add(v)
        for u, _, d in g.in_edges(p, data=True):
            if not d["ok"] or u in named or d["kind"] == "exec":
                keep.add(u)
    # Processes: only the chain and the causes' processes, not every sibling.
    keep = {n for n in keep if not n.startswith("proc:") or n in procs}
    return g.subgraph(keep).copy()
