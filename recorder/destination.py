"""Where a recording goes: TRACE and TRACE.d, replaced only once the new
recording exists (issue 23).

Before, `record -o same.nixrec` truncated the good trace to a new header,
then failed removing same.nixrec.d (read-only outputs of a non-root user, or
1,500 nested directories): the old trace was lost and no new one made.
Now the new trace is written to `TRACE.tmp-PID` and TRACE.d is moved aside
to `TRACE.d.old-PID` (a rename: it cannot fail on what is inside); the
build's sandbox is made in a fresh TRACE.d. Once the builder has started
(the new recording then has something to say, and a kill -9 from there on
should leave it where the user looks), `commit` renames the new trace into
place and removes the old directory. Any failure or interrupt before that:
`rollback` removes the new ones and puts TRACE.d back; TRACE was never
touched.
"""

import os
import signal

from nixrec.recorder import tree
from nixrec.recorder.errors import HostUnsupported


class Destination:
    def __init__(self, trace: str):
        self.trace = trace
        self.workdir = trace + ".d"
        pid = os.getpid()
        self.tmp = f"{trace}.tmp-{pid}"
        self.aside = f"{self.workdir}.old-{pid}"
        self.moved = False               # the previous TRACE.d is at `aside`
        self.made = False                # TRACE.d is the new one, ours
        self.committed = False
        self.reaper = None

    def recover(self) -> None:
        """Undo what a recorder killed outright (kill -9) left at this -o:
        before its commit, a TRACE.tmp-PID and the previous TRACE.d at
        TRACE.d.old-PID (put back: the trace there is still its own); after
        it, only a TRACE.d.old-PID half removed (removed). Only names of
        processes that are gone are touched."""
        folder, base = os.path.split(self.trace)
        try:
            names = os.listdir(folder or ".")
        except OSError:
            return
        for name in names:
            pid = _dead_pid(name, base + ".d.old-")
            if pid is None:
                continue
            path = os.path.join(folder, name)
            if os.path.exists(f"{self.trace}.tmp-{pid}"):
                # Killed before its commit: TRACE.d is the aborted one.
                tree.remove(self.workdir, ignore_errors=True)
                os.rename(path, self.workdir)
            else:
                tree.remove(path, ignore_errors=True)
        for name in names:
            if _dead_pid(name, base + ".tmp-") is not None:
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass

    @property
    def previous_kept(self) -> bool:
        """Is there a previous trace that a failure now leaves as it was?"""
        return not self.committed and os.path.exists(self.trace)

    def make_workdir(self) -> None:
        """Move the previous TRACE.d aside, make an empty one."""
        try:
            if os.path.lexists(self.workdir):
                os.rename(self.workdir, self.aside)
                self.moved = True
            os.mkdir(self.workdir)
            self.made = True
        except OSError as e:
            raise HostUnsupported(f"cannot create {self.workdir}: {e.strerror}") from None

    def commit(self) -> str:
        """The new trace into place, the old directory removed. -> a warning
        (the old directory could not all be removed) or None."""
        os.replace(self.tmp, self.trace)
        self.committed = True
        if not self.moved:
            return None
        try:
            tree.remove(self.aside)
        except OSError as e:
            return f"could not remove the previous {self.aside}: {e.strerror}"
        return None

    def rollback(self) -> None:
        """Undo everything since the start: no new trace, TRACE.d as it was."""
        if self.reaper is not None:
            self.reaper.done()           # before TRACE.d is the old one again
        if self.committed:
            return
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
        if self.made:
            tree.remove(self.workdir, ignore_errors=True)
            self.made = False
        if self.moved and not os.path.lexists(self.workdir):
            os.rename(self.aside, self.workdir)
            self.moved = False


def _dead_pid(name, prefix):
    """The pid in `prefix<pid>` if that process is gone, else None."""
    pid = name[len(prefix):] if name.startswith(prefix) else ""
    return int(pid) if pid.isdigit() and not _alive(int(pid)) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Reaper:
    """Removes the sandbox's host directories if nixrec dies without doing it
    (kill -9, the OOM killer): a child that waits on a pipe only nixrec
    writes. An orderly end writes a byte first (`done`), whatever it kept;
    end of file alone means nixrec is gone. The build's processes die with
    nixrec (PTRACE_O_EXITKILL, PR_SET_PDEATHSIG) and their mounts with their
    namespace; this takes care of the files (issue 23: "no sandbox
    directory left"). Started before any thread of the recording, so the
    fork copies nothing half-held."""

    def __init__(self, paths):
        r, w = os.pipe()                 # both close-on-exec
        pid = os.fork()
        if pid == 0:                     # the reaper: never returns
            try:
                os.setsid()              # a terminal's Ctrl-C is for nixrec, not for it
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)
                os.closerange(0, r)
                os.closerange(r + 1, 65536)
                if not os.read(r, 1):
                    for path in paths:
                        tree.remove(path, ignore_errors=True)
            finally:
                os._exit(0)
        os.close(r)
        self.pid, self._w = pid, w

    def done(self) -> None:
        """nixrec ends in order: the reaper leaves everything as it is."""
        if self._w is None:
            return
        try:
            os.write(self._w, b"D")
        finally:
            os.close(self._w)
            self._w = None
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
