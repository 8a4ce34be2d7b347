"""How long `nixrec why --verify` takes per cause, against the recording it proves.

    .venv/bin/python bench/verify_time.py [--only ATTR ...] [--max N] [--jobs J]
                                          [--workdir DIR]

Records each case (the demo, and the real-world corpus's cases whose host
files are here: fixtures/realworld/labels.json, with their record_args),
runs `nixrec why --verify --json` on its trace and prints one row per cause
tried: the change, the outcome, the run's seconds, the recording's seconds
(the trace summary's `duration`) and their ratio, which the issue wants at
most 3 for a build recorded in under 60 s. Then the largest ratio.

A benchmark, not a test (style.md §9): tests/test_verify.py asserts the
outcomes; this prints numbers. Exit 0 when everything ran, 1 when something
could not.
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import REALWORLD, NIXREC, REPO, host_missing, instantiate, prepare, run  # noqa: E402
from nixrec.replayer.verify import FLOOR_SECONDS  # noqa: E402

DEMO = os.path.join(REPO, "fixtures", "demo.nix")
DEMO_ARGS = ["--extra-sandbox-paths", "/bin /lib /lib64? /usr/bin /usr/lib /usr/lib64? "
             "/usr/libexec?"]


def cases(only):
    out = [("demo", DEMO, None, DEMO_ARGS)]
    labels = json.load(open(os.path.join(REALWORLD, "labels.json")))
    for attr, label in labels.items():
        if host_missing(label):
            continue
        out.append((attr, os.path.join(REALWORLD, "default.nix"), attr,
                    label.get("record_args", [])))
    return [c for c in out if not only or c[0] in only]


def one(name, nixfile, attr, args, workdir, extra):
    if attr and prepare(REALWORLD, attr):
        return None, "fixtures/realworld/prepare.sh failed"
    drv = instantiate(nixfile, attr) if attr else nixfile
    trace = os.path.join(workdir, f"{name}.nixrec")
    rec = run([NIXREC, "record", drv, "-o", trace, "-q", *args], timeout=600)
    if rec.returncode != 1:
        return None, f"record exit {rec.returncode}"
    p = run([NIXREC, "why", trace, "--verify", "--json", *extra], timeout=1800)
    if p.returncode != 0:
        return None, p.stderr.decode(errors="replace").strip()
    return json.loads(p.stdout), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--max", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    extra = ["--max", str(a.max)] + (["--jobs", str(a.jobs)] if a.jobs else [])
    workdir = a.workdir or tempfile.mkdtemp(prefix="nixrec-bench-verify-")
    failed, worst = 0, (0.0, None)
    print(f"{'case':<20} {'#':>2} {'outcome':<10} {'run s':>7} {'rec s':>7} {'ratio':>6}  change")
    for name, nixfile, attr, args in cases(a.only):
        rep, err = one(name, nixfile, attr, args, workdir, extra)
        if err:
            failed += 1
            print(f"{name:<20} {err}")
            continue
        rec_s = rep["verify"]["recording_seconds"]
        for i, c in enumerate(rep["root_causes"][:a.max], 1):
            v = c.get("verification")
            if not v or not v.get("change"):
                continue
            ratio = v["seconds"] / rec_s if rec_s else float("inf")
            if ratio > worst[0]:
                worst = (ratio, f"{name} #{i}")
            print(f"{name:<20} {i:>2} {v['outcome']:<10} {v['seconds']:>7.2f} {rec_s:>7.2f} "
                  f"{ratio:>6.2f}  {v['change'][:60]}")
    print(f"largest ratio: {worst[0]:.2f} ({worst[1]}); a run's seconds include its sandbox's "
          f"setup and teardown, and a run may take {FLOOR_SECONDS:.0f} s whatever the recording "
          "(replayer/verify.py FLOOR_SECONDS)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
