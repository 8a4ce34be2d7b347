"""Why a path is "missing" when something is there, seen from the process's
own root: a symlink whose target is not in the sandbox (args link,
link_target), or a program whose ELF or #! interpreter is missing (args
interpreter), the most confusing ENOENT a Nix user meets. The tracer asks at
a failed call's exit (tracer._finish), while the process is still stopped
when it can.
"""

import os

from nixrec.recorder.trace import decode

# Paths found empty in a fixed tree are remembered; past this many the set
# starts over (a build that probes millions of distinct paths).
_ABSENT_MAX = 200_000


def enoent(root: str, ev, absent: set, predictor) -> None:
    """Add to `ev` (failed with ENOENT) what is at its path under `root`.

    `absent`: the caller's set of fixed-tree paths found empty before;
    `predictor` (predict.Predictor or None) says which trees are fixed."""
    try:
        if ev.kind != "exec":
            # The common case, a plain missing file, costs one lstat. Only
            # when something is there (a link) is the path walked again.
            # Builds probe the same missing paths over and over (include
            # and library search paths): remember the ones found empty,
            # where nothing can appear later (predict.py's fixed trees).
            if ev.path in absent:
                return
            try:
                os.lstat(root + ev.path)
            except FileNotFoundError:
                if predictor is not None and predictor.fixed(ev.path):
                    if len(absent) > _ABSENT_MAX:
                        absent.clear()
                    absent.add(ev.path)
                return
        host, link = decode.resolve_in_root(root, ev.path)
        if link is not None and host is None:
            ev.args["link"], ev.args["link_target"] = link
            return
        if ev.kind == "exec" and host and os.path.isfile(host):
            interp = decode.interpreter(host)
            if interp:
                ev.args["interpreter"] = interp
                ev.args["interpreter_missing"] = decode.resolve_in_root(root, interp)[0] is None
    except OSError:
        pass


def root_of(predictor, pid: int) -> str:
    """The process's root as a path to walk: the build's root, which
    predict.py holds open, when there is one (a lookup answered at entry
    is explained after its process runs on, maybe after it exited: its
    /proc/PID/root is gone then), else /proc/PID/root."""
    if predictor is not None and predictor.root_fd is not None:
        return f"/proc/self/fd/{predictor.root_fd}"
    return f"/proc/{pid}/root"
