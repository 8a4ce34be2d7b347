"""The sandbox's setup steps, as Nix 2.8 and 2.26 perform them (../shared/reference/nix-sandbox.md §2.2;
what differs by version: nixversion.py, recorded in the plan).

`prepare_host` lays out the chroot and build directory on the host; `enter`
runs in the child that becomes the builder (PID 1 of the new PID namespace)
and performs runChild's steps in Nix's order. What they set up is the plan
(`plan.py`).

Why nixrec's own code and not bubblewrap (docs/sandbox.md): the builder must be
PID 1 with argv[0] = basename(builder) and the tracer's seccomp filter must be
loaded right before the builder's exec. Debian 12's bwrap 0.8 keeps itself as
PID 1 unless --as-pid-1, then cannot set up the pty session the way Nix does,
and has no --argv0; each step below is a few lines here instead.
"""

import fcntl
import os
import resource
import socket
import stat
import struct

from nixrec.recorder import tree
from nixrec.recorder.sandbox import linux
from nixrec.recorder.sandbox.plan import (BUILD_DIR, DEV_LINKS, DEV_NODES, STORE_DIR, SandboxPlan,
                                          features_of, host_ids)

# --- host side ----------------------------------------------------------------------

class Layout:
    """Host directories of one sandbox: the chroot tree and the build directory."""

    def __init__(self, workdir, no_sandbox=False):
        self.workdir = workdir
        self.root = os.path.join(workdir, "root")       # becomes / of the sandbox
        self.build = os.path.join(workdir, "build")     # becomes /build
        self.store = self.root + STORE_DIR
        # --no-sandbox: /nix/store is an overlay on the host's; outputs land in
        # its upper directory, never in the real store.
        self.upper = os.path.join(workdir, "store-upper")
        self.ovlwork = os.path.join(workdir, "store-work")
        self.outputs_dir = self.upper if no_sandbox else self.store

    def remove(self) -> None:
        """Remove every host directory of this sandbox (the mounts died with it)."""
        # tree.remove: the build chose the depth and modes of /build (issue 23).
        tree.remove(self.workdir, ignore_errors=True)
        if not self.build.startswith(self.workdir + "/"):
            tree.remove(self.build, ignore_errors=True)


def host_build_dir(drv_path: str) -> str:
    """--no-sandbox's build directory: a host path the build user can reach,
    named as Nix 2.8 names it (`/tmp/nix-build-<name>.drv-<n>`), with nixrec's
    pid as n. The trace's own directory may sit under a 0700 directory."""
    base = os.path.basename(drv_path)
    name = base[33:] if len(base) > 33 and base[32] == "-" else base
    return f"/tmp/nix-build-{name}-{os.getpid()}"


def prepare_host(plan: SandboxPlan, workdir: str) -> Layout:
    """§2.2 steps 2, 4, 5: the temporary directory and the chroot skeleton."""
    lay = Layout(workdir, plan.no_sandbox)
    if plan.no_sandbox:
        lay.build = plan.build_dir       # a host path the build sees as it is
    uid, gid = build_ids(plan)
    os.makedirs(lay.build, mode=0o700)
    os.chmod(lay.build, 0o700)
    os.makedirs(workdir, exist_ok=True)
    for name, content in plan.build_files.items():
        with open(os.path.join(lay.build, name), "w", encoding="utf-8",
                  errors="surrogateescape") as f:
            f.write(content)
        os.chmod(os.path.join(lay.build, name), 0o644)
        _chown(os.path.join(lay.build, name), uid, gid)
    _chown(lay.build, uid, gid)          # the builder's own, as Nix chowns it
    if plan.no_sandbox:
        for d in (lay.root, lay.upper, lay.ovlwork):
            os.makedirs(d)
        # The overlay's root takes the upper dir's owner and mode: make it like
        # the store (group-writable by the build group, sticky). Both overlay
        # dirs belong to the build's id: mounting in its user namespace, the
        # helper has no rights over files of ids the namespace does not map.
        for d in (lay.upper, lay.ovlwork):
            _chown(d, uid, gid)
        os.chmod(lay.upper, 0o1775)
        # An output that already exists in the real store would show through
        # the overlay, read-only; Nix builds into a fresh path. An overlayfs
        # whiteout (a 0/0 character device in the upper dir) hides it.
        for path in plan.outputs.values():
            if os.path.lexists(path):
                os.mknod(os.path.join(lay.upper, os.path.basename(path)),
                         0o600 | stat.S_IFCHR, os.makedev(0, 0))
        return lay
    os.makedirs(lay.root, mode=0o750)
    os.chmod(lay.root, 0o750)
    _chown(lay.root, -1, gid)            # 0750 root:nixbld, as Nix makes it
    os.mkdir(lay.root + "/tmp")
    os.chmod(lay.root + "/tmp", 0o1777)
    os.mkdir(lay.root + "/etc")
    for name, content in plan.etc_files.items():
        with open(os.path.join(lay.root, "etc", name), "w") as f:
            f.write(content)
        os.chmod(os.path.join(lay.root, "etc", name), 0o644)
    # The mount points of the binds the child makes in /etc, made here: the
    # child cannot write /etc (this process's, 0555 from Nix 2.14 on).
    etc_targets = ["/etc/" + name for name in plan.etc_binds] + [
        sp["target"] for sp in plan.sandbox_paths if sp["target"].startswith("/etc/")
        and os.path.exists(sp["source"])]
    for target in etc_targets:
        os.makedirs(os.path.dirname(lay.root + target), exist_ok=True)
        if os.path.isdir(target):
            os.makedirs(lay.root + target, exist_ok=True)
        else:
            open(lay.root + target, "a").close()
    if features_of(plan)["etc_readonly"]:
        # Nix >= 2.14 (nixversion.ROWS): "Make /etc unwritable", after its binds.
        os.chmod(lay.root + "/etc", 0o555)
    os.makedirs(lay.store)
    os.chmod(lay.store, 0o1775)
    _chown(lay.store, -1, gid)
    for d in (_sandbox_build_dir(plan).lstrip("/"), "dev", "proc"):
        os.makedirs(lay.root + "/" + d, exist_ok=True)
    os.chmod(lay.root + "/dev", 0o755)
    return lay


def _sandbox_build_dir(plan) -> str:
    """sandbox-build-dir: where /build is (plans before issue 24: /build)."""
    return plan.build_dir or BUILD_DIR


def input_bind_readonly(plan) -> bool:
    """Are store inputs bound read-only? Nix binds them read-write (§2.2 10.10):
    they are root's and 0444/0555, so a write fails with EACCES, which a build
    (and `why`) can tell from EROFS. nixrec does the same when the build's host
    id owns nothing (as root); run as a user, the build is that user, who may
    own the store (a single-user install): then read-only, never writable."""
    if plan.nix_version is None:
        return True      # a trace from before issue 24 was recorded so
    return build_ids(plan)[0] == os.getuid()


def sandbox_path_readonly(source: str, plan) -> bool:
    """A sandbox-paths entry: read-write as Nix binds it only when the build
    could not write it anyway: a file (not a tree: a whole host tree cannot be
    checked for a world-writable place) neither owned by the build's id nor
    writable by others. Else read-only (docs/sandbox.md "Which Nix")."""
    if input_bind_readonly(plan):
        return True
    try:
        st = os.stat(source)
    except OSError:
        return True
    return not stat.S_ISREG(st.st_mode) or st.st_uid == build_ids(plan)[0] \
        or bool(st.st_mode & 0o002)


def build_ids(plan):
    """-> (uid, gid) the host sees the build user as (its user namespace's map).
    Traces from before host_uid existed in the plan: the same rule now."""
    if plan.host_uid is None:
        return host_ids()
    return plan.host_uid, plan.host_gid


def _chown(path, uid, gid):
    # Only root can give files away; unprivileged, they are the caller's already.
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def check_sandbox_paths(plan: SandboxPlan) -> list:
    """Sources that must exist; a missing non-optional one is a setup error."""
    return [p["source"] for p in plan.sandbox_paths
            if not p["optional"] and not os.path.exists(p["source"])]


def fixed_trees(plan: SandboxPlan) -> list:
    """The in-sandbox paths the build cannot change: what _chroot_view binds
    (inputs, sandbox paths, /etc files: read-only, or read-write as Nix binds
    them where they are not the build's and not writable by others) and no
    writable place is inside or on top of, and /etc when nixrec runs as root. recorder/trace/predict.py
    answers lookups there at entry.
    --no-sandbox: none (the host's own / is the view)."""
    if plan.no_sandbox:
        return []
    build = plan.build_dir or BUILD_DIR
    outputs = list((plan.outputs or {}).values())
    # Places the build may write: a tree holding one is not fixed.
    writable = [build, plan.store_dir or STORE_DIR, "/tmp", "/dev", "/proc"] + outputs
    # Mounts made after the binds: a bind under one is hidden by it.
    covering = [build, "/dev", "/proc"] + outputs
    binds = list(plan.inputs or []) + [sp["target"] for sp in plan.sandbox_paths or []
                                       if not sp.get("writable")] \
        + ["/etc/" + name for name in plan.etc_binds or []]
    if build_ids(plan)[0] != os.geteuid():
        # /etc and the files in it are made by this process (prepare_host):
        # owned by no id of the build's user namespace, the build cannot
        # change them. (Run as a user, they would be the build user's own.)
        # ld.so alone probes /etc/ld.so.preload and /etc/ld.so.cache at
        # every dynamic exec: ~7k exit stops on GNU hello.
        binds.append("/etc")

    def within(a, b):
        return a == b or a.startswith(b.rstrip("/") + "/")
    return [p for p in binds if p.startswith("/")
            and not any(within(w, p) for w in writable)
            and not any(within(p, c) for c in covering)]


# --- child side: runs as PID 1 of the new namespaces, before the builder's exec ---------

def _bind(source, target, readonly=False):
    """Bind-mount a file or directory, creating the mount point like doBind does.

    A symlink source is followed, as Nix 2.8's doBind does (it stats, and the
    mount follows the link): on a merged-/usr host `/bin` appears in the
    sandbox as a directory holding /usr/bin's files (verified with real Nix).
    """
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
    if readonly:
        linux.mount(None, target, None,
                    linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_REC)


def _loopback_up():
    """§2.2 10.4: bring `lo` up (IFF_UP|IFF_LOOPBACK|IFF_RUNNING) in the new netns."""
    SIOCSIFFLAGS = 0x8914
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40)
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, ifr)
    finally:
        s.close()


def enter(plan: SandboxPlan, lay: Layout) -> None:
    """§2.2 step 10 (runChild), in Nix's order, up to just before the exec.

    Every module it needs is imported at the top of this file: after pivot_root
    Python's lazy imports would find no files. Runs in the forked child that
    is PID 1 of the new PID namespace and holds
    every capability of the new user namespace. Raises OSError on failure; the
    caller reports it as a setup failure, never as a build failure.
    """
    if plan.network:
        _loopback_up()
    linux.sethostname(plan.hostname)
    linux.setdomainname(plan.domainname)
    # Nothing mounted from here on may propagate back to the host.
    linux.mount(None, "/", None, linux.MS_PRIVATE | linux.MS_REC)
    if plan.no_sandbox:
        _host_view(plan, lay)
    else:
        _chroot_view(plan, lay)
    _become_builder(plan, lay.root)


def _host_view(plan, lay):
    """--no-sandbox: the whole host, read-only, but for the build directory and
    an overlay on /nix/store where the outputs are made."""
    root = lay.root
    linux.mount("/", root, None, linux.MS_BIND | linux.MS_REC)
    linux.mount_setattr(root, linux.MOUNT_ATTR_RDONLY, recursive=True)
    linux.mount(lay.build, root + lay.build, None, linux.MS_BIND)   # writable again
    linux.mount("none", root + "/proc", "proc", 0)
    # The store overlay is mounted with the build's ids: overlayfs refuses
    # host root, which this user namespace does not map. Those ids may not
    # walk the host path to the work directory (pytest's is 0700 root), so
    # every directory is passed as an fd opened before the switch. The
    # capabilities stay (this process is not the namespace's uid 0, so the
    # setuid does not clear them); the builder's exec drops them.
    fds = {k: os.open(v, os.O_PATH | os.O_DIRECTORY) for k, v in (
        ("root", root), ("store", root + STORE_DIR), ("upper", lay.upper),
        ("work", lay.ovlwork))}
    fd = {k: f"/proc/self/fd/{v}" for k, v in fds.items()}
    os.setresgid(plan.gid, plan.gid, plan.gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    linux.mount("overlay", fd["store"], "overlay", 0,
                f"lowerdir={STORE_DIR},upperdir={fd['upper']},workdir={fd['work']},userxattr")
    os.fchdir(fds["root"])
    for v in fds.values():
        os.close(v)


def _chroot_view(plan, lay):
    """§2.2 10.7-10.11: the chroot with only what the sandbox holds."""
    root = lay.root
    linux.mount(root, root, None, linux.MS_BIND)
    linux.mount(lay.store, lay.store, None, linux.MS_BIND)
    linux.mount(None, lay.store, None, linux.MS_SHARED)
    _populate_dev(root, plan)
    # Inputs: a build can never write into the real store: they are bound
    # as Nix binds them, read-write but root's and 0444/0555 (EACCES), or
    # read-only where the build's id might own them (input_bind_readonly).
    ro = input_bind_readonly(plan)
    for path in plan.inputs:
        _bind(path, root + path, readonly=ro)
    for sp in plan.sandbox_paths:
        if sp["optional"] and not os.path.exists(sp["source"]):
            continue
        # (writable: only `why --verify`'s HOME, replayer/verify.py)
        _bind(sp["source"], root + sp["target"],
              readonly=not sp.get("writable") and sandbox_path_readonly(sp["source"], plan))
    for name in plan.etc_binds:
        _bind("/etc/" + name, root + "/etc/" + name,
              readonly=sandbox_path_readonly("/etc/" + name, plan))
    _bind(lay.build, root + _sandbox_build_dir(plan))
    linux.mount("none", root + "/proc", "proc", 0)
    os.makedirs(root + "/dev/shm", exist_ok=True)
    linux.mount("none", root + "/dev/shm", "tmpfs", 0, f"size={plan.dev_shm_size}")
    os.makedirs(root + "/dev/pts", exist_ok=True)
    # Nix's options exactly (ptmxmode stays 000 in the mount's options), then
    # its chmod of ptmx to 0666, which the kernel may refuse here as the
    # node is the namespace's unmapped root's: ptmx is reached through the
    # /dev/ptmx link either way.
    linux.mount("none", root + "/dev/pts", "devpts", 0, "newinstance,mode=0620")
    try:
        os.chmod(root + "/dev/pts/ptmx", 0o666)
    except OSError:
        pass


def _become_builder(plan, root):
    """§2.2 10.12-10.17: enter the root, drop to the build user, set limits."""
    linux.unshare(linux.CLONE_NEWNS)
    if not plan.no_sandbox:
        os.chdir(root)       # (--no-sandbox: _host_view is there already)
    # Nix pivots onto a `real-root` directory it then removes; pivot_root(".",
    # ".") (pivot_root(2), NOTES) needs no directory, so it also works when
    # the new root is read-only (--no-sandbox). The old root is stacked on
    # the new one and detached at once: the same end state.
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chroot(".")
    os.setgid(plan.gid)
    os.setuid(plan.uid)
    os.chdir(plan.cwd)
    os.umask(0o022)
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.RLIM_INFINITY))
    linux.personality(linux.ADDR_NO_RANDOMIZE | (linux.UNAME26 if plan.uname26 else 0))
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def _kvm(plan):
    # Nix binds /dev/kvm when "kvm" is in system-features (by default when
    # /dev/kvm is usable; verified with 2.8: `ls /dev`). The plan says since
    # issue 24 (plan.kvm_wanted reads nix.conf); older plans: the default.
    if plan.kvm is not None:
        return ("kvm",) if plan.kvm else ()
    return ("kvm",) if os.access("/dev/kvm", os.R_OK | os.W_OK) else ()


def _populate_dev(root, plan):
    """§2.4 /dev: the host's harmless devices bound in, and the usual symlinks."""
    for dev in DEV_NODES + _kvm(plan):
        if os.path.exists("/dev/" + dev):
            _bind("/dev/" + dev, f"{root}/dev/{dev}")
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{root}/dev/{name}")
