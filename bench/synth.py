"""A synthetic trace of a big C build, for timing the readers at scale.

    .venv/bin/python bench/synth.py OUT.nixrec [--events 10000000] [--jobs 4] [--seed 1]

It writes through the real TraceWriter, so the file is what the recorder would
write for the same events. The events copy the shape of the hello recording
(bench/run.py's build): `make -j` runs many `gcc -c` at once; each gcc probes
the dynamic loader's directories, realpath()s itself, vforks cc1, which
realpath()s every include directory and then, for each #include, misses in the
directories before the one holding the header (readlink + .gch stat + openat,
all ENOENT): the repeated include-path misses that make a real trace big.
Units run interleaved as with make -j. The build fails at the end the common
way (a header missing everywhere), so `nixrec why` has work to do.
"""

import argparse
import os
import random
import sys
import time

from nixrec.recorder.tracefile import Event, TraceWriter

GCCLIB = "/usr/lib/gcc/x86_64-linux-gnu/12"
INCLUDE_DIRS = ["/build/src", GCCLIB + "/include", "/usr/local/include",
                "/usr/include/x86_64-linux-gnu", "/usr/include"]
LIB_DIRS = ["glibc-hwcaps/x86-64-v4", "glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2",
            "tls/x86_64/x86_64", "tls/x86_64", "tls", "x86_64/x86_64", "x86_64"]
HEADERS = ([f"sys/h{i}.h" for i in range(60)] + [f"h{i}.h" for i in range(140)]
           + [f"local{i}.h" for i in range(40)])
O_RDONLY, O_WRONLY_CREAT_TRUNC, O_CLOEXEC = 0, 0o1101, 0o2000000
OUT = "/nix/store/0000000000000000000000000000000b-big-1.0"


def header() -> dict:
    argv = ["sh", "-e", "-c", "cd src && make -j4"]
    return {
        "nixrec_version": "synth", "drv_path": "/nix/store/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-big-1.0.drv",
        "drv_text": "", "closure": [], "start_time": 0,
        "host": {"kernel": "synth", "arch": "x86_64", "system": "Linux"},
        "plan": {"name": "big-1.0", "builder": "/bin/sh", "argv": argv, "cwd": "/build",
                 "store_dir": "/nix/store", "build_dir": "/build",
                 "home": "/homeless-shelter", "inputs": [], "network": False,
                 "sandbox_paths": [{"target": p, "source": p, "optional": False}
                                   for p in ("/usr", "/bin", "/lib", "/lib64")],
                 "outputs": {"out": OUT}, "no_sandbox": False, "cores": 4},
    }


class Gen:
    """Hands out pids and times; each unit is a generator of Events."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pid = 1
        self.t = 0

    def ev(self, kind, proc, pid, syscall=None, path=None, result=0, errno=None, **kw):
        self.t += self.rng.randint(2, 40)
        if errno:
            result = -1
        return Event(kind, proc, pid, syscall, path=path, result=result, errno=errno,
                     time=self.t, **kw)

    def spawn(self, parent, ppid, child, path, argv, how="fork"):
        """fork/vfork in the parent, then the child's exec: -> child pid."""
        self.pid += 1
        yield self.ev("fork", parent, ppid, how, result=self.pid,
                      args={"child": child, "thread": False})
        yield self.ev("exec", child, self.pid, "execve", path=path, args={"argv": argv})

    def ldso(self, proc, pid, libs):
        e = self.ev
        yield e("syscall", proc, pid, "access", "/etc/ld.so.preload", errno="ENOENT", flags=4)
        yield e("syscall", proc, pid, "openat", "/etc/ld.so.cache", errno="ENOENT",
                flags=O_CLOEXEC)
        for lib in libs:
            for d in (LIB_DIRS if lib == libs[0] else ()):
                base = "/lib/x86_64-linux-gnu/" + d
                yield e("syscall", proc, pid, "openat", f"{base}/{lib}", errno="ENOENT",
                        flags=O_CLOEXEC)
                yield e("syscall", proc, pid, "newfstatat", base, errno="ENOENT")
            yield e("syscall", proc, pid, "openat", "/lib/x86_64-linux-gnu/" + lib, result=3,
                    flags=O_CLOEXEC)

    def realpath(self, proc, pid, path, last_missing=False):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/" + "/".join(parts[:i])
            miss = last_missing and i == len(parts)
            yield self.ev("syscall", proc, pid, "readlink", p,
                          errno="ENOENT" if miss else "EINVAL")

    def wait_exit(self, parent, ppid, child, cpid, status):
        yield self.ev("exit", child, cpid, result=status, args={"status": status,
                                                                "signal": None})
        yield self.ev("syscall", parent, ppid, "wait4", result=cpid,
                      args={"child": child, "status": status})

    def compile(self, make, mpid, child, n, missing=None):
        """make -> gcc -c fN.c -> cc1, as. `missing`: a header found nowhere."""
        rng, e = self.rng, self.ev
        src = f"/build/src/f{n}.c"
        yield e("syscall", make, mpid, "newfstatat", src)
        gcc_argv = ["gcc", "-c", "-g", "-O2", "-I.", f"f{n}.c", "-o", f"f{n}.o"]
        yield from self.spawn(make, mpid, child, "/usr/bin/gcc", gcc_argv)
        gpid = self.pid
        yield from self.ldso(child, gpid, ["libc.so.6"])
        for _ in range(2):
            yield e("syscall", child, gpid, "access", "/usr/bin/gcc", flags=1)
            yield from self.realpath(child, gpid, "/usr/bin/gcc")
        for d in ("/usr/lib/gcc/x86_64-linux-gnu/12/specs", "/usr/x86_64-linux-gnu/lib/specs",
                  "/usr/lib/gcc/x86_64-linux-gnu/specs"):
            yield e("syscall", child, gpid, "access", d, errno="ENOENT", flags=4)
        tmp = f"/build/cc{rng.randrange(36 ** 6):06x}.s"
        yield e("syscall", child, gpid, "openat", tmp, result=3, flags=0o302)
        cc1 = child + ".1"
        yield from self.spawn(child, gpid, cc1, GCCLIB + "/cc1",
                              [GCCLIB + "/cc1", "-quiet", "-I.", f"f{n}.c", "-o", tmp],
                              how="vfork")
        cpid = self.pid
        yield from self.ldso(cc1, cpid, ["libisl.so.23", "libmpc.so.3", "libmpfr.so.6",
                                          "libgmp.so.10", "libz.so.1", "libc.so.6"])
        for d in INCLUDE_DIRS:
            yield from self.realpath(cc1, cpid, d)
            yield e("syscall", cc1, cpid, "newfstatat", d)
        yield e("syscall", cc1, cpid, "openat", src, result=3, flags=O_RDONLY)
        wanted = rng.sample(HEADERS, rng.randint(15, 45))
        if missing:
            wanted.append(missing)
        for h in wanted:
            home = None if h == missing else (0 if h.startswith("local") else
                                              rng.randint(1, len(INCLUDE_DIRS) - 1))
            for i, d in enumerate(INCLUDE_DIRS):
                p = f"{d}/{h}"
                if i == home:
                    yield e("syscall", cc1, cpid, "openat", p, result=4, flags=O_RDONLY)
                    break
                yield from self.realpath(cc1, cpid, p, last_missing=True)
                yield e("syscall", cc1, cpid, "newfstatat", p + ".gch", errno="ENOENT")
                yield e("syscall", cc1, cpid, "openat", p, errno="ENOENT", flags=O_RDONLY)
        if missing:
            msg = (f"f{n}.c:3:10: fatal error: {missing}: No such file or directory\n"
                   "compilation terminated.\n").encode()
            yield e("output", cc1, cpid, "write", result=len(msg), args={"fd": 2, "data": msg})
            yield from self.wait_exit(child, gpid, cc1, cpid, 1)
            yield e("syscall", child, gpid, "unlink", tmp)
            yield from self.wait_exit(make, mpid, child, gpid, 1)
            return
        yield e("syscall", cc1, cpid, "openat", tmp, result=3, flags=O_WRONLY_CREAT_TRUNC)
        yield from self.wait_exit(child, gpid, cc1, cpid, 0)
        asm = child + ".2"
        yield from self.spawn(child, gpid, asm, "/usr/bin/as", ["as", "-o", f"f{n}.o", tmp],
                              how="vfork")
        apid = self.pid
        yield from self.ldso(asm, apid, ["libopcodes.so", "libbfd.so", "libz.so.1",
                                         "libc.so.6"])
        yield e("syscall", asm, apid, "openat", tmp, result=3, flags=O_RDONLY)
        yield e("syscall", asm, apid, "openat", f"/build/src/f{n}.o", result=3,
                flags=O_WRONLY_CREAT_TRUNC)
        yield from self.wait_exit(child, gpid, asm, apid, 0)
        yield e("syscall", child, gpid, "unlink", tmp)
        yield from self.wait_exit(make, mpid, child, gpid, 0)


def events(target, jobs=4, seed=1):
    """-> Events of a failing `make -jJOBS` build, about `target` of them."""
    g = Gen(seed)
    rng = g.rng
    yield g.ev("exec", "1", 1, "execve", "/bin/sh", args={"argv": header()["plan"]["argv"]})
    yield g.ev("syscall", "1", 1, "chdir", "/build/src")
    yield from g.spawn("1", 1, "1.1", "/usr/bin/make", ["make", "-j4"])
    make, mpid = "1.1", g.pid
    count = 3
    n = 0
    running = []
    while count < target or running:
        while len(running) < jobs and count < target:
            n += 1
            running.append(g.compile(make, mpid, f"1.1.{n}", n))
        k = rng.randrange(len(running))
        for _ in range(rng.randint(1, 24)):
            try:
                ev = next(running[k])
            except StopIteration:
                running.pop(k)
                break
            count += 1
            yield ev
    n += 1
    yield from g.compile(make, mpid, f"1.1.{n}", n, missing="zlib.h")
    msg = f"make: *** [Makefile:4: f{n}.o] Error 1\n".encode()
    yield g.ev("output", make, mpid, "write", result=len(msg), args={"fd": 2, "data": msg})
    yield from g.wait_exit("1", 1, make, mpid, 2)
    yield g.ev("exit", "1", 1, result=2, args={"status": 2, "signal": None})


def write(path, target, jobs=4, seed=1) -> int:
    with TraceWriter(path, header()) as w:
        for ev in events(target, jobs, seed):
            w.append(ev)
        n = w.last_seq
        w.close({"exit_status": 2, "exit_signal": None, "events": n, "synthetic": True})
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    n = write(a.out, a.events, a.jobs, a.seed)
    dt = time.monotonic() - t0
    size = os.path.getsize(a.out)
    print(f"{a.out}: {n} events, {size} bytes ({size / n:.2f} B/event), "
          f"written in {dt:.1f} s ({n / dt:,.0f} events/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
