"""The build graph: nodes, edges with seqs, folding, hiding reads, the failure view."""

import json

import networkx as nx

from test_analysis_synth import BB, Synth
from test_analysis_rootcause import zlib_build

from nixrec.analysis.graph import build_graph, failure_subgraph
from nixrec.analysis.render.dot import graph_dot, graphml_ready
from nixrec.analysis.render.json import graph_json


def g_of(t, **kw):
    return build_graph(t.header, {}, list(t.events), **kw)


def edges(g, kind):
    return [(u, v, d) for u, v, d in g.edges(data=True) if d["kind"] == kind]


def sample():
    t = Synth()
    t.sys("1", "chdir", "/build/src")
    t.spawn("1", "1.1", BB + "/bin/cp", ["cp", "a", "b"])
    t.open("1.1", "/build/src/a")
    t.open("1.1", "/build/src/a")
    t.open("1.1", "/build/src/b", write=True)
    t.sys("1.1", "renameat2", "/build/src/b", path2="/build/src/c")
    t.sys("1.1", "unlinkat", "/build/src/a")
    t.connect("1.1", "1.1.1.1:80")
    t.open("1.1", BB + "/share/x/y")
    t.finish("1.1", 1)
    t.exit("1", 1)
    return t


def test_nodes_carry_process_facts():
    g = g_of(sample())
    p = g.nodes["proc:1.1"]
    assert p["argv"] == ["cp", "a", "b"] and p["parent"] == "1"
    assert p["exit_status"] == 1 and p["cwd"] == "/build/src"
    assert g.nodes["net:1.1.1.1:80"]["type"] == "socket"


def test_edges_by_kind_with_seq_and_count():
    t = sample()
    g = g_of(t)
    (u, v, d), = edges(g, "fork")
    assert (u, v) == ("proc:1", "proc:1.1") and d["seq"] == 3
    reads = [e for e in edges(g, "read") if e[0] == "file:/build/src/a"]
    assert reads[0][2]["count"] == 2 and reads[0][2]["last_seq"] > reads[0][2]["seq"]
    assert edges(g, "create")[0][1] == "file:/build/src/b"
    assert ("file:/build/src/b", "file:/build/src/c") in [(u, v) for u, v, _ in
                                                          edges(g, "rename")]
    assert edges(g, "delete")[0][1] == "file:/build/src/a"
    conn = edges(g, "connect")[0][2]
    assert conn["ok"] is False and conn["errno"] == "ENETUNREACH"
    assert edges(g, "wait")[0][:2] == ("proc:1", "proc:1.1")
    assert edges(g, "exec")[0][0] == "file:" + BB + "/bin/sh"


def test_fold_store_and_hide_reads():
    g = g_of(sample(), fold_store=True, hide_reads=True)
    assert "file:" + BB in g and "file:" + BB + "/share/x/y" not in g
    assert not [e for e in edges(g, "read") if e[2]["ok"]]


def test_graph_memory_follows_paths_not_events():
    t = Synth()
    for _ in range(500):
        t.open("1", "/build/same")
    t.exit("1", 0)
    g = g_of(t)
    assert g.number_of_edges() == 2      # exec + one read edge counting 500
    assert edges(g, "read")[0][2]["count"] == 500


def test_failure_subgraph_keeps_chain_and_cause():
    t = zlib_build()
    g = g_of(t)
    why = t.why()
    sub = failure_subgraph(g, why)
    assert "proc:1.1.1.1" in sub and "file:/usr/include/zlib.h" in sub
    assert "file:/build/x.c" not in sub          # a successful read, not named
    assert sub.number_of_nodes() < g.number_of_nodes()


def test_renderers(tmp_path):
    g = g_of(sample())
    dot = graph_dot(g)
    assert dot.startswith("digraph build {") and '"proc:1" -> "proc:1.1"' in dot
    assert "ENETUNREACH" in dot
    path = tmp_path / "g.graphml"
    nx.write_graphml(graphml_ready(g), path)
    h = nx.read_graphml(path)
    assert h.nodes["proc:1.1"]["argv"] == "cp a b"
    data = json.loads(graph_json(g))
    assert any(n["id"] == "proc:1.1" for n in data["nodes"])
