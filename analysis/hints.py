"""One-line summaries and hints in Nix terms for each cause kind (nix-sandbox.md §4).

The words here are what a user reads first; the fixes are the usual nixpkgs ones.
"""

import posixpath
import re

from nixrec.analysis.deps import basename
from nixrec.analysis import outputcheck


def _who(c):
    argv0 = basename(c["argv"][0]) if c.get("argv") else "?"
    return f"{argv0} ({c['proc']})"


def _errno(c):
    return f": {c['errno']}" if c.get("errno") else ""


def _summary(c):
    k, who = c["kind"], _who(c)
    path = c.get("path")
    if k == "output-check":
        return outputcheck.summary_of(c, who)
    if k == "network":
        return f"{who} tried to connect to {c.get('address')}{_errno(c)} -- " \
               "the sandbox has no network"
    if k == "dns":
        target = c.get("host") or c.get("address")
        return f"{who} tried to resolve {target}{_errno(c)} -- no DNS in the sandbox"
    if k == "missing-executable":
        where = ", ".join(c.get("looked_in") or []) or "PATH"
        return f"{who} could not find the command {c.get('command')} " \
               f"(looked in {where})"
    if k == "missing-interpreter":
        interp = c.get("interpreter")
        kind = "ELF interpreter" if _is_loader(interp) else "interpreter"
        what = f"its {kind} {interp} is missing" if interp else \
            "the file exists, so its #! interpreter or ELF interpreter is missing " \
            "(the trace does not show which)"
        if c.get("interpreter_found"):
            what = f"its {kind} {interp} is there but could not be loaded"
        elif "dir_mounted" in c:
            what += f": {c['interpreter_dir']} is " + (
                "mounted but the file is not there (a symlink out of the sandbox?)"
                if c["dir_mounted"] else "not in the sandbox")
        return f"{who} could not execute {path}: ENOENT -- {what}"
    if k == "undeclared-host-path" and c.get("header"):
        return f"{who} could not open {c['header']}: {path} is not in the sandbox " \
               "-- not a declared input"
    if k == "undeclared-host-path" and c.get("looked_for"):
        return f"{who} looked for {c['looked_for']} and found it nowhere: " \
               f"{posixpath.dirname(path)} is not in the sandbox -- not a declared input"
    if k in ("undeclared-host-path", "undeclared-store-path") and c.get("link_target"):
        return _link_summary(c, who)
    if k == "undeclared-host-path":
        via = f" (via symlink {c['link']})" if c.get("link") else ""
        return f"{who} could not {_verb(c)} {path}{via}{_errno(c)} -- " \
               "not a declared input"
    if k == "missing-header":
        where = ", ".join(c.get("looked_in") or []) or "the include path"
        hidden = f"; not in the sandbox: {', '.join(c['hidden'])}" if c.get("hidden") else ""
        return f"{who} could not find the header {c.get('header')} (looked in {where}" \
               f"{hidden})"
    if k == "undeclared-store-path":
        return f"{who} could not {_verb(c)} {path}{_errno(c)} -- " \
               f"{c.get('store_path')} is not in the input closure"
    if k == "home":
        return f"{who} wrote under HOME: {path}{_errno(c)} -- " \
               "HOME=/homeless-shelter does not exist"
    if k == "write-outside":
        return f"{who} tried to write {path}{_errno(c)} -- outside /build and the outputs"
    if k == "write-denied" and c.get("what") == "ownership":
        return f"{who} could not change the owner of {path}{_errno(c)} -- the " \
            "sandbox has one user (uid 1000, gid 100) and no other to give it to"
    if k == "write-denied":
        return f"{who} was refused writing {path}{_errno(c)}"
    if k == "seccomp":
        return f"{who} {c.get('syscall')} {path or ''}{_errno(c)} -- the sandbox " \
               f"forbids setting the {c.get('what', 'attribute')}"
    if k == "race":
        miss = "found it missing" if c.get("errno") else "read it"
        return f"{who} {miss}: {path}, but {c.get('creator')} was still making it " \
               f"(created at event {c.get('created_seq')}) -- a race"
    if k == "signal":
        return f"{who} was killed by {c.get('signal')}"
    if k == "limit":
        return _limit_summary(c, who)
    if k == "process":
        return _process_summary(c, who)
    if c.get("syscall"):
        return f"{who} failed: {c['syscall']} {path or ''}{_errno(c)}".rstrip()
    return f"{who} exited with status {c.get('exit_code', 'non-zero')}"


def _limit_summary(c, who):
    setting = f" (Nix's {c['setting']} setting)" if c.get("setting") else ""
    if c.get("limit_kind") == "processes":
        what = "started the process that crossed the limit"
    elif c.get("limit_kind") == "closed-output":
        what = "was running"
    else:
        what = "was still running"
    return f"the build was {_killed_words(c['limit'])}{setting}: {who} {what}; " \
        f"killed by {c.get('signal') or 'SIGKILL'}"


def _killed_words(reason):
    """"timed out after 2 seconds" -> "killed: timed out after 2 seconds"."""
    return reason if reason.startswith("killed") else "killed: " + reason


def _process_summary(c, who):
    target, call = c.get("target_pid"), c.get("syscall")
    verb = "attach to (ptrace)" if call == "ptrace" else \
        f"send {c['signal']} to" if c.get("signal") else "signal"
    if c.get("errno") == "ESRCH":
        why = "the build has its own PID namespace: no process outside it exists there"
    elif call == "ptrace":
        why = "a recorded build's processes are all traced by nixrec already, and " \
            "the sandbox owns no other process"
    else:
        why = "not a process of the build"
    return f"{who} could not {verb} process {target}{_errno(c)} -- {why}"


def _link_summary(c, who):
    """A symlink the tracer saw dangle: /usr/bin/cc -> /etc/alternatives/cc."""
    link, target, accessed = c["link"], c["link_target"], c.get("accessed") or c["link"]
    where = "the input closure" if c["kind"] == "undeclared-store-path" else "the sandbox"
    if accessed == link:
        return f"{who} could not {_verb(c)} {link}: it is a symlink to {target}, " \
               f"which is not in {where} -- not a declared input"
    return f"{who} could not {_verb(c)} {accessed}: {link} is a symlink to {target}, " \
           f"which is not in {where} -- not a declared input"


def _is_loader(interp):
    """The dynamic loader (ld-linux-x86-64.so.2, ld-musl-x86_64.so.1)."""
    return bool(interp) and basename(interp).startswith("ld-")


def _verb(c):
    return {"exec": "execute", "stat": "find", "write": "write"}.get(
        c.get("access"), "open")


HINTS = {
    "network": "builds have no network: fetch in a fixed-output derivation "
               "(fetchurl, vendor hashes) or disable the test (doCheck = false, "
               "disabledTests, comment \"requires network access\")",
    "dns": "no resolver in the sandbox: fetch in a fixed-output derivation or "
           "disable the tests that need DNS",
    "missing-executable": "add the package that provides it to nativeBuildInputs "
                          "(or use its store path)",
    "missing-interpreter": "the #! line points outside the store (e.g. /usr/bin/env, "
                           "/bin/bash): run patchShebangs on build scripts, or call "
                           "the interpreter explicitly",
    "undeclared-host-path": "host paths are invisible in the sandbox: add the package "
                            "to buildInputs and point the build at its store path",
    "undeclared-store-path": "the path was referenced without string context "
                             "(unsafeDiscardStringContext, a hard-coded path): refer "
                             "to the derivation with \"${pkg}\" so it becomes an input",
    "home": "HOME=/homeless-shelter: export HOME=$TMPDIR (or add "
            "writableTmpDirAsHomeHook) before the step",
    "write-outside": "install into $out (e.g. PREFIX=$out, DESTDIR), not the "
                     "host's /usr or /",
    "write-denied": "files copied from the store are read-only: chmod -R u+w "
                    "after copying, or write to a new file",
    "seccomp": "Nix's seccomp filter refuses setuid/setgid bits and extended "
               "attributes: install without them or disable that test",
    "race": "a parallel-build race: add the missing dependency between the two "
            "steps, or set enableParallelBuilding = false with a comment",
    "signal": "killed: a timeout (timeout, max-silent-time), the OOM killer or a "
              "crash; check the build's time and memory",
    "process": "the build sees only its own processes (its own PID namespace, pid 1 "
               "is the builder): a test that signals or traces another process "
               "(a host pid, gdb, strace, ptrace-based tests) cannot pass in the "
               "sandbox; disable it (disabledTests, doCheck = false)",
    "missing-header": "no include directory has {header}: add the package that "
                      "provides it to buildInputs",
    "fallback": "no known pattern; replay to this event and inspect the sandbox "
                "(nixrec replay ... --until N)",
}


OWNER_HINT = "the build runs as one unprivileged user: drop the owner and group " \
    "(install -o/-g, chown) from the install step; the store owns everything anyway"
HEADER_HINT = "the host's include directories are not in the sandbox: add the " \
    "library that provides {header} to buildInputs and build with stdenv's compiler " \
    "(its wrapper adds each input's include directory), not the host's"
LINK_HINT = "the symlink leads out of the sandbox ({link} -> {link_target}, as " \
    "Debian's /etc/alternatives does): call the program by its real name, use a " \
    "store path, or add the target to extra-sandbox-paths as well"
LOADER_HINT = "a host program needs the host's dynamic loader {interpreter}: use a " \
    "builder from the store, or add {interpreter_dir} to extra-sandbox-paths (and, " \
    "on a merged-/usr host where it is a symlink, what it points to)"


# The system's TLS trust store (Debian, Fedora, Alpine, OpenSSL's default): a
# program that needs it is about to fetch over HTTPS.
CA_BUNDLE = re.compile(r"^/etc/(?:ssl|pki)/(?:.*/)?(?:ca-certificates\.crt|ca-bundle\.crt|"
                       r"cert\.pem|tls-ca-bundle\.pem)$|^/etc/ssl/certs/?$")
CA_HINT = "it wanted the host's TLS CA bundle, so it was about to fetch over HTTPS, " \
    "and builds have no network: fetch in a fixed-output derivation " \
    "(fetchurl, fetchPypi, a vendor or cargo hash) and build from that; a step that " \
    "only verifies certificates can use cacert's bundle " \
    "(SSL_CERT_FILE=${cacert}/etc/ssl/certs/ca-bundle.crt)"


# Limits, by limits.which() short name; {argv0} is the process that was running.
LIMIT_HINTS = {
    "timeout": "the build ran longer than Nix's `timeout` setting allows (nix-build "
               "--timeout, meta.timeout on Hydra): a build that never ends -- a server "
               "or test waiting forever, a prompt waiting on stdin, a step that hangs "
               "waiting on the network the sandbox does not have. Look at what "
               "{argv0} was doing (nixrec replay); raise the limit only if the build "
               "is just slow",
    "silence": "the build printed nothing for longer than Nix's `max-silent-time` "
               "(--max-silent-time, meta.maxSilent on Hydra): a step that hangs "
               "(waiting on the network, on stdin, on a lock) or works quietly for "
               "long. Fix the hang, or make {argv0} print progress",
    "log-size": "the build wrote more log than Nix's `max-build-log-size` allows: a "
                "runaway loop or a very verbose step ({argv0}); quiet it (send its "
                "output to a file) or raise the limit",
    "processes": "more processes at once than --max-processes: a fork bomb or "
                 "runaway parallelism (a loop that starts jobs without waiting, "
                 "make -j without a number). Nix has no such setting: on a Nix "
                 "builder the host's process limit stops it, as a failed fork",
    "closed-output": "Nix takes the builder closing its standard output and error "
                     "(exec >/dev/null 2>&1) as the end of the build and kills what "
                     "is left: redirect single commands, not the builder's own "
                     "output",
    "other": "the recorder stopped the build; see the reason above",
}


def _hint(c):
    if c["kind"] == "output-check":
        return outputcheck.hint_of(c)
    if c["kind"] == "limit":
        argv0 = basename(c["argv"][0]) if c.get("argv") else "the process"
        return LIMIT_HINTS.get(c.get("limit_kind"), LIMIT_HINTS["other"]).format(
            argv0=argv0)
    if c.get("header") and c["kind"] == "undeclared-host-path":
        return HEADER_HINT.format(**c)
    if c.get("looked_for") and c["kind"] == "undeclared-host-path":
        return SEARCH_HINT.format(where=posixpath.dirname(c["path"]), **c)
    if c["kind"] == "undeclared-host-path" and CA_BUNDLE.search(c.get("path") or ""):
        return CA_HINT
    if c.get("link_target"):
        return LINK_HINT.format(**c)
    if c["kind"] == "missing-interpreter" and _is_loader(c.get("interpreter")):
        return LOADER_HINT.format(**c)
    if c["kind"] == "missing-header":
        return HINTS["missing-header"].format(**c)
    if c["kind"] == "write-denied" and c.get("what") == "ownership":
        return OWNER_HINT
    return HINTS.get(c["kind"], HINTS["fallback"])


def _mention_lines(c, facts):
    """The last log line that names the cause's path (scoring's log_mention),
    from its own process first: the line a maintainer would quote."""
    if c.get("log_mention") != "path":
        return []
    path = c.get("accessed") or c.get("path")
    procs = [c["proc"]] + [p for p in facts.stderr if p != c["proc"]]
    for proc in procs:
        for _, line in reversed(facts.stderr.get(proc, ())):
            if path in line:
                return [(proc, line.strip())]
    return []


def _proc_name(facts, proc):
    """"gcc (1.2.3)": a process as the summaries name it."""
    q = facts.procs.get(proc)
    return f"{q.argv0() if q else '?'} ({proc})"


# A failed search (searches.py): the host has the file where the sandbox hides it.
SEARCH_HINT = "the host keeps {looked_for} in {where}, which the sandbox hides: add the " \
    "package that provides it to buildInputs (nativeBuildInputs for a tool) and let the " \
    "search find it there (pkg-config, cmake and the like look in each input)"


EVIDENCE_LINE = 200      # characters of a log line shown as evidence


HOST_TYPES = {"dir": "a directory", "link": "a dangling symlink", "char": "a device",
              "block": "a device", "fifo": "a named pipe", "socket": "a socket"}


def _host_line(c, facts):
    """What the host had where the sandbox had nothing (the trace's host_view)."""
    e = facts.host.entry(c["path"]) or {}
    what = HOST_TYPES.get(e.get("type"), "there")
    if e.get("type") == "file":
        what = f"a file of {e.get('size')} bytes"
    pkg = f", from the package {e['package']}" if e.get("package") else ""
    return f"on the host: {c['path']} is {what}{pkg} (the sandbox hides it)"


def describe(c, facts):
    """Fill in c["summary"], c["hint"] and c["evidence"] (in place)."""
    if c.get("via"):
        v = c["via"]
        c["summary"] = _summary(c) + f"; so {v['missing']} was never made: " \
            f"{_proc_name(facts, v['producer'])} was to make it, and " \
            f"{_proc_name(facts, v['consumer'])} failed on it"
    else:
        c["summary"] = _summary(c)
    c["hint"] = _hint(c)
    ev = []
    if c["kind"] == "output-check" and c.get("message"):
        ev.append(f"Nix's check on the output: {c['message']}")
    if c.get("syscall"):
        what = c.get("accessed") or c.get("path") or c.get("address") or c.get("host")
        if what is None and c.get("target_pid") is not None:
            what = f"pid {c['target_pid']}" + (f", {c['signal']}" if c.get("signal") else "")
        ev.append(f"event {c['seq']}: {c['syscall']}({what or ''})"
                  f" = {'-1 ' + c['errno'] if c.get('errno') else 'ok'}")
    if c["kind"] == "limit" and c.get("argv"):
        ev.append(f"running in {c['proc']}: " + " ".join(c["argv"])[:EVIDENCE_LINE])
    if c.get("on_host"):
        ev.append(_host_line(c, facts))
    for seq, syscall, path, errno in c.pop("extra_events", ()):
        also = [d for d in c.get("looked_in") or () if d != path]
        more = f" (also missing: {', '.join(also)})" if also else ""
        ev.append(f"event {seq}: {syscall}({path}) = -1 {errno}{more}")
    # The line that says what went wrong, else the last lines before the exit.
    lines = [(c["proc"], c.pop("log_line"))] if c.get("log_line") else \
        _mention_lines(c, facts) or \
        [(c["proc"], line) for line in facts.stderr_of(c["proc"], limit=3)]
    for proc, line in lines:
        if len(line) > EVIDENCE_LINE:    # a log flood is one line of megabytes
            line = line[:EVIDENCE_LINE] + "..."
        ev.append(f"stderr of {proc}: {line}")
    c["evidence"] = ev
