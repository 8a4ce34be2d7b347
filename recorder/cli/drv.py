"""The `nixrec drv PATH [--json]` verb: show a derivation as nixrec reads it.

PATH is a .drv file or a JSON file from `nix show-derivation` (2.8) or
`nix derivation show` (v4); drv.load_all tells them apart by the first byte.
--json prints what Nix 2.8's `nix show-derivation PATH` prints, byte for byte,
so the two can be diffed directly.
"""

import click

from nixrec.recorder.nix import drv as drvmod, drvjson
from nixrec.recorder.errors import BadInput

# Env values such as inline build scripts run to kilobytes; the summary is for
# reading, so cut them here and point at --json for the whole thing.
MAX_SHOWN = 160


def _printable(s: str) -> str:
    """One line per value: escapes like the .drv for LF/CR/TAB, \\xNN for other
    control bytes and for bytes that are not UTF-8 (held as surrogates)."""
    out = []
    for ch in s:
        o = ord(ch)
        if ch in "\n\r\t\\":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}[ch])
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _short(s: str) -> str:
    text = _printable(s)
    if len(text) <= MAX_SHOWN:
        return text
    return f"{text[:MAX_SHOWN]}... ({len(drvmod.to_bytes(s))} bytes; see --json)"


def _node_text(node) -> str:
    if isinstance(node, drvmod.DynNode):
        kids = ", ".join(f"{k} -> {_node_text(v)}" for k, v in node.children.items())
        return f"{', '.join(node.outputs)} [dynamic: {kids}]"
    return ", ".join(node)


def summary_lines(drv_path: str, d: drvmod.Derivation):
    """The readable view, as lines (pure: the command only echoes them)."""
    yield f"derivation  {_printable(drv_path)}"
    yield f"name        {_printable(d.name)}"
    yield f"system      {_printable(d.system)}"
    yield f"builder     {_short(d.builder)}"
    yield f"args        ({len(d.args)})"
    for a in d.args:
        yield f"  {_short(a)}"
    kind = "fixed-output" if d.is_fixed_output else "input-addressed"
    if d.version:
        kind += f", {d.version}"
    if d.structured_attrs is not None:
        kind += ", structured attrs"
    yield f"kind        {kind}"
    yield f"outputs     ({len(d.outputs)})"
    for name, o in d.outputs.items():
        fod = f"  {o.hash_algo}:{o.hash}" if o.hash_algo or o.hash else ""
        yield f"  {name:<8} {o.path or '(path not known yet)'}{fod}"
    yield f"input drvs  ({len(d.input_drvs)})"
    for p, node in d.input_drvs.items():
        yield f"  {p}  [{_node_text(node)}]"
    yield f"input srcs  ({len(d.input_srcs)})"
    for s in d.input_srcs:
        yield f"  {_printable(s)}"
    if d.pass_as_file:
        yield f"passAsFile  {' '.join(d.pass_as_file)}"
    yield f"env         ({len(d.env)})"
    for k in sorted(d.env, key=drvmod.to_bytes):
        yield f"  {_printable(k)}={_short(d.env[k])}"


@click.command("drv")
@click.argument("path", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True,
              help="Print what Nix 2.8 `nix show-derivation PATH` prints.")
def drv_command(path, as_json):
    """Show the derivation in PATH (.drv, or JSON from nix show-derivation / derivation show)."""
    found = drvmod.load_all(path)   # BadInput -> one line, exit 2 (cli.py)
    if as_json:
        obj = {}
        for drv_path, d in found:
            obj.update(drvjson.to_show_json(drv_path, d))
        # Raw bytes, as Nix writes them: env values need not be UTF-8.
        out = click.get_binary_stream("stdout")
        out.write(drvmod.to_bytes(drvjson.dump_show_json(obj) + "\n"))
        out.flush()
        return
    for i, (drv_path, d) in enumerate(found):
        try:
            lines = list(summary_lines(drv_path, d))   # all or nothing: one error line
        except BadInput as e:
            raise BadInput(f"{path}: {e}")
        if i:
            click.echo("")
        click.echo("\n".join(lines))


COMMANDS = [drv_command]
