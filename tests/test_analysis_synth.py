"""Synth: a tiny builder of synthetic traces for the analysis tests (ReproZip style).

It numbers events itself and keeps the header the tracer would write, so each
test reads like the build it stands for. Also a few tests of Synth itself.
"""

from nixrec.recorder.tracefile.model import Event

BB = "/nix/store/ap5lw0pk87zllpr8psdiqgxx50yqpp1h-busybox"
OUT = "/nix/store/0000000000000000000000000000000a-demo"

O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC = 0, 1, 0o100, 0o1000


class Synth:
    def __init__(self, inputs=(BB,), sandbox_paths=(), argv=("sh", "-c", "build")):
        self.header = {
            "drv_path": "/nix/store/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-demo.drv",
            "plan": {"store_dir": "/nix/store", "build_dir": "/build",
                     "home": "/homeless-shelter", "inputs": list(inputs),
                     "sandbox_paths": list(sandbox_paths), "outputs": {"out": OUT},
                     "network": False, "no_sandbox": False},
            "closure": [{"path": p, "hash": "sha256:0"} for p in inputs],
        }
        self.events = []
        self.exec("1", BB + "/bin/sh", list(argv))

    def ev(self, kind, proc, **kw):
        e = Event(kind, proc, seq=len(self.events) + 1, **kw)
        if e.errno and e.result is None:
            e.result = -1
        self.events.append(e)
        return e

    # processes
    def fork(self, parent, child):
        return self.ev("fork", parent, syscall="clone", result=100 + len(self.events),
                       args={"child": child, "thread": False})

    def exec(self, proc, path, argv, errno=None):
        return self.ev("exec", proc, syscall="execve", path=path, errno=errno,
                       result=-1 if errno else 0, args={"argv": list(argv)})

    def spawn(self, parent, child, path, argv):
        self.fork(parent, child)
        return self.exec(child, path, argv)

    def exit(self, proc, status=0, signal=None):
        return self.ev("exit", proc, args={"status": status, "signal": signal})

    def wait(self, proc, child, status):
        return self.ev("syscall", proc, syscall="wait4", result=1,
                       args={"child": child, "status": status})

    def finish(self, proc, status, parent=None, signal=None):
        """exit + the parent's wait, as a shell does."""
        self.exit(proc, status, signal)
        parent = parent or proc.rsplit(".", 1)[0]
        return self.wait(parent, proc, 128 + 9 if signal else status)

    # files
    def sys(self, proc, syscall, path=None, errno=None, flags=None, path2=None, **args):
        return self.ev("syscall", proc, syscall=syscall, path=path, path2=path2,
                       flags=flags, errno=errno, result=-1 if errno else 0, args=args)

    def open(self, proc, path, write=False, errno=None):
        flags = O_WRONLY | O_CREAT | O_TRUNC if write else O_RDONLY
        return self.sys(proc, "openat", path, errno=errno, flags=flags)

    def stat(self, proc, path, errno=None):
        return self.sys(proc, "newfstatat", path, errno=errno)

    def connect(self, proc, address, errno="ENETUNREACH", family="AF_INET", dns=None):
        args = {"address": address, "family": family, "fd": 3}
        if dns:
            args["dns"] = dns
        return self.sys(proc, "sendto" if dns else "connect", errno=errno, **args)

    def err(self, proc, text, fd=2):
        return self.ev("output", proc, syscall="write", result=len(text),
                       args={"fd": fd, "data": text.encode()})

    # results
    def why(self, **kw):
        from nixrec.analysis.rootcause import explain
        return explain(self.header, {}, list(self.events), **kw)

    def deps(self):
        from nixrec.analysis.deps import undeclared_accesses
        return undeclared_accesses(self.header, list(self.events))


def test_synth_numbers_events_and_marks_failures():
    t = Synth()
    e = t.open("1", "/build/x", errno="ENOENT")
    assert e.seq == 2 and e.result == -1 and e.failed
    assert [ev.seq for ev in t.events] == [1, 2]


def test_synth_header_has_the_plan_fields_analysis_reads():
    plan = Synth().header["plan"]
    for k in ("store_dir", "build_dir", "home", "inputs", "outputs"):
        assert k in plan
