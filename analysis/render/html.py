"""`nixrec report`'s page: report.py's data into one self-contained HTML file
(formatting only). Jinja2 renders templates/report.html.j2; CSS and JS are
inline and nothing is fetched when the page is opened (no CDN, no fonts), so
the file can be attached to an issue or a CI run and read offline."""

import json

# What the details panel needs of each process, as arrays (GNU hello has
# 4,700 processes: keys repeated in every object would be a fifth of the page).
# Dependency rows shown at once; the rest are folded (GNU hello built with the
# host toolchain has 1,281: laying out that table was a third of the page's
# load time in headless Chromium).
DEPS_SHOWN = 100

_FIELDS = ("proc", "argv0", "argv", "cwd", "exit", "nfailed", "failed", "calls", "log")


def _script_json(obj) -> str:
    """JSON safe inside <script>: no `</script>` or `<!--` can end it early."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")


def report_html(data: dict) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.PackageLoader("nixrec.analysis.render", "templates"),
                             autoescape=True, trim_blocks=False, lstrip_blocks=False)
    rows = data["rows"]
    origin = next((i for i, r in enumerate(rows) if r["origin"]), 0)
    return env.get_template("report.html.j2").render(
        d=data, rows_json=_script_json([[r[k] for k in _FIELDS] for r in rows]),
        replay_json=_script_json(data["replay"]), origin_index=origin, deps_shown=DEPS_SHOWN)
