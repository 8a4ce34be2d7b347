"""A long recording (issue 7, "Scale"): record fixtures/hostile's longRun build
(10 minutes by default) and report the recorder's peak RSS over time, the
trace size and that the trace reads back. A benchmark, not a test: it takes as
long as the build.

    .venv/bin/python bench/long_build.py [--seconds 600]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIXREC = os.path.join(REPO, ".venv", "bin", "nixrec")


def vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    args = ap.parse_args()
    env = dict(os.environ, NIX_REMOTE="")
    expr = f"(import {REPO}/fixtures/hostile/default.nix {{}}).longRun {{ seconds = {args.seconds}; }}"
    drv = subprocess.run(["nix-instantiate", "-E", expr], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    out = tempfile.mkdtemp(prefix="nixrec-long-")
    trace = os.path.join(out, "long.nixrec")
    t0 = time.monotonic()
    p = subprocess.Popen([NIXREC, "record", drv, "-o", trace, "-q"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = []
    while p.poll() is None:
        hwm = vm_hwm_kb(p.pid)
        if hwm:
            samples.append((time.monotonic() - t0, hwm))
        time.sleep(5)
    err = p.stderr.read().decode(errors="replace")
    print(f"record exit {p.returncode} after {time.monotonic() - t0:.0f} s")
    print(err.strip())
    for t, kb in samples[:: max(1, len(samples) // 10)]:
        print(f"  t={t:6.0f} s  recorder peak RSS {kb / 1024:6.1f} MB")
    print(f"trace {os.path.getsize(trace) / 1024:.0f} KiB")
    ev = subprocess.run([NIXREC, "events", trace, "--syscall", "exit"], capture_output=True)
    why = subprocess.run([NIXREC, "why", trace], capture_output=True)
    print(f"events read back: exit {ev.returncode}, {ev.stdout.count(b'exited')} exits; "
          f"why: exit {why.returncode}: {why.stdout.decode().splitlines()[0]}")
    return 0 if p.returncode == 0 and ev.returncode == 0 and why.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
