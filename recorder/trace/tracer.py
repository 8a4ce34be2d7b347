"""The ptrace loop: the one place that drives tracees.

The builder runs under a seccomp filter (seccomp.py) that stops it only on the
calls in syscalls.py. At each stop the tracer reads the call with one
PTRACE_GET_SYSCALL_INFO and its strings with process_vm_readv, lets the call
run to its exit stop when the result matters, and hands the finished event to
`emit`. Forks, execs and exits come from ptrace's own event stops.

Processes are named by tree path (style.md): the builder is "1", its children
"1.1", "1.2", ... in the order the tracer sees their creation.

When recorder/trace/_fastpath.so is built, the waiting and most stops are done in C
(fastpath.c, issue 6): run() then hands this class only the stops the C loop
leaves to Python, and the C loop's records (_take_records), which become the
same events this loop would have made.

Waiting for the next stop is waiting.py's; what is at a path that was
"missing" is explain.py's.
"""

import errno
import os
import signal
import time

from nixrec.recorder.trace import explain, fastpath, predict, syscalls, waiting
from nixrec.recorder.sandbox import linux
from nixrec.recorder.trace.calls import Decoder, fd_pair, set_result, signame
from nixrec.recorder.tracefile.model import Event, Process

OPTIONS = (linux.PTRACE_O_TRACESYSGOOD | linux.PTRACE_O_TRACEFORK
           | linux.PTRACE_O_TRACEVFORK | linux.PTRACE_O_TRACECLONE
           | linux.PTRACE_O_TRACEEXEC | linux.PTRACE_O_TRACESECCOMP
           | linux.PTRACE_O_EXITKILL)

# Signals worth an event when delivered; SIGCHLD and friends are routine.
NOTABLE_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE,
                   signal.SIGILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                   signal.SIGPIPE, signal.SIGALRM, signal.SIGXCPU, signal.SIGQUIT,
                   signal.SIGSYS, signal.SIGUSR1, signal.SIGUSR2}
CLONE_THREAD = 0x00010000
_FORK_SYSCALL = {linux.PTRACE_EVENT_FORK: "fork", linux.PTRACE_EVENT_VFORK: "vfork",
                 linux.PTRACE_EVENT_CLONE: "clone"}


class Tracee:
    """What the tracer knows of one live process."""

    __slots__ = ("pid", "nspid", "proc", "nchildren", "cwd", "pending", "forced_errno",
                 "info", "connected", "question")

    def __init__(self, pid, nspid, proc, cwd, info):
        self.pid = pid               # live pid, as the tracer sees it (never in the trace)
        self.nspid = nspid           # the pid the build sees (PID namespace): recorded
        self.proc = proc
        self.nchildren = 0
        self.cwd = cwd
        self.pending = None          # (Syscall, Event) between entry and exit stops
        self.forced_errno = 0        # a refusal nixrec applies (Nix's seccomp rules)
        self.info = info             # the Process record for the trace
        self.connected = {}          # fd -> address of connect() (for send without one)
        self.question = None         # a lookup predict.py may answer (between entry stop and resume)


class Tracer:
    """Traces one build from its builder's first exec to the last exit."""

    def __init__(self, emit, cwd="/build", output_rdev=None, builder_env=True, before=None,
                 predictor=None, ran=None):
        self.emit = emit                    # callable(Event): the session's sink
        self.t0 = time.monotonic()
        self.tracees = {}                   # live pid -> Tracee
        self.unborn = {}                    # pid -> status: stopped before its fork event
        self.nprocesses = 0                 # processes seen (a live one's Process is t.info)
        self.by_nspid = {}                  # the build's pid -> tree path (latest)
        self.start_cwd = cwd
        self.builder_pid = None
        self.builder_status = None          # ("exit", code) or ("signal", name)
        self.py_stops = 0                   # stops handled here (the C loop counts its own)
        self.c_stops = 0                    # stops the C loop handled (once it is closed)
        self.refused = 0
        self.current = ""                   # argv0 of the last exec (status line)
        self.before = before                # replay: callable(Event) -> freeze?
        # A call the C loop let run, shown now: callable(Event). Recording:
        # the sink; replay gives its own (it cannot freeze there), else it
        # is before(ev, ran=True), then the sink.
        if ran is None:
            ran = emit if before is None else lambda ev: (before(ev, True), emit(ev))
        self.ran = ran
        self.frozen = None                  # (Tracee, Event) while frozen
        self.held = {}                      # pid -> wait status kept during a freeze
        self._absent = set()                # fixed-tree paths an ENOENT check found empty
        self.predictor = predictor          # predict.Predictor: lookups answered at entry
        self.decoder = Decoder(self.t0, output_rdev, builder_env)   # stops -> events
        self._held_pids = []                # stopped at a HELD record, to resume
        # The C loop (fastpath.py) for the common stops, when it is built.
        self.fast = fastpath.FastPath(syscalls.BY_NR, predictor is not None, output_rdev,
                                      waiting.SPIN_SECONDS, NOTABLE_SIGNALS) \
            if fastpath.available() else None

    @property
    def stops(self) -> int:
        return self.py_stops + self.stops_c

    @property
    def stops_c(self) -> int:
        return self.fast.stops if self.fast is not None else self.c_stops

    # --- attaching ---------------------------------------------------------------
    def seize(self, pid: int) -> None:
        """Attach to the builder before it loads its filter and execs."""
        linux.ptrace(linux.PTRACE_SEIZE, pid, 0, OPTIONS)
        self.builder_pid = pid
        nspid, _ = waiting.status_ids(pid)
        info = Process("1", pid=nspid, parent=None)
        self.nprocesses = 1
        self.tracees[pid] = Tracee(pid, nspid, "1", self.start_cwd, info)
        if self.fast is not None:
            self.fast.add(pid)

    def kill_build(self) -> None:
        """SIGKILL the builder: PID 1 of its namespace, so every process goes."""
        if self.builder_pid and self.builder_status is None:
            try:
                os.kill(self.builder_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # --- the loop ------------------------------------------------------------------
    def run(self, should_stop=None) -> str:
        """Until every tracee has exited ("done") or a `before` hook froze the
        build ("frozen"). `should_stop()` -> True kills the build."""
        while self.tracees:
            got = self._next_stop()
            if got is None:
                break
            if not got:
                continue
            pid, status = got
            if should_stop is not None and should_stop():
                self.kill_build()
            try:
                self._handle(pid, status)
            except _Frozen:
                return "frozen"
        self._close()
        return "done"

    def _next_stop(self):
        """-> (pid, status) of the next stop for this loop; None when no
        tracee is left; () when the C loop returned only records (now events)
        or for a signal (its handler ran)."""
        if self.fast is None:
            return waiting.wait_any()
        code, pid, status = self.fast.run()
        self._sync()
        if code == fastpath.STOP:
            return pid, status
        return None if code in (fastpath.DONE, fastpath.NOCHILD) else ()

    def _close(self):
        if self.predictor is not None:
            self.predictor.close()
        if self.fast is not None:
            self.c_stops = self.fast.stops
            self.fast.close()
            self.fast = None

    # --- freezing (replay) ----------------------------------------------------------------
    # A `before(event)` hook sees each recorded call at its entry, before the
    # kernel runs it. Returning True freezes the build there: that process
    # stays in its seccomp stop and every other tracee is brought to a stop
    # too, so a shell can look at the sandbox exactly as it was before the call.

    def _freeze(self, t, ev):
        self.frozen = (t, ev)
        for pid in list(self.tracees):
            if pid != t.pid:
                try:
                    linux.ptrace(linux.PTRACE_INTERRUPT, pid)
                except OSError:
                    pass
        unstopped = set(self.tracees) - {t.pid}
        while unstopped:
            got = waiting.wait_any_but_vfork(unstopped)
            if got is None:
                break
            pid, status = got
            other = self.tracees.get(pid)
            if other is None:
                # A child born during the freeze: kept until its fork event.
                if self.fast is not None:
                    self.fast.handle(pid, status)
                else:
                    self.unborn[pid] = status
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._on_exit(other, status)
                unstopped.discard(pid)
                continue
            # Keep whatever stop it reported; thaw() handles it as usual.
            self.held[pid] = status
            unstopped.discard(pid)
        raise _Frozen()

    def frozen_pids(self):
        """Live pids of the frozen tracees (for attaching a shell)."""
        return list(self.tracees)

    def thaw(self) -> None:
        """Resume a frozen build: the frozen call runs, held stops are handled."""
        if self.frozen is None:
            return
        t, ev = self.frozen
        self.frozen = None
        self._continue_entry(t, ev)
        held, self.held = self.held, {}
        for pid, status in held.items():
            try:
                self._dispatch(pid, status)
            except _Frozen:
                # A hook froze again while thawing: keep the rest held.
                for p2, st2 in held.items():
                    if p2 not in self.held and p2 != pid:
                        self.held[p2] = st2
                return

    def drain(self) -> None:
        """After kill_build: reap every tracee so none stays a zombie of ours.

        A traced process that dies is reported to the tracer first; until the
        tracer waits for it, its real parent (the sandbox helper) cannot.
        """
        self.kill_build()
        while self.tracees:
            got = waiting.wait_any()
            if got is None:
                break
            pid, status = got
            t = self.tracees.get(pid)
            if t is None:
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._on_exit(t, status)
            else:
                try:
                    self._resume(pid)
                except OSError:
                    pass
        self._close()

    def _now(self) -> int:
        return int((time.monotonic() - self.t0) * 1_000_000)

    def _dispatch(self, pid, status):
        """A stop this loop waited for itself (a replay's freeze, then thaw):
        the C loop's when it is one the C loop handles (the exit of a call it
        let run, a process event...), else this loop's."""
        if self.fast is not None:
            code = self.fast.handle(pid, status)
            self._sync()
            if code != fastpath.STOP:
                return
        self._handle(pid, status)

    def _sync(self):
        """After the C loop ran: every record an event, held tracees resumed."""
        self._take_records(self.fast.take())
        if self._held_pids:
            for pid in self._held_pids:
                try:
                    self._resume(pid)
                except OSError:
                    pass
            self._held_pids.clear()

    def _handle(self, pid, status):
        t = self.tracees.get(pid)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            if t is not None:
                self._on_exit(t, status)
            return
        if not os.WIFSTOPPED(status):
            return
        if t is None:
            # A new child can report its first stop before its parent's fork
            # event names it; hold it until the parent's stop arrives.
            self.unborn[pid] = status
            return
        self.py_stops += 1
        sig = os.WSTOPSIG(status)
        event = status >> 16
        try:
            if event == linux.PTRACE_EVENT_SECCOMP:
                self._on_seccomp(t)
            elif sig == (signal.SIGTRAP | 0x80):
                self._on_syscall_exit(t)
            elif event in _FORK_SYSCALL:
                self._on_fork(t, event)
            elif event == linux.PTRACE_EVENT_EXEC:
                self._on_exec_done(t)
            elif event == linux.PTRACE_EVENT_STOP:
                self._resume(t.pid)
            elif event:
                self._resume(t.pid)
            else:
                self._on_signal(t, sig)
        except ProcessLookupError:
            pass      # killed while stopped (SIGKILL): its exit status follows
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise

    def _resume(self, pid, sig=0, req=linux.PTRACE_CONT):
        linux.ptrace(req, pid, 0, sig)

    # --- process events ----------------------------------------------------------------
    def _on_fork(self, t, event):
        child_pid = linux.geteventmsg(t.pid)
        nspid, tgid = waiting.status_ids(child_pid)
        self._forked(t, event, child_pid, nspid, tgid, self._now())
        self._resume(t.pid)
        if child_pid in self.unborn:
            status = self.unborn.pop(child_pid)
            self._dispatch(child_pid, status)

    def _forked(self, t, event, child_pid, nspid, tgid, now):
        """The tracer's view of a new child (from this loop or a C record)."""
        t.nchildren += 1
        proc = f"{t.proc}.{t.nchildren}"
        thread = event == linux.PTRACE_EVENT_CLONE and tgid is not None and tgid != child_pid
        # The parent's argv is shared, not copied: an exec replaces it, never
        # edits it (issue 6: memory follows live processes, not all of them).
        seq_info = Process(proc, pid=nspid, parent=t.proc, argv=t.info.argv, exe=t.info.exe)
        self.nprocesses += 1
        self.by_nspid[nspid] = proc
        child = Tracee(child_pid, nspid, proc, t.cwd, seq_info)
        self.tracees[child_pid] = child
        self.emit(Event("fork", t.proc, t.nspid, _FORK_SYSCALL[event], result=nspid,
                        args={"child": proc, "thread": thread}, time=now))

    def _on_exit(self, t, status, now=None, seen_by_c=False):
        del self.tracees[t.pid]
        if self.fast is not None and not seen_by_c:
            self.fast.exited(t.pid)
        if os.WIFEXITED(status):
            code, sig = os.WEXITSTATUS(status), None
        else:
            code, sig = None, signame(os.WTERMSIG(status))
        t.info.exit_status, t.info.exit_signal = code, sig
        if t.pending is not None and t.pending[1].kind == "exec":
            # exit_group from another thread during exec, or killed mid-call.
            t.pending = None
        self.emit(Event("exit", t.proc, t.nspid, None, result=code,
                        args={"status": code, "signal": sig},
                        time=self._now() if now is None else now))
        if t.pid == self.builder_pid:
            self.builder_status = ("exit", code) if sig is None else ("signal", sig)

    def _on_signal(self, t, sig):
        if sig in NOTABLE_SIGNALS:
            self._signalled(t, sig, self._now())
        if sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            sig = 0     # no job control in a build: never leave a tracee stopped
        self._resume(t.pid, sig)

    def _signalled(self, t, sig, now):
        self.emit(Event("signal", t.proc, t.nspid, None, args={"signal": signame(sig)},
                        time=now))

    # --- syscalls ---------------------------------------------------------------------------
    def _on_seccomp(self, t):
        op, nr, args = linux.get_syscall_info(t.pid)
        sc = syscalls.BY_NR.get(nr)
        if sc is None or op != linux.PTRACE_SYSCALL_INFO_SECCOMP:
            self._resume(t.pid)
            return
        refusal = self._sandbox_refusal(sc, args)
        if refusal:
            # Nix's seccomp rules, applied here so the refused call is in the trace.
            linux.skip_syscall(t.pid)
            t.forced_errno = refusal
        lookup = self.predictor is not None and self.predictor.roots \
            and sc.name in syscalls.LOOKUPS
        if self.before is None and sc.needs_exit and sc.cls != syscalls.EXEC and not lookup:
            # Let the call run while it is decoded: the process stops again at
            # the call's exit before it can run any code of its own, so its
            # path and address arguments stay as they are until then. (Not an
            # exec, whose success replaces the memory the arguments are in,
            # nor a call without an exit stop, nor under replay's hook, which
            # must see the call before it runs.)
            self._resume(t.pid, req=linux.PTRACE_SYSCALL)
            t.pending = (sc, self.decoder.entry(t, sc, args))
            return
        ev = self.decoder.entry(t, sc, args)
        if ev is None:
            self._resume(t.pid)
            return
        if lookup:
            t.question = self.predictor.question(sc, args, self.decoder.raw)
        t.pending = (sc, ev)
        if self.before is not None and self.before(ev):
            self._freeze(t, ev)
        self._continue_entry(t, ev)

    def _continue_entry(self, t, ev):
        sc, _ = t.pending
        if t.question is not None:
            question, t.question = t.question, None
            answer = self.predictor.answer(t.pid, question, ev.path)
            if self.fast is not None and not self.predictor.roots:
                self.fast.predict(False)      # the build's root could not be opened
            if answer is not None and answer is not predict.OPENS:
                # Known now (predict.py): no exit stop. The ENOENT explanation
                # reads the build's root, which the call cannot change.
                t.pending = None
                self.predictor.answered += 1
                ev.result, ev.errno = answer
                self._resume(t.pid)
                self._finish(t, sc, ev)
                if self.fast is not None:
                    # The C loop answers the same question from now on, when
                    # the event is only that answer (nothing was explained).
                    self.fast.learn(question, None if ev.args else answer)
                self.emit(ev)
                return
            if self.fast is not None:
                # OPENS too: the C loop finds the fd (this loop, the kernel).
                self.fast.learn(question, answer)
        if not sc.needs_exit:
            t.pending = None
            self.emit(ev)
            self._resume(t.pid)
            return
        self._resume(t.pid, req=linux.PTRACE_SYSCALL)

    @staticmethod
    def _sandbox_refusal(sc, args):
        if sc.name in syscalls.SETUID_CHMOD:
            if args[syscalls.SETUID_CHMOD[sc.name]] & (syscalls.S_ISUID | syscalls.S_ISGID):
                return errno.EPERM
        elif sc.name in syscalls.XATTR_SET or sc.name in syscalls.XATTR_READ:
            # (a recording stops on XATTR_READ only where its Nix refuses them)
            return errno.ENOTSUP
        return 0

    def _on_syscall_exit(self, t):
        if t.pending is None:
            self._resume(t.pid)
            return
        sc, ev = t.pending
        t.pending = None
        op, rval, is_err = linux.get_syscall_info(t.pid)
        if t.forced_errno:
            rval, is_err = -t.forced_errno, 1
            linux.set_return(t.pid, rval)
            t.forced_errno = 0
            self.refused += 1
        set_result(ev, rval, is_err)
        if (ev.errno == "ENOENT" and ev.path) or sc.name in ("wait4", "fchdir") \
                or sc.i_fds is not None:
            # These look at the stopped process (its root, memory or cwd).
            self._finish(t, sc, ev)
            self._resume(t.pid)
        else:
            # The rest is bookkeeping: done while the process runs on.
            self._resume(t.pid)
            self._finish(t, sc, ev)
        self.emit(ev)

    def _take_records(self, records):
        """The C loop's records -> events, in stop order (_sync).

        The recorder's hottest Python (~180k records on GNU hello): names
        are looked up once per batch."""
        tracees, by_nr, shown = self.tracees, syscalls.BY_NR, self.ran
        for pid, nr, flags, raw, t_ns, args, rval, status in records:
            t = tracees.get(pid)
            if t is None:
                continue
            if nr >= fastpath.NR_FORK:
                self._take_event(t, nr, args, rval, t_ns)
                continue
            sc = by_nr[nr]
            ev = self.decoder.entry(t, sc, args, raw if sc.i_path is not None else False,
                                    t_ns / 1e9)
            if flags & fastpath.F_RESULT:
                set_result(ev, rval, flags & fastpath.F_ERR)
            if flags & fastpath.F_PREDICTED:
                self.predictor.answered += 1
            elif sc.name == "wait4":
                ev.args.pop("wstatus_addr", None)
                if ev.errno is None and ev.result and ev.result > 0:
                    self._waited(ev, status if flags & fastpath.F_STATUS else None)
            elif flags & fastpath.F_HELD:
                # Something is at the missing path (fastpath.c): explained
                # here while the process is still stopped; _sync resumes it.
                self._finish(t, sc, ev)
                self._held_pids.append(pid)
            shown(ev)

    def _take_event(self, t, nr, args, rval, t_ns):
        """A C record of a process event -> what this loop does for one."""
        now = int((t_ns / 1e9 - self.t0) * 1_000_000)
        if nr == fastpath.NR_FORK:
            child_pid, nspid, tgid, event = args[:4]
            self._forked(t, event, child_pid, nspid, tgid or None, now)
        elif nr == fastpath.NR_EXIT:
            self._on_exit(t, rval, now, seen_by_c=True)
        elif nr == fastpath.NR_SIGNAL:
            self._signalled(t, args[0], now)
        elif nr == fastpath.NR_EXEC_DONE:
            self._exec_done(t)

    def _on_exec_done(self, t):
        """PTRACE_EVENT_EXEC: the exec succeeded; the new program runs next."""
        self._exec_done(t)
        # Resume with CONT: the exec's own exit stop is not needed any more.
        self._resume(t.pid)

    def _exec_done(self, t):
        if t.pending is not None and t.pending[1].kind == "exec":
            ev = t.pending[1]
            t.pending = None
            ev.result = 0
            t.info.argv = ev.args.get("argv", [])
            t.info.exe = ev.path
            if not t.info.first_seq:
                t.info.first_seq = -1     # set by the session from the seq
            self.current = os.path.basename(t.info.argv[0]) if t.info.argv else ev.path
            self.emit(ev)

    # --- after the call --------------------------------------------------------------------------
    def _finish(self, t, sc, ev):
        """What a finished call changes in the tracer's view of the process."""
        addr = ev.args.pop("wstatus_addr", None)
        fds_addr = ev.args.pop("fds_addr", None)
        if ev.errno == "ENOENT" and ev.path:
            self._explain_enoent(t, ev)
        if ev.errno is not None:
            return
        if sc.name == "chdir":
            t.cwd = ev.path
        elif sc.name == "fchdir":
            t.cwd = self._cwd(t)
        elif sc.name == "wait4" and ev.result and ev.result > 0:
            self._decode_wait(t, ev, addr)
        elif fds_addr is not None:
            fd_pair(t.pid, ev, fds_addr)

    def _explain_enoent(self, t, ev):
        """Why a path is "missing" when something is there (explain.py)."""
        explain.enoent(self._root(t), ev, self._absent, self.predictor)

    def _root(self, t):
        return explain.root_of(self.predictor, t.pid)

    def _cwd(self, t):
        try:
            return os.readlink(f"/proc/{t.pid}/cwd")
        except OSError:
            return t.cwd

    def _decode_wait(self, t, ev, addr):
        st = None
        if addr:
            raw = linux.read_mem(t.pid, addr, 4)
            if len(raw) == 4:
                st = int.from_bytes(raw, "little")
        self._waited(ev, st)

    def _waited(self, ev, st):
        """A wait4 that reaped a child; st: the status word it left, if read."""
        # Reaped: the pid is free to be reused, and the map stays as small as
        # the number of processes not yet waited for.
        child = self.by_nspid.pop(ev.result, None)
        if child:
            ev.args["child"] = child
        if st is not None:
            if os.WIFEXITED(st):
                ev.args["status"] = os.WEXITSTATUS(st)
            elif os.WIFSIGNALED(st):
                ev.args["signal"] = signame(os.WTERMSIG(st))


class _Frozen(Exception):
    """Unwinds from a stop handler to run() when a `before` hook froze the build."""
