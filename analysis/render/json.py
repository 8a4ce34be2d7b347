"""JSON output: one object, stable keys, bytes never leak (they are decoded earlier)."""

import json as _json

import networkx as nx


def dumps(obj) -> str:
    return _json.dumps(obj, indent=2, sort_keys=False, default=str)


def graph_json(g) -> str:
    """node-link JSON; edge keys kept so failed and ok edges stay apart."""
    try:
        data = nx.node_link_data(g, edges="links")
    except TypeError:              # networkx < 3.4 has no `edges` argument
        data = nx.node_link_data(g)
    return dumps(data)
