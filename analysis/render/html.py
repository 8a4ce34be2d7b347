"""`nixrec report`'s page: report.py's data into one self-contained HTML file
(formatting only). Jinja2 renders templates/report.html.j2; CSS and JS are
inline and nothing is fetched when the page is opened (no CDN, no fonts), so
the file can be attached to an issue or a CI run and read offline."""

import json

from markupsafe import Markup, escape as html_escape

from nixrec.analysis.render.text import probe_line
from nixrec.recorder.tracefile.printable import escape_all

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


# Indentation of a row per tree level, and the deepest level indented (a fork
# bomb's rows would otherwise start off the page).
INDENT_PX, INDENT_MAX = 12, 16
# About this many ticks on the time axis.
TICKS = 10


def report_html(data: dict) -> str:
    import jinja2
    env = jinja2.Environment(loader=jinja2.PackageLoader("nixrec.analysis.render", "templates"),
                             autoescape=True, trim_blocks=False, lstrip_blocks=False)
    # Control characters the build put in paths, argv and log lines are shown
    # escaped on the page too (printable.py): a reader sees them.
    data = escape_all(data)
    rows = data["rows"]
    origin = next((i for i, r in enumerate(rows) if r["origin"]), 0)
    return env.get_template("report.html.j2").render(
        d=data, rows_json=_script_json([[r[k] for k in _FIELDS] for r in rows]),
        replay_json=_script_json(data["replay"]), origin_index=origin, deps_shown=DEPS_SHOWN,
        timeline=timeline_html(data), axis=axis_ticks(data["duration_us"]),
        probes=probe_line({"undeclared": data["probes"]}))


def axis_ticks(total_us) -> list:
    """[(left %, label)]: round steps of 1, 2 or 5 x 10^k seconds."""
    total = max(total_us, 1) / 1e6
    step = 10 ** -3
    while total / step > TICKS:
        for m in (2, 2.5, 2):
            step *= m
            if total / step <= TICKS:
                break
    out, t = [], 0.0
    while t <= total + 1e-9:
        label = f"{t:.0f} s" if step >= 1 else f"{t:.3g} s"
        out.append((round(100.0 * t / total, 3), label))
        t += step
    return out


def timeline_html(data) -> Markup:
    """The timeline's groups and rows, nested <details> (a subtree collapsed
    unless the failure chain or the root cause is in it), written with a
    stack: no recursion on the build's tree depth."""
    rows, out = data["rows"], []
    opened = _opened(rows)
    for g in data["groups"]:
        ph = g["phase"]
        if ph is not None:
            n = sum(1 + rows[i]["subtree"] for i in g["roots"])
            open_ = any(opened[i] for i in g["roots"]) or ph.get("status") == "failed"
            total = max(data["duration_us"], 1)
            left = 100.0 * ph["start"] / total
            width = max(0.3, 100.0 * (ph.get("duration") or 0) / total)
            out.append(f'<details class="grp"{" open" if open_ else ""}><summary class="grow">'
                       f'<span class="lbl">{html_escape(ph["name"])} '
                       f'<span class="muted">{(ph.get("duration") or 0) / 1e6:.1f} s, '
                       f'{n} process{"es" if n != 1 else ""}</span></span><span class="trk">'
                       f'<span class="pband{" failed" if ph.get("status") == "failed" else ""}"'
                       f' style="left:{left:.2f}%;width:{width:.2f}%"></span></span></summary>')
        stack = [("row", i) for i in reversed(g["roots"])]
        while stack:
            what, i = stack.pop()
            if what == "close":
                out.append("</details>")
                continue
            r = rows[i]
            if r["kids"]:
                out.append(f'<details class="sub"{" open" if opened[i] else ""}><summary>'
                           + _row(r, i) + "</summary>")
                stack.append(("close", i))
                stack += [("row", k) for k in reversed(r["kids"])]
            else:
                out.append(_row(r, i))
        if ph is not None:
            out.append("</details>")
    return Markup("\n".join(out))


def _opened(rows) -> list:
    """Per row: is its subtree shown open (the chain's, the root cause's
    ancestors)? The builder's own children are always listed."""
    index = {r["proc"]: i for i, r in enumerate(rows)}
    opened = [r["proc"] == "1" for r in rows]
    for i, r in enumerate(rows):
        if r["chain"] or r["origin"]:
            up = r["proc"]
            while "." in up:
                up = up.rsplit(".", 1)[0]
                k = index.get(up)
                if k is not None:
                    if opened[k] and up != "1":
                        break           # and so are its ancestors: linear in the tree
                    opened[k] = True
    return opened


def _row(r, i) -> str:
    cls = "row" + (" chain" if r["chain"] else "") + (" bad" if r["failed_exit"] else "") \
        + (" hf" if r["nfailed"] else "") + (" kids" if r["kids"] else "")
    pad = 6 + INDENT_PX * min(r["depth"], INDENT_MAX)
    more = f' <span class="muted">+{r["subtree"]}</span>' if r["subtree"] else ""
    span = (f'<span class="span" style="left:{r["span_l"]:.2f}%;'
            f'width:{max(0.2, r["span_r"] - r["span_l"]):.2f}%"></span>' if r["kids"] else "")
    marks = "".join(f'<i style="left:{m * 25}%"></i>' for m in r["marks"])
    return (f'<div class="{cls}" data-i="{i}"><span class="lbl" style="padding-left:{pad}px">'
            f'{html_escape(r["proc"])} '
            f'{html_escape(r["argv0"])}{more}</span><span class="trk">{span}<span class="bar" '
            f'style="left:{r["left"]}%;width:{r["width"]}%">{marks}</span></span></div>')
