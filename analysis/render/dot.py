"""Graphviz DOT for the build graph (no pydot needed: the format is small)."""

from nixrec.analysis.deps import basename

_SHAPE = {"process": "box", "file": "note", "socket": "diamond", "dns": "diamond"}
_EDGE_STYLE = {"fork": "bold", "wait": "dotted", "exec": "bold", "stat": "dashed"}


def _q(s) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(n, d) -> str:
    t = d.get("type")
    if t == "process":
        argv = d.get("argv") or []
        head = " ".join(str(a) for a in argv[:3])[:60]
        st = d.get("exit_signal") or d.get("exit_status")
        return f"{d.get('proc')} {head}" + (f"\\nexit {st}" if st not in (None, 0) else "")
    if t == "file":
        p = d.get("path", "")
        return p if len(p) <= 60 else ".../" + basename(p)
    return d.get("address") or d.get("host") or n


def graph_dot(g) -> str:
    out = ["digraph build {", "  rankdir=LR;", "  node [fontsize=10];"]
    if g.graph.get("partial"):
        out.append(f"  // partial trace: {g.graph['partial']}")
    for n, d in g.nodes(data=True):
        attrs = [f"label={_q(_label(n, d))}", f"shape={_SHAPE.get(d.get('type'), 'ellipse')}"]
        if d.get("type") == "process" and (d.get("exit_signal") or
                                           d.get("exit_status") not in (None, 0)):
            attrs.append("color=red")
        out.append(f"  {_q(n)} [{', '.join(attrs)}];")
    for u, v, d in g.edges(data=True):
        label = f"{d['kind']} #{d['seq']}" + (f" x{d['count']}" if d["count"] > 1 else "")
        if not d["ok"]:
            label += f" {d.get('errno', 'failed')}"
        attrs = [f"label={_q(label)}"]
        if not d["ok"]:
            attrs.append("color=red")
        if d["kind"] in _EDGE_STYLE:
            attrs.append(f"style={_EDGE_STYLE[d['kind']]}")
        out.append(f"  {_q(u)} -> {_q(v)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def graphml_ready(g):
    """GraphML takes scalars only: join lists, drop Nones."""
    h = g.copy()
    for _, d in h.nodes(data=True):
        _scalars(d)
    for _, _, d in h.edges(data=True):
        _scalars(d)
    return h


def _scalars(d):
    for k in list(d):
        v = d[k]
        if v is None:
            del d[k]
        elif isinstance(v, (list, tuple)):
            d[k] = " ".join(str(x) for x in v)
