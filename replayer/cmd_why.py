"""`nixrec why [--verify [--max N] [--jobs J]]`: analysis/cli.py's `why`, plus
the experiments that prove a cause (verify.py).

The plain verb is analysis's own (its options and output, unchanged); this
module only adds --verify, which runs builds and so belongs where sandboxes
are built: analysis/ imports no sandbox (style.md's dependency rule). Exit
codes as for `why`: 0 once explained; 2 bad input (no plan in the trace, an
input missing here), 3 this host cannot build (no user namespaces, no ptrace).
"""

import sys
import time

import click

from nixrec.analysis.cli import why_cmd as _plain_why


def _why(verify, max_n, jobs, **kw):
    if not verify:
        return _plain_why.callback(**kw)
    if max_n < 1:
        raise click.BadParameter("--max must be at least 1")
    from nixrec.analysis.cli import _open, why_report
    from nixrec.analysis.render import json as rjson, text
    from nixrec.recorder.cli.status import open_status
    from nixrec.replayer import verify as v
    trace = kw["trace"]
    rep = why_report(trace)
    r = _open(trace)
    header, summary = r.header, r.summary
    r.close()
    line = open_status(sys.stderr)
    t0 = time.monotonic()
    try:
        ver = v.verify(header, summary, rep, max_n=max_n, jobs=jobs,
                       status=(lambda d: line.status(d)) if line else None)
    finally:
        if line:
            line.close()
    v.annotate(rep, ver)
    rep["verify"]["seconds"] = round(time.monotonic() - t0, 2)
    if kw.get("as_json"):
        click.echo(rjson.dumps(rep))
    else:
        click.echo(text.why_text(rep) + text.verify_text(rep), nl=False)


why_cmd = click.Command(
    "why", callback=_why, help=_plain_why.help,
    params=list(_plain_why.params) + [
        click.Option(["--verify"], is_flag=True,
                     help="Prove the top causes: re-run the build in nixrec's sandbox "
                          "with each one's difference removed (a host path bound, HOME "
                          "writable, a store path added)."),
        click.Option(["--max", "max_n"], type=int, default=3, show_default=True,
                     help="With --verify: how many of the top causes to try."),
        click.Option(["--jobs", "jobs"], type=int, default=None,
                     help="With --verify: runs at a time (default: half the cores)."),
    ])

COMMANDS = [why_cmd]
