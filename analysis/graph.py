"""The build as a graph (`nixrec graph`): processes, files, sockets and what linked them.

Built by streaming events: one node per process / distinct path / address and
one edge per (source, target, kind, ok), carrying the first seq, the last seq
and a count, so memory grows with processes and paths, not with events.

Node ids: "proc:1.2", "file:/build/x.c", "net:1.1.1.1:80", "dns:example.com".
Edge kinds: fork, exec, read, write, create, delete, rename, connect, wait (+stat).
"""

import networkx as nx

from nixrec.analysis.deps import access_of, creates, deletes, store_path_of
from nixrec.analysis.facts import parent_of


class GraphBuilder:
    def __init__(self, header=None, processes=None, fold_store=False, hide_reads=False):
        self.g = nx.MultiDiGraph()
        self.fold_store = fold_store
        self.hide_reads = hide_reads
        plan = (header or {}).get("plan") or {}
        self.store_dir = plan.get("store_dir") or "/nix/store"
        self.cwd = {}
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

    def _syscall(self, ev, p):
        name = ev.syscall or ""
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
            if self.hide_reads and not ev.failed:
                return
            self._edge(self._file(ev.path), p, access, ev)


def build_graph(header, processes, events, fold_store=False, hide_reads=False):
    b = GraphBuilder(header, processes, fold_store=fold_store, hide_reads=hide_reads)
    for ev in events:
        b.add(ev)
    return b.g


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
