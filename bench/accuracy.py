"""How often `nixrec why` names the labelled cause first, and how long it takes.

    .venv/bin/python bench/accuracy.py [--set synthetic|real-world|issue21]
                                       [--hello] [--only ATTR ...] [--workdir DIR]

Three labelled corpora, kept apart: the synthetic one (fixtures/failing:
busybox builds, one sandbox-only shape each), the real-world one
(fixtures/realworld: real tools and upstream sources, the host's tools exposed
with extra-sandbox-paths) and issue 21's cases of fixtures/realworld (labels
with "set": "issue21", written and scored before the mechanisms they test).
For each it records every fixture of labels.json (with its record_args), runs
`nixrec why --json` on each trace and prints one row per fixture: the expected
kind and key fields, what `why` put first, whether that is a top-1 hit, the
rank of the label among the first three causes, and the wall time of `nixrec
why` (the console script, as a user runs it). Then per corpus the top-1 and
top-3 accuracy (hits/total) and the median and max `why` time, and the slowest
`why` of all with its fixture.

When `nixrec why --help` lists --verify, also `why --verify --json` on each
issue-21 trace: per case, each verified candidate's change and outcome, and
whether the labelled cause was marked `fixed`; otherwise a line saying that
verify is not available.

With --hello, or when /tmp/hello.nixrec exists already, also the time of
`nixrec why` on the GNU hello trace (fixtures/hello.nix -A hello, recorded with
--extra-sandbox-paths "/usr /bin /lib /lib64" when missing: about a minute),
a real C build of ~100k events.

A benchmark, not a test (style.md §9): tests/test_failing_corpus.py asserts
the labels; this prints numbers. Exit 0 when everything ran, 1 when something
could not (a fixture that would not record, a `why` that failed).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAILING = os.path.join(REPO, "fixtures", "failing")
REALWORLD = os.path.join(REPO, "fixtures", "realworld")
# (name, folder, the labels' "set"): a label without "set" is in the corpus
# of its folder; issue 21's new cases are scored apart from the older ones.
CORPORA = (("synthetic", FAILING, None), ("real-world", REALWORLD, None),
           ("issue21", REALWORLD, "issue21"))
NIXREC = os.path.join(os.path.dirname(sys.executable), "nixrec")
RECORD_KEYS = ("record_args", "requires", "host_links", "log", "set")
HELLO_TRACE = "/tmp/hello.nixrec"
HELLO_PATHS = "/usr /bin /lib /lib64"


def env():
    e = dict(os.environ)
    if os.geteuid() == 0:
        e["NIX_REMOTE"] = ""          # as root with no daemon, Nix dials the socket
    return e


def run(argv, timeout=600):
    return subprocess.run(argv, capture_output=True, env=env(), timeout=timeout)


def instantiate(nixfile, attr):
    p = run(["nix-instantiate", nixfile, "-A", attr])
    if p.returncode != 0:
        raise RuntimeError(f"nix-instantiate -A {attr}: "
                           f"{p.stderr.decode(errors='replace').strip()[-300:]}")
    return p.stdout.decode().strip().splitlines()[-1]


def host_missing(label):
    """Why this host cannot record the fixture, or None."""
    for path in label.get("requires", ()):
        if not os.path.exists(path):
            return f"no {path}"
    for link, target in label.get("host_links", {}).items():
        if not os.path.islink(link) or os.readlink(link) != target:
            return f"{link} is not a symlink to {target}"
    return None


def timed_why(trace):
    """(report, seconds) of `nixrec why --json TRACE`."""
    t0 = time.perf_counter()
    p = run([NIXREC, "why", str(trace), "--json"])
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"why failed: {p.stderr.decode(errors='replace').strip()}")
    return json.loads(p.stdout), took


# The fields that say what a cause is about, in the order a reader wants them.
WHAT = ("path", "header", "link", "host", "address", "command", "interpreter",
        "signal", "setting", "syscall", "errno")


def top_text(cause):
    """A cause as `kind field=value ...`: its kind and the fields naming its object."""
    return describe({"kind": cause.get("kind"),
                     **{k: cause[k] for k in WHAT if cause.get(k) is not None}})


def describe(fields):
    kind = fields.get("kind")
    rest = " ".join(f"{k}={_short(v)}" for k, v in fields.items() if k != "kind")
    return f"{kind} {rest}".strip()


def _short(v, limit=48):
    s = str(v)
    if s.startswith("/nix/store/") and len(s) > 44:
        s = "/nix/store/" + s[11:18] + "..." + s[43:]
    return s if len(s) <= limit else s[:limit - 3] + "..."


def prepare(corpus, attr):
    """Why the fixture cannot be recorded here (its helper did not build), or None."""
    if corpus == FAILING and attr == "xattr" and not os.path.exists(
            os.path.join(FAILING, ".bin", "setxattr-tool")):
        p = run(["bash", os.path.join(FAILING, "prepare.sh")])
        return p.returncode and "fixtures/failing/prepare.sh failed"
    if corpus == REALWORLD:
        p = run(["bash", os.path.join(REALWORLD, "prepare.sh")])
        return p.returncode and ("fixtures/realworld/prepare.sh failed: " +
                                 p.stderr.decode(errors="replace").strip()[-200:])
    return None


def one_fixture(corpus, attr, label, workdir):
    """A row: {attr, expected, got, hit, rank, why_s, note}."""
    want = {k: v for k, v in label.items() if k not in RECORD_KEYS}
    row = {"attr": attr, "expected": describe(want), "got": "", "hit": None,
           "rank": None, "why_s": None, "note": "", "want": want}
    reason = host_missing(label) or prepare(corpus, attr)
    if reason:
        row["note"] = f"skipped: {reason}"
        return row
    drv = instantiate(os.path.join(corpus, "default.nix"), attr)
    trace = os.path.join(workdir, f"{os.path.basename(corpus)}-{attr}.nixrec")
    rec = run([NIXREC, "record", drv, "-o", trace, "-q", *label.get("record_args", ())],
              timeout=300)
    if rec.returncode != 1:
        row["note"] = f"record exit {rec.returncode}: " \
            f"{rec.stderr.decode(errors='replace').strip()[-200:]}"
        return row
    rep, took = timed_why(trace)
    row["why_s"] = took
    causes = rep.get("root_causes") or []
    top = (causes or [{}])[0]
    got = {k: top.get(k) for k in want}
    row["got"] = top_text(top) if top else "(no cause)"
    row["trace"] = trace
    row["hit"] = got == want
    row["rank"] = next((i + 1 for i, c in enumerate(causes[:3])
                        if {k: c.get(k) for k in want} == want), None)
    if not row["hit"] and top:
        row["note"] = f"top was {describe({'kind': top.get('kind')})} #{top.get('seq')}"
    return row


def print_table(rows):
    heads = ("attr", "expected", "got", "top-1", "top-3", "why (s)")
    cells = [(r["attr"], r["expected"], "(same)" if r["hit"] else (r["got"] or r["note"]),
              "-" if r["hit"] is None else ("hit" if r["hit"] else "MISS"),
              "-" if r["hit"] is None else (f"#{r['rank']}" if r["rank"] else "MISS"),
              "-" if r["why_s"] is None else f"{r['why_s']:.2f}") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def hello_time(record, runs=3):
    """(seconds of each `why` run, event count, status) on the GNU hello trace."""
    if not os.path.exists(HELLO_TRACE):
        if not record:
            return None
        drv = instantiate(os.path.join(REPO, "fixtures", "hello.nix"), "hello")
        print(f"recording GNU hello to {HELLO_TRACE} (about a minute)...", flush=True)
        p = run([NIXREC, "record", drv, "-o", HELLO_TRACE, "-q",
                 "--extra-sandbox-paths", HELLO_PATHS], timeout=1800)
        if p.returncode not in (0, 1):
            raise RuntimeError(f"recording hello: {p.stderr.decode(errors='replace')}")
    times, rep = [], None
    for _ in range(runs):
        rep, took = timed_why(HELLO_TRACE)
        times.append(took)
    from nixrec.recorder.tracefile import open_trace
    with open_trace(HELLO_TRACE) as r:
        events = (r.summary or {}).get("events") or r.last_seq
    return times, events, rep["status"]


def run_corpus(name, corpus, which, only, workdir):
    """(rows, broken) for one corpus (the labels whose "set" is `which`);
    prints progress on stderr."""
    with open(os.path.join(corpus, "labels.json")) as f:
        labels = {a: l for a, l in json.load(f).items() if l.get("set") == which}
    attrs = sorted(labels) if not only else [a for a in only if a in labels]
    rows, broken = [], False
    for attr in attrs:
        try:
            rows.append(one_fixture(corpus, attr, labels[attr], workdir))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            rows.append({"attr": attr, "expected": "", "got": "", "hit": None,
                         "rank": None, "why_s": None, "note": f"error: {e}"})
        broken |= rows[-1]["hit"] is None and not rows[-1]["note"].startswith("skipped")
        print(f"  {name} {attr}: "
              f"{rows[-1]['note'] or ('hit' if rows[-1]['hit'] else 'miss')}",
              file=sys.stderr, flush=True)
    return rows, broken


def print_corpus(name, rows):
    print(f"\n{name} ({len(rows)} fixtures)")
    print_table(rows)
    judged = [r for r in rows if r["hit"] is not None]
    if not judged:
        return
    n = len(judged)
    top1 = sum(1 for r in judged if r["hit"])
    top3 = sum(1 for r in judged if r["rank"])
    times = [r["why_s"] for r in judged]
    skipped = f" ({len(rows) - n} not run)" if n < len(rows) else ""
    print(f"{name} top-1: {top1}/{n} = {top1 / n:.0%}{skipped}")
    print(f"{name} top-3: {top3}/{n} = {top3 / n:.0%}")
    print(f"{name} why time: median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s (nixrec why --json, wall, incl. start-up)")


def verify_available():
    """Whether this nixrec's `why` has --verify (issue 21's experiment)."""
    p = run([NIXREC, "why", "--help"])
    return p.returncode == 0 and b"--verify" in p.stdout


def verify_row(row):
    """(the label's outcome or None, ["change -> outcome (s)", ...], seconds) of
    `nixrec why --verify --json` on the row's trace."""
    t0 = time.perf_counter()
    p = run([NIXREC, "why", row["trace"], "--verify", "--json"], timeout=1800)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"why --verify: {p.stderr.decode(errors='replace').strip()[-200:]}")
    label_outcome, tried = None, []
    for c in json.loads(p.stdout).get("root_causes") or []:
        v = c.get("verification")
        if not v:
            continue
        if not v.get("change"):
            tried.append(f"{describe({'kind': c.get('kind')})}: not tested: {v.get('why')}")
        else:
            tried.append(f"{_short(v['change'], 60)} -> {v.get('outcome')} "
                         f"({v.get('seconds') or 0:.1f} s)")
        if label_outcome is None and {k: c.get(k) for k in row["want"]} == row["want"]:
            label_outcome = v.get("outcome")
    return label_outcome, tried, took


def print_verify(rows):
    """--verify's outcomes per issue-21 case, or why there are none."""
    print("\nissue21 why --verify")
    if not verify_available():
        print("why --verify: not available (`nixrec why --help` does not list it)")
        return False
    broken, fixed, judged = False, 0, 0
    for r in rows:
        if not r.get("trace"):
            continue
        try:
            outcome, tried, took = verify_row(r)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"{r['attr']}: could not run: {e}")
            broken = True
            continue
        judged += 1
        fixed += outcome == "fixed"
        print(f"{r['attr']}: labelled cause {outcome or 'not verified'}; {took:.1f} s")
        for t in tried:
            print(f"    {t}")
    if judged:
        print(f"issue21 verify: labelled cause fixed in {fixed}/{judged}")
    return broken


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=[n for n, _, _ in CORPORA],
                    help="only this corpus (default: all three)")
    ap.add_argument("--hello", action="store_true",
                    help=f"time `why` on GNU hello (record {HELLO_TRACE} if missing)")
    ap.add_argument("--only", nargs="+", metavar="ATTR", help="only these fixtures")
    ap.add_argument("--workdir", help="keep the traces here (default: a temp dir)")
    args = ap.parse_args(argv)

    workdir = args.workdir or tempfile.mkdtemp(prefix="nixrec-accuracy-")
    os.makedirs(workdir, exist_ok=True)
    broken, slowest = False, None
    results = []
    for name, corpus, which in CORPORA:
        if args.set and name != args.set:
            continue
        rows, bad = run_corpus(name, corpus, which, args.only, workdir)
        broken |= bad
        results.append((name, rows))
        for r in rows:
            if r["why_s"] is not None and (slowest is None or r["why_s"] > slowest[2]):
                slowest = (name, r["attr"], r["why_s"])
    for name, rows in results:
        print_corpus(name, rows)
    print()
    if slowest:
        print(f"slowest why: {slowest[2]:.2f} s ({slowest[0]} {slowest[1]})")
    for name, rows in results:
        if name == "issue21":
            broken |= print_verify(rows)
    try:
        hello = hello_time(args.hello)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"GNU hello: could not run: {e}")
        broken = True
    else:
        if hello is None:
            print(f"GNU hello: not timed ({HELLO_TRACE} missing; --hello records it)")
        else:
            ts, events, status = hello
            print(f"GNU hello ({events} events, build {status}): why median "
                  f"{statistics.median(ts):.2f} s, max {max(ts):.2f} s over {len(ts)} runs")
    if not args.workdir:
        print(f"traces: {workdir}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
