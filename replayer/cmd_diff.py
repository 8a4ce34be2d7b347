"""`nixrec diff A B`: print why two recordings of a build differ (diff.py).

Exit 0 whether or not they differ (a difference is the answer, not a
failure; `--json`'s `different` says which), 2 for an unreadable trace.
Its own module, not replayer/cli.py: `diff` needs no sandbox or tracer.
"""

import click


@click.command("diff")
@click.argument("a", metavar="A.nixrec", type=click.Path(dir_okay=False))
@click.argument("b", metavar="B.nixrec", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def diff_cmd(a, b, as_json):
    """Why two recordings of a build differ: plan, first differing event of
    each process, and for each output file that differs, who wrote it and
    what it read that differs between runs."""
    from nixrec.analysis.render import json as rjson, text
    from nixrec.replayer.diff import diff_traces
    rep = diff_traces(a, b)
    click.echo(rjson.dumps(rep) if as_json else text.diff_text(rep), nl=as_json)


COMMANDS = [diff_cmd]
