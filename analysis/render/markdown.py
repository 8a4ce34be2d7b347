"""Markdown for `deps --markdown` (to paste into an issue)."""

from nixrec.analysis.render.text import GROUP_TITLES, TITLES, probe_line, what_of
from nixrec.recorder.tracefile.printable import escape_all


def deps_markdown(rep: dict) -> str:
    rep = escape_all(rep)
    out = ["# Undeclared accesses", ""]
    if not any(g["category"] != "probe" for g in rep["undeclared"]):
        out += ["None: the build touched only its declared inputs.", ""]
    for group, title in GROUP_TITLES.items():
        mine = [g for g in rep["undeclared"] if g.get("group") == group]
        if not mine:
            continue
        out += [f"## {title}", ""]
        cats = []
        for g in mine:
            if g["category"] not in cats:
                cats.append(g["category"])
        for cat in cats:
            out += [f"### {TITLES[cat]}", "",
                    "| what | access | result | count | first seq | processes |",
                    "|---|---|---|---:|---:|---|"]
            for g in mine:
                if g["category"] != cat:
                    continue
                res = g["result"] + (f" ({g['errno']})" if g.get("errno") else "")
                out.append(f"| `{what_of(g)}` | {g['access']} | {res} | {g['count']} | "
                           f"{g['first_seq']} | {', '.join(g['procs'])} |")
            out.append("")
    line = probe_line(rep)
    if line:
        out += [line, ""]
    out += ["## Unused inputs", ""]
    out += [f"- `{p}`" for p in rep["unused_inputs"]] or ["None."]
    if rep.get("hidden_references"):
        out += ["", "## Store paths the outputs name that are not inputs", "",
                "Nix records no reference to them: missing wherever the output is "
                "copied alone.", ""]
        out += [f"- `{h['path']}` in output {h['output']}"
                + (": " + ", ".join(f"`{f}`" for f in h["files"]) if h.get("files") else "")
                for h in rep["hidden_references"]]
    if rep.get("referenced_unused"):
        out += ["", "## Inputs never touched that the outputs refer to (runtime dependencies)",
                ""]
        out += [f"- `{g['path']}` (referred to by {', '.join(g['outputs'])})"
                for g in rep["referenced_unused"]]
    return "\n".join(out) + "\n"
