"""Recorder memory against the number of processes (issue 6: peak RSS <= 200 MB
whatever the build). Records fixtures/hostile's manyExecs build, N processes
each exec'ing a program with a 20-word command line, for several N, and prints
the recorder's peak RSS (VmHWM, polled) for each, side by side. A benchmark,
not a test: it prints, it asserts nothing.

    .venv/bin/python bench/many_processes.py [--n 5000,20000,60000]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIXREC = os.path.join(REPO, ".venv", "bin", "nixrec")


def instantiate(n, env):
    expr = f"(import {REPO}/fixtures/hostile/default.nix {{}}).manyExecs {{ n = {n}; }}"
    return subprocess.run(["nix-instantiate", "-E", expr], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="5000,20000,60000",
                    help="process counts, comma-separated (default 5000,20000,60000)")
    a = ap.parse_args()
    env = dict(os.environ, NIX_REMOTE="")
    out = tempfile.mkdtemp(prefix="nixrec-many-")
    print(f"{'processes':>10}{'wall s':>9}{'peak RSS MB':>13}{'trace KiB':>11}{'events':>10}")
    for n in [int(x) for x in a.n.split(",")]:
        drv = instantiate(n, env)
        trace = os.path.join(out, f"many-{n}.nixrec")
        r = measure.timed([NIXREC, "record", drv, "-o", trace, "-q"], env=env, poll_rss=True)
        tc = measure.count_trace(trace) if r.rc == 0 else None
        print(f"{tc.processes if tc else n:>10,}{r.wall:>9.1f}"
              f"{(r.peak_rss_kib or 0) / 1024:>13.1f}"
              f"{(measure.file_size(trace) or 0) / 1024:>11.0f}{tc.events if tc else 0:>10,}"
              + ("" if r.rc == 0 else f"   record exited {r.rc}: {r.tail()}"), flush=True)
        if os.path.exists(trace):
            os.unlink(trace)
        shutil.rmtree(trace + ".d", ignore_errors=True)
    os.rmdir(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
