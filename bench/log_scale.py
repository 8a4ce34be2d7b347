"""Logs at scale (issue 23): `why` and `report` on builds whose log is big.

Records fixtures/logscale.nix's two builds with `nixrec record`:
  progress    a progress bar redrawn N times with \\r, no newline (default 80,000)
  bigStdout   BYTES of stdout without a newline (default 2 GiB; minutes to record)
then times `nixrec why` and `nixrec report` on each trace, with their peak RSS,
beside the floor: one pass of the trace reader over the same events. Targets:
why <= 5 s, report <= 10 s, memory bounded (docs/performance.md, "Logs at scale").

    make bench-logs                      # or:
    .venv/bin/python bench/log_scale.py [--bytes N] [--updates N] [--dir DIR]

With --dir, traces already there (progress.nixrec, big.nixrec) are reused.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIXREC = os.path.join(REPO, ".venv", "bin", "nixrec")
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
TARGETS = {"why": 5.0, "report": 10.0}
# One pass of the reader over every event: what any verb pays at least.
READ_ONLY = ("import sys\nfrom nixrec.recorder.tracefile import open_trace\n"
             "r = open_trace(sys.argv[1])\nn = sum(1 for _ in r.events())\nprint(n)\n")


def timed(argv, env):
    """(exit status, seconds, peak RSS in MiB, stdout, CPU seconds) of one
    child, by wait4 (CPU: user + system; on a shared machine the wall clock
    waits for other work too)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return (p.returncode, time.monotonic() - t0, usage.ru_maxrss / 1024, out,
            usage.ru_utime + usage.ru_stime)


def instantiate(expr, env):
    return subprocess.run(["nix-instantiate", "-E", expr], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def record(name, expr, trace, env):
    if os.path.exists(trace):
        print(f"{name}: reusing {trace}")
        return
    drv = instantiate(expr, env)
    rc, secs, rss, _, _ = timed([NIXREC, "record", drv, "-o", trace, "-q"], env)
    print(f"{name}: recorded in {secs:.1f} s (exit {rc}), recorder peak RSS {rss:.0f} MiB, "
          f"trace {os.path.getsize(trace) / 2**20:.1f} MiB")


def measure(name, trace, env, workdir):
    rc, read_s, read_rss, out, read_cpu = timed([PYTHON, "-c", READ_ONLY, trace], env)
    events = out.decode().strip()
    print(f"{name}: {events} events; reading them once: {read_s:.2f} s (CPU {read_cpu:.2f} s), "
          f"{read_rss:.0f} MiB")
    ok = True
    for verb, argv in (("why", [NIXREC, "why", trace]),
                       ("report", [NIXREC, "report", trace, "-o",
                                   os.path.join(workdir, f"{name}.html")])):
        rc, secs, rss, out, cpu = timed(argv, env)
        met = secs <= TARGETS[verb]
        ok = ok and met and rc in (0, 1)
        print(f"  {verb:6} {secs:6.2f} s  CPU {cpu:5.2f} s ({cpu / max(read_cpu, 1e-3):.1f}x the read)  "
              f"peak RSS {rss:5.0f} MiB  exit {rc}  target <= {TARGETS[verb]:.0f} s: "
              f"{'met' if met else 'MISSED'}")
        if verb == "why":
            last = [l for l in out.decode(errors="replace").splitlines() if "stderr of" in l]
            print(f"         quotes: {last[-1].strip() if last else '(no log line)'}")
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bytes", type=int, default=2 << 30, help="bigStdout's bytes (2 GiB)")
    ap.add_argument("--updates", type=int, default=80000, help="progress's redraws")
    ap.add_argument("--dir", help="where the traces are kept (default: a temporary dir)")
    args = ap.parse_args(argv)
    env = dict(os.environ, NIX_REMOTE="")
    workdir = args.dir or tempfile.mkdtemp(prefix="nixrec-logscale-")
    os.makedirs(workdir, exist_ok=True)
    fixture = os.path.join(REPO, "fixtures", "logscale.nix")
    builds = [("progress", f"(import {fixture}).progress {{ n = {args.updates}; }}"),
              ("big", f"(import {fixture}).bigStdout {{ bytes = {args.bytes}; }}")]
    ok = True
    for name, expr in builds:
        trace = os.path.join(workdir, f"{name}.nixrec")
        record(name, expr, trace, env)
        ok = measure(name, trace, env, workdir) and ok
    print(f"traces in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
