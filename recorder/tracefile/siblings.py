"""Another recording of the same derivation next to a trace: `record --check`
and `why` point to `nixrec diff` of the two (the store's copy of an output
has no trace, so the diff needs a second recording)."""

import os

from nixrec.recorder.errors import BadInput
from nixrec.recorder.tracefile.reader import open_trace

# Traces looked at next to a trace for another recording of its derivation
# (`record --check` and `why` point to `nixrec diff` of the two): a directory
# of a thousand traces is not read through for a hint.
SIBLINGS_LOOKED_AT = 50


def other_recording(path, drv_path):
    """The newest other trace in `path`'s directory that recorded `drv_path`
    and kept its outputs (TRACE.d/outputs/), or None."""
    path = os.path.abspath(os.fspath(path))
    top = os.path.dirname(path)
    try:
        names = [n for n in os.listdir(top) if n.endswith(".nixrec")]
    except OSError:
        return None
    found = []
    for n in names:
        p = os.path.join(top, n)
        if p != path and os.path.isdir(p + ".d/outputs"):
            found.append((os.path.getmtime(p), p))
    for _, p in sorted(found, reverse=True)[:SIBLINGS_LOOKED_AT]:
        try:
            with open_trace(p) as r:
                if r.header.get("drv_path") == drv_path and r.summary and \
                        r.summary.get("outputs"):
                    return p
        except BadInput:
            continue
    return None


def diff_hint(trace, drv_path) -> str:
    """The line that says how to see why a build's output differs."""
    rel = os.path.relpath(trace)
    other = other_recording(trace, drv_path)
    if other is not None:
        return f"why it differs: nixrec diff {os.path.relpath(other)} {rel}"
    return (f"why it differs: record it again (nixrec record {drv_path} -o again.nixrec) "
            f"and run nixrec diff {rel} again.nixrec")
