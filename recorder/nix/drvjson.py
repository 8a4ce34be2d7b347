"""The JSON forms of a derivation: Nix 2.8's `nix show-derivation` (read and
written byte for byte), the 2.18..2.32 variants and v4 `nix derivation show`
(read). The model and the ATerm form are drv.py's (nix-sandbox.md §1.2).
"""

import base64
import json
import os
from typing import List, Tuple

from nixrec.recorder.nix.drv import (
    DYN_VERSION, STORE_DIR, Derivation, DynNode, Node, Output, _sort_key, to_bytes, to_str,
)
from nixrec.recorder.errors import BadInput
from nixrec.recorder.nix.store import fixed_output_path


# ---------------------------------------------------------------- JSON read

_METHOD_PREFIX = {"flat": "", "nar": "r:", "text": "text:", "git": "git:"}


class _JsonBad(Exception):
    """Internal: what is wrong with a JSON derivation, before the file name is known."""


def _full(p: str) -> str:
    # v3/v4 give basenames; 2.8..2.31 give full store paths.
    return p if p.startswith("/") else f"{STORE_DIR}/{p}"


def _want(obj, key, kind, where):
    if key not in obj:
        raise _JsonBad(f"{where}: missing {key!r}")
    v = obj[key]
    if not isinstance(v, kind) or (kind is list and not all(isinstance(x, str) for x in v)):
        raise _JsonBad(f"{where}: {key!r} has the wrong type")
    return v


def _sri_to_hex(h: str) -> Tuple[str, str]:
    """"sha256-<base64>" -> ("sha256", hex); a bare hex hash -> ("", hex)."""
    algo = ""
    if "-" in h:
        algo, _, b64 = h.partition("-")
        try:
            return algo, base64.b64decode(b64, validate=True).hex()
        except ValueError:
            raise _JsonBad(f"hash {h!r} is not a valid SRI hash")
    return algo, h.lower()


def _json_output(name: str, o: dict, drv_name: str, env: dict) -> Output:
    if not isinstance(o, dict):
        raise _JsonBad(f"output {name!r} is not an object")
    path = _full(o["path"]) if o.get("path") else ""
    algo, h, method = o.get("hashAlgo", ""), o.get("hash", ""), o.get("method")
    if h:
        sri_algo, h = _sri_to_hex(h)
        algo = algo or sri_algo
    if method is not None:   # 2.23+: method and algorithm are separate fields
        if method not in _METHOD_PREFIX:
            raise _JsonBad(f"output {name!r}: unknown method {method!r}")
        algo = _METHOD_PREFIX[method] + algo
    if o.get("impure"):
        return Output("", algo, "impure")
    if h and not path:       # v4 fixed output: a content address, no path
        path = fixed_output_path(algo, h, drv_name) or env.get(name, "")
    return Output(path, algo, h)


def _json_node(v, where) -> Node:
    if isinstance(v, list):
        return sorted(v, key=_sort_key)
    if not isinstance(v, dict):
        raise _JsonBad(f"{where}: input derivation entry has the wrong type")
    outs = sorted(v.get("outputs", []), key=_sort_key)
    dyn = v.get("dynamicOutputs") or {}
    if not dyn:
        return outs
    return DynNode(outs, {k: _json_node(c, where) for k, c in dyn.items()})


def _drv_from_json(key: str, obj) -> Derivation:
    where = f"derivation {key}"
    if not isinstance(obj, dict):
        raise _JsonBad(f"{where}: not an object")
    env = dict(_want(obj, "env", dict, where))
    if "structuredAttrs" in obj:   # v4 moved __json out of env; Nix writes it compact, sorted
        env["__json"] = json.dumps(obj["structuredAttrs"], sort_keys=True,
                                   separators=(",", ":"), ensure_ascii=False)
    if "inputs" in obj:            # v4
        srcs = obj["inputs"].get("srcs", [])
        drvs = obj["inputs"].get("drvs", {})
    else:
        srcs = _want(obj, "inputSrcs", list, where)
        drvs = _want(obj, "inputDrvs", dict, where)
    name = obj.get("name") or env.get("name") or _name_from_drv_path(key)
    outputs = {n: _json_output(n, o, name if n == "out" else f"{name}-{n}", env)
               for n, o in _want(obj, "outputs", dict, where).items()}
    nodes = {_full(p): _json_node(v, where) for p, v in drvs.items()}
    version = DYN_VERSION if any(isinstance(n, DynNode) for n in nodes.values()) else None
    d = Derivation(outputs, nodes, sorted((_full(s) for s in srcs), key=_sort_key),
                   _want(obj, "system", str, where), _want(obj, "builder", str, where),
                   list(_want(obj, "args", list, where)), env, version)
    if not all(isinstance(v, str) for v in env.values()):
        raise _JsonBad(f"{where}: env values must be strings")
    return _canonical(d)


def _name_from_drv_path(p: str) -> str:
    base = os.path.basename(p)
    return base[33:-4] if base.endswith(".drv") and len(base) > 37 else base


def _canonical(d: Derivation) -> Derivation:
    """Sort every map the way Nix's std::map would, so == and unparse agree."""
    srt = lambda m: dict(sorted(m.items(), key=lambda kv: _sort_key(kv[0])))  # noqa: E731
    d.outputs, d.input_drvs, d.env = srt(d.outputs), srt(d.input_drvs), srt(d.env)
    return d


def parse_json(data: bytes, path: str = "<json>") -> List[Tuple[str, Derivation]]:
    """Derivations from any JSON form of `nix show-derivation`/`nix derivation show`."""
    text = to_str(data)   # 2.8 writes non-UTF-8 env bytes raw; keep them
    try:
        top = json.loads(text)
    except json.JSONDecodeError as e:
        at = len(to_bytes(text[:e.pos]))
        raise BadInput(f"{path} at byte {at}: not valid JSON: {e.msg}")
    if not isinstance(top, dict):
        raise BadInput(f"{path}: JSON at byte 0 is not an object of derivations")
    if isinstance(top.get("derivations"), dict):   # v4: {"version": 4, "derivations": {...}}
        if top.get("version") not in (None, 3, 4):
            raise BadInput(f"{path}: unknown derivation JSON version {top.get('version')!r}")
        top = top["derivations"]
    if not top:
        raise BadInput(f"{path}: JSON holds no derivations")
    try:
        return [(_full(k), _drv_from_json(k, v)) for k, v in top.items()]
    except (_JsonBad, AttributeError, TypeError) as e:
        raise BadInput(f"{path}: not a derivation in JSON form: {e}")


# ---------------------------------------------------------------- JSON write

def _show_output(o: Output) -> dict:
    """2.8 show-derivation.cc: one branch per DerivationOutput kind."""
    if o.hash == "impure":
        return {"hashAlgo": o.hash_algo, "impure": True}
    out = {}
    if o.path:
        out["path"] = o.path
    if o.hash_algo:
        out["hashAlgo"] = o.hash_algo
    if o.hash and o.path:
        out["hash"] = o.hash
    return out


def _show_node(n: Node):
    # 2.8 has no JSON for dynamic nodes; use the 2.18 shape for those only.
    if isinstance(n, DynNode):
        return {"outputs": sorted(n.outputs, key=_sort_key),
                "dynamicOutputs": {k: _show_node(v) for k, v in n.children.items()}}
    return sorted(n, key=_sort_key)


def to_show_json(drv_path: str, d: Derivation) -> dict:
    """Exactly the object `nix show-derivation DRV_PATH` (2.8) prints."""
    d = _canonical(Derivation(**vars(d)))
    return {drv_path: {
        "outputs": {n: _show_output(o) for n, o in d.outputs.items()},
        "inputSrcs": sorted(d.input_srcs, key=_sort_key),
        "inputDrvs": {p: _show_node(n) for p, n in d.input_drvs.items()},
        "system": d.system,
        "builder": d.builder,
        "args": list(d.args),
        "env": dict(d.env),
    }}


# Nix 2.8's json.cc toJSON: " \\ \n \r \t short, other bytes < 0x20 as \u00XX,
# everything else raw (so non-UTF-8 bytes pass through; see to_bytes).
_JSON_ESC = {c: f"\\u{c:04x}" for c in range(0x20)}
_JSON_ESC.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n",
                  ord("\r"): "\\r", ord("\t"): "\\t"})


def dump_show_json(obj, indent: int = 0) -> str:
    """Serialise like 2.8's pretty JSONObject; add "\\n" at the end for the CLI."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = (f'{inner}"{k.translate(_JSON_ESC)}": {dump_show_json(v, indent + 1)}'
                 for k, v in obj.items())
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if not obj:
            return "[]"
        items = (inner + dump_show_json(v, indent + 1) for v in obj)
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, str):
        return '"' + obj.translate(_JSON_ESC) + '"'
    return json.dumps(obj)
