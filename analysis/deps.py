"""What the build touched outside what it declared (`nixrec deps`).

Also the one owner of "where is this path in the sandbox" (classify_path) and
"what kind of access is this event" (access_of), which rootcause.py reuses.
"""

from nixrec.recorder.tracefile.hostview import HostView
from nixrec.recorder.trace.syscalls import (O_CREAT, O_RDWR, O_TRUNC, O_WRONLY, OPEN_CALLS,
                                      STAT_CALLS, WRITE_CALLS, XATTR_SET)

STORE_DIR = "/nix/store"

# Paths Nix itself puts in every sandbox (nix-sandbox.md §2.4): touching them is
# not an undeclared dependency, so neither `deps` nor `why` should blame them.
SANDBOX_FILES = frozenset({
    "/", "/nix", "/etc", "/etc/passwd", "/etc/group", "/etc/hosts",
    "/tmp", "/dev", "/proc", "/dev/shm", "/dev/pts",
})
SANDBOX_PREFIXES = ("/proc/", "/dev/", "/tmp/")

# Open flags that make an open a write (syscalls.py owns their values).
_OPEN_WRITE = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC

# Access kind per syscall name: the table's classes (recorder/trace/syscalls.py owns
# them) plus the calls analysis also names but the table does not class.
_STAT = STAT_CALLS | {"chdir", "getxattr", "lgetxattr"}
_WRITE = WRITE_CALLS | {"fchmod", "fsetxattr", "fchown"} | set(XATTR_SET)
_OPEN = OPEN_CALLS
_CONNECT = {"connect", "sendto", "sendmsg", "bind"}
_CREATE = {"mkdir", "mkdirat", "link", "linkat", "symlink", "symlinkat", "creat",
           "mknod", "mknodat"}
_DELETE = {"unlink", "unlinkat", "rmdir"}
_RENAME = {"rename", "renameat", "renameat2"}


def access_of(ev) -> str:
    """read | write | stat | exec | connect | None for an event that names a path."""
    if ev.kind == "exec":
        return "exec"
    name = ev.syscall or ""
    if name in _OPEN:
        return "write" if (ev.flags or 0) & _OPEN_WRITE else "read"
    if name in _STAT:
        return "stat"
    if name in _WRITE:
        return "write"
    if name in _CONNECT:
        return "connect"
    return None


def creates(ev):
    """The path an event made exist (open O_CREAT, mkdir, link, rename target) or None."""
    if ev.failed or ev.kind != "syscall":
        return None
    name = ev.syscall or ""
    if name in _OPEN and (ev.flags or 0) & O_CREAT:
        return ev.path
    if name in _RENAME or name in ("link", "linkat", "symlink", "symlinkat"):
        return ev.path2
    if name in _CREATE:
        return ev.path2 or ev.path
    return None


def deletes(ev):
    if ev.failed or ev.kind != "syscall":
        return None
    if ev.syscall in _DELETE:
        return ev.path
    if ev.syscall in _RENAME:
        return ev.path
    return None


def store_path_of(path: str, store_dir: str = STORE_DIR):
    """/nix/store/<hash>-name/sub/dir -> /nix/store/<hash>-name; None outside the store."""
    if not path or not path.startswith(store_dir + "/"):
        return None
    first = path[len(store_dir) + 1:].split("/", 1)[0]
    return f"{store_dir}/{first}" if first else None


class PathClassifier:
    """Where a path is, seen from the derivation's declared sandbox plan."""

    def __init__(self, plan: dict):
        plan = plan or {}
        self.store_dir = plan.get("store_dir") or STORE_DIR
        self.build_dir = plan.get("build_dir") or "/build"
        self.home = plan.get("home") or "/homeless-shelter"
        self.inputs = set(plan.get("inputs") or ())
        self.outputs = set((plan.get("outputs") or {}).values())
        # Host paths bind-mounted in (sandbox-paths, extra-sandbox-paths): a missing
        # file under one is missing on the host too, not hidden by the sandbox.
        self.mounted = tuple(sorted(
            (m.get("target") or m.get("source") or "").rstrip("/") or "/"
            for m in plan.get("sandbox_paths") or () if isinstance(m, dict)))
        # Where the build can make and remove files: the rest of the sandbox
        # (inputs, host paths) does not change while it runs.
        self.writable_prefixes = (self.build_dir, "/tmp/", "/dev/shm/") + \
            tuple(sorted(self.outputs))

    def writable(self, path: str) -> bool:
        """`path` is where files come and go during the build (/build, /tmp,
        /dev/shm, an output)."""
        return path.startswith(self.writable_prefixes)

    def category(self, path: str) -> str:
        """input | output | build | sandbox | store | home | host."""
        if path == self.home or path.startswith(self.home + "/"):
            return "home"
        sp = store_path_of(path, self.store_dir)
        if sp is not None:
            if sp in self.inputs:
                return "input"
            if sp in self.outputs:
                return "output"
            return "store"
        if path == self.store_dir or path == self.build_dir \
                or path.startswith(self.build_dir + "/"):
            return "build" if path != self.store_dir else "sandbox"
        if path in SANDBOX_FILES or path.startswith(SANDBOX_PREFIXES):
            return "sandbox"
        return "host"

    def undeclared(self, path: str) -> bool:
        return self.category(path) in ("store", "home", "host")

    def mounted_from_host(self, path: str) -> bool:
        """`path` is at or under a sandbox path bind-mounted from the host."""
        return any(path == m or path.startswith(m + "/") or m == "/"
                   for m in self.mounted)

    def visible(self, path: str) -> bool:
        """The sandbox shows this path's host counterpart: a declared input or
        output, /build, Nix's own files, or a mounted sandbox path. A host path
        that is not visible is one the sandbox hides."""
        if self.category(path) in ("input", "output", "build", "sandbox"):
            return True
        return self.mounted_from_host(path)


# deps categories, in report order; "probe" is the absent probes (below).
CATEGORIES = ("host", "store", "home", "network", "dns", "process", "probe")
# deps groups: what the build used outside its inputs, what the sandbox hid
# and the host has (the trace's host_view), what it was refused otherwise,
# and the absent probes nobody has or every program makes (no dependency).
GROUPS = ("used", "hidden", "refused", "probe")
_LOOKUP = ("read", "stat", "exec", "connect")   # connect: a socket file
_ABSENT = ("ENOENT", "ENOTDIR")

# Calls that reach another process (recorder/trace/syscalls.py records target_pid and
# signal). Refused with ESRCH (not in the build's PID namespace) or EPERM, the
# target is a process outside the build; a kill that worked hit one of its own.
PROCESS_CALLS = frozenset(("kill", "tkill", "tgkill", "ptrace"))
PROCESS_REFUSED = ("ESRCH", "EPERM")


def process_access(ev):
    """"signal" | "ptrace" for a refused kill-family or ptrace call, else None."""
    if ev.syscall not in PROCESS_CALLS or ev.errno not in PROCESS_REFUSED:
        return None
    return "ptrace" if ev.syscall == "ptrace" else "signal"


def _key_of(ev, cls):
    """(category, key field, value) for one event, or None if it is declared."""
    dns = ev.args.get("dns") if ev.args else None
    if dns:
        return ("dns", "host", dns)
    if process_access(ev):
        return ("process", "target_pid", ev.args.get("target_pid"))
    access = access_of(ev)
    if access == "connect":
        addr = ev.args.get("address")
        if addr and addr.rsplit(":", 1)[-1] == "0" and not addr.startswith("/"):
            return None     # port 0 reaches nobody: a UDP socket's disconnect
        if addr and is_resolver(addr):
            return ("dns", "address", addr)   # a query whose question was not decoded
        # A Unix socket inside /build or /tmp is the build talking to itself.
        if not addr or ev.args.get("family") == "AF_UNIX" \
                and not cls.undeclared(addr):
            return None
        return ("network", "address", addr)
    if ev.path is None or access is None:
        return None
    path = ev.path2 if access == "write" and ev.path2 and ev.syscall not in _RENAME \
        else ev.path
    cat = cls.category(path)
    if cat not in ("host", "store", "home"):
        return None
    return (cat, "path", path)


def is_resolver(address) -> bool:
    """An address of a DNS resolver (port 53)."""
    return address.rsplit(":", 1)[-1] == "53" and not address.startswith("/")


def _result(ev, cat, plan):
    """succeeded | refused | unanswered: a resolver query from a sandbox
    without network (its UDP connect succeeds: the loopback is up) was
    never answered; it is no dependency the build used."""
    if ev.failed:
        return "refused"
    # plan "network" is the sandbox's own (empty) network namespace; only a
    # fixed-output build (or --no-sandbox) shares the host's network.
    if cat == "dns" and not (plan.get("fixed_output") or plan.get("no_sandbox")):
        return "unanswered"
    return "succeeded"


def undeclared_accesses(header: dict, events, summary: dict = None) -> dict:
    """Stream the events once; returns {"undeclared": [...], "unused_inputs":
    [...], "referenced_unused": [...], "hidden_references": [...]}.

    An input no event touched is unused unless an output refers to it (the
    summary's `references`, Nix's reference scan): a path that reached the
    output through the environment (`echo ${dep} > $out/...`) is a runtime
    dependency, listed apart so that nobody removes it as unused. A store
    path an output names that is no input (the summary's
    `hidden_references`) is a reference Nix does not record."""
    plan = (header or {}).get("plan") or {}
    cls = PathClassifier(plan)
    groups = {}
    touched = set()
    found = set()               # basenames of every path some call found
    for ev in events:
        for p in (ev.path, ev.path2):
            sp = store_path_of(p, cls.store_dir) if p else None
            if sp in cls.inputs:
                touched.add(sp)
        if ev.kind not in ("syscall", "exec"):
            continue
        if ev.path and not ev.failed:
            found.add(basename(ev.path))          # wherever it was found
        key = _key_of(ev, cls)
        if key is None:
            continue
        cat, field, value = key
        access = "connect" if cat in ("network", "dns") else \
            process_access(ev) if cat == "process" else access_of(ev)
        result = _result(ev, cat, plan)
        g = groups.get((cat, value, access, result))
        if g is None:
            g = groups[(cat, value, access, result)] = {
                field: value, "category": cat, "access": access, "result": result,
                "count": 0, "first_seq": ev.seq, "procs": [], "errno": ev.errno}
            if access == "signal":
                g["signal"] = ev.args.get("signal")
        g["count"] += 1
        if ev.proc not in g["procs"]:
            g["procs"].append(ev.proc)
    host = HostView(summary)
    for g in groups.values():
        _group(g, found, host)
    order = {c: i for i, c in enumerate(CATEGORIES)}
    undeclared = sorted(groups.values(),
                        key=lambda g: (order[g["category"]], g["first_seq"]))
    for g in undeclared:
        if g["errno"] is None:
            del g["errno"]
    kept = {}
    for name, paths in sorted(((summary or {}).get("references") or {}).items()):
        for p in paths:
            kept.setdefault(p, []).append(name)
    idle = sorted(cls.inputs - touched)
    hidden = [dict(h, output=name) for name, found in
              sorted(((summary or {}).get("hidden_references") or {}).items()) for h in found]
    return {"undeclared": undeclared, "unused_inputs": [p for p in idle if p not in kept],
            "referenced_unused": [{"path": p, "outputs": kept[p]} for p in idle if p in kept],
            "hidden_references": hidden}


def _group(g, found, host):
    """Put a deps entry in its group. A lookup that found nothing (ENOENT,
    ENOTDIR) is:
    - "hidden" when the host has it (the trace's host_view): the sandbox hid
      it (/etc/services for a test that asks getservbyname), even if a call
      found its name elsewhere (pkg-config's /usr/share/pkgconfig next to
      /usr/lib/pkgconfig);
    - an absent probe (category "probe", its place kept in `area`) when its
      name was found under another directory (`found`: a search path at
      work, as the loader, gcc's include and program searches, `command -v`
      do), or the host lacks it as well (the trace's host_view: nobody has
      it), or, in a trace without a host view, it is a path every program
      asks for and does without (noise.py: busybox's /etc/busybox.conf,
      ld.so.cache, the loader's hwcaps directories, nscd's socket...);
    - else refused. Everything else the build was refused, or used (a
      resolver query never answered is refused, "unanswered")."""
    from nixrec.analysis.noise import path_noise    # noise.py imports this module
    path = g.get("path") or g.get("address")
    absent = path and g["result"] == "refused" and g.get("errno") in _ABSENT \
        and g["access"] in _LOOKUP
    has = host.has(path) if absent and g.get("path") else None
    if has:
        g["group"] = "hidden"      # whatever else the build found: the host has it
    elif absent and (basename(path) in found or has is False
                     or (has is None and path_noise(path) is True)):
        g["area"], g["category"], g["group"] = g["category"], "probe", "probe"
    else:
        g["group"] = "used" if g["result"] == "succeeded" else "refused"


def basename(path: str) -> str:
    if not path:
        return ""
    path = path.rstrip("/")
    return path[path.rfind("/") + 1:]
