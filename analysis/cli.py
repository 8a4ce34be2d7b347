"""The analysis verbs: `nixrec why`, `nixrec deps`, `nixrec graph`, `nixrec report`.

Reading the trace and picking a renderer happen here; the analysis itself is
in rootcause.py, deps.py and graph.py (pure functions of the trace's data).
"""

import os

import click

from nixrec.recorder.errors import BadInput


def _open(path):
    from nixrec.recorder.tracefile.reader import open_trace
    return open_trace(path)


def _store_peek(store_dir="/nix/store"):
    """Read a script's #! line, only from the local store (inputs are immutable
    there, so what we read is what the build ran); None anywhere else."""
    def peek(path):
        if not path or not path.startswith(store_dir + "/"):
            return None
        try:
            with open(path, "rb") as f:
                head = f.read(256)
        except OSError:
            return None
        if not head.startswith(b"#!"):
            return None
        words = head[2:].split(b"\n", 1)[0].split()
        return words[0].decode("utf-8", "replace") if words else None
    return peek


def why_report(path, reader=None, events=None):
    """`why`'s report of the trace at `path`; `reader` and `events`, when
    given, are an open reader of it and its events (report's one pass)."""
    from nixrec.analysis.phases import failure_phase
    from nixrec.analysis.rootcause import explain
    r = reader if reader is not None else _open(path)
    try:
        rep = explain(r.header, r.processes, r.events() if events is None else events,
                      problems=r.problems, summary=r.summary, trace_path=path,
                      peek=_store_peek(), phases=r.phases)
        rep["phase"] = failure_phase(r.phases, rep)
    finally:
        if reader is None:
            r.close()
    top = (rep.get("root_causes") or [None])[0]
    if top and top.get("check") == "deterministic":
        # The store's copy has no trace: diff needs another recording.
        from nixrec.recorder.tracefile.siblings import diff_hint
        rep["diff"] = diff_hint(path, r.header.get("drv_path"))
    return rep


@click.command("why")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def why_cmd(trace, as_json):
    """Explain why the recorded build failed: chain, root causes, replay command."""
    from nixrec.analysis.render import json as rjson, text
    rep = why_report(trace)
    click.echo(rjson.dumps(rep) if as_json else text.why_text(rep), nl=as_json)


@click.command("deps")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--markdown", is_flag=True, help="A Markdown report.")
def deps_cmd(trace, as_json, markdown):
    """List every access outside the declared inputs, and unused inputs."""
    if as_json and markdown:
        raise BadInput("deps: choose one of --json and --markdown")
    from nixrec.analysis.deps import undeclared_accesses
    from nixrec.analysis.render import json as rjson, markdown as rmd, text
    r = _open(trace)
    try:
        rep = undeclared_accesses(r.header, r.events(), r.summary)
        problems = r.problems
    finally:
        r.close()
    if as_json:
        rep = dict(rep, partial=problems)
        click.echo(rjson.dumps(rep))
    elif markdown:
        click.echo(rmd.deps_markdown(rep), nl=False)
    else:
        if problems:
            click.echo(f"note: partial trace: {problems[0]}")
        click.echo(text.deps_text(rep), nl=False)


@click.command("phases")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def phases_cmd(trace, as_json):
    """The stdenv phases of the build: start, duration, processes, events, refused
    calls; the failing one marked, the skipped ones said."""
    from nixrec.analysis.phases import phases_report
    from nixrec.analysis.render import json as rjson, text
    r = _open(trace)
    try:
        rep = phases_report(r.phases, r.summary, trace_path=trace)
    finally:
        r.close()
    click.echo(rjson.dumps(rep) if as_json else text.phases_text(rep), nl=as_json)


GRAPH_FORMATS = (".dot", ".graphml", ".json")


@click.command("graph")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file; the format follows the extension: " +
                   ", ".join(GRAPH_FORMATS))
@click.option("--fold-store", is_flag=True,
              help="Show /nix/store/<hash>-name/... as the store path.")
@click.option("--hide-reads", is_flag=True, help="Leave out successful reads and stats.")
@click.option("--failure", is_flag=True, help="Only the failure's neighbourhood.")
def graph_cmd(trace, output, fold_store, hide_reads, failure):
    """Write the build as a graph of processes, files and sockets."""
    ext = os.path.splitext(output)[1].lower()
    if ext not in GRAPH_FORMATS:
        raise BadInput(f"graph: cannot tell the format of {output}: "
                       f"use one of {', '.join(GRAPH_FORMATS)}")
    from nixrec.analysis.graph import build_graph, failure_subgraph
    r = _open(trace)
    try:
        g = build_graph(r.header, r.processes, r.events(), fold_store=fold_store,
                        hide_reads=hide_reads)
        problems = r.problems
    finally:
        r.close()
    if failure:
        g = failure_subgraph(g, why_report(trace))
    # The file says it too (JSON and GraphML graph attribute), for whoever opens it.
    if problems:
        g.graph["partial"] = "; ".join(problems)
    _write_graph(g, output, ext)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        click.echo(f"nixrec: warning: partial trace: {problems[0]}{more}", err=True)
    click.echo(f"wrote {output}: {g.number_of_nodes()} nodes, "
               f"{g.number_of_edges()} edges", err=True)


def _write_graph(g, output, ext):
    import networkx as nx
    from nixrec.analysis.render import dot, json as rjson
    try:
        if ext == ".dot":
            with open(output, "w") as f:
                f.write(dot.graph_dot(g))
        elif ext == ".graphml":
            nx.write_graphml(dot.graphml_ready(g), output)
        else:
            with open(output, "w") as f:
                f.write(rjson.graph_json(g))
    except OSError as e:
        raise BadInput(f"graph: cannot write {output}: {e.strerror}") from None


@click.command("report")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (one self-contained page).")
def report_cmd(trace, output):
    """Write one HTML page a person reads: verdict, root cause, process
    timeline, undeclared dependencies, network attempts, last log lines."""
    from nixrec.analysis.deps import undeclared_accesses
    from nixrec.analysis.onepass import one_pass
    from nixrec.analysis.render.html import report_html
    from nixrec.analysis import report
    r = _open(trace)
    try:
        # Read once for all three (onepass.py): what the reader knows
        # besides the events is taken first, in this thread.
        header, processes, summary, phases = r.header, r.processes, r.summary, r.phases
        r.problems
        why, deps, got = one_pass(
            r.events(), lambda evs: why_report(trace, r, evs),
            lambda evs: undeclared_accesses(header, evs, summary),
            lambda evs: report.collect(header, evs))
        data = report.assemble(header, processes, got, why, deps, trace_path=trace,
                               phases=phases)
    finally:
        r.close()
    page = report_html(data)
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise BadInput(f"report: cannot write {output}: {e.strerror}") from None
    click.echo(f"wrote {output}: {len(data['rows'])} processes, "
               f"{len(page.encode()) / 1024:.0f} KiB", err=True)


COMMANDS = [why_cmd, deps_cmd, graph_cmd, phases_cmd, report_cmd]
