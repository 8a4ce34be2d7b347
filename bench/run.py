"""The recorder's cost, side by side with Nix and strace (issue 6). `make bench`.

    .venv/bin/python bench/run.py [--runs 3 | --quick] [--big] [--workdir DIR]

One build, GNU hello 2.10 (fixtures/hello.nix, the host toolchain through
extra-sandbox-paths), done three ways, alternated A B C A B C ... so that
drift of the machine hits all three alike:

  A  nix-build --check              Nix's own sandbox, untraced
  B  strace -f --seccomp-bpf ... nix-build --check   the same, under strace
  C  nixrec record                  nixrec's sandbox under its tracer

nixrec keeps idle CPUs awake while it traces (a CPU latency request of 0 us,
recorder/linux.hold_cpu_latency); three more runs a round show what that
setting does on its own, apart from the targets (which compare with A and B
as a user runs them): D, A with the same request held by this script; E, C
with NIXREC_LOW_LATENCY=0; F, B with the request held (strace gains more
from it than nixrec does: docs/performance.md, sixth pass).

`--check` makes Nix 2.8 rebuild an output that is already valid (and compare
the result with it); without it a second nix-build only prints the path. Nix
refuses --check for an output that is not valid yet, so when the output is
missing it is built once first, untimed. (Deleting the output between runs
with `nix-store --delete` also works, as nothing roots it; --check is used
because it leaves the store as it found it.)

Then, on the last nixrec trace: completeness against strace's log (exec, open,
connect calls of the build's process tree), the reading commands (`nixrec
events --from N` to its first line, `nixrec why`), and the issue's targets
with PASS/FAIL. --big also writes a synthetic 10-million-event trace
(bench/synth.py) and times `nixrec why` on it.

A benchmark, not a test (style.md): it prints numbers, it does not judge the
build by them. Exit 0 when everything ran (whatever the targets say), 1 when
something could not run.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIXREC = os.path.join(ROOT, ".venv", "bin", "nixrec")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
FIXTURE, ATTR = "fixtures/hello.nix", "hello"
SANDBOX_PATHS = "/usr /bin /lib /lib64"
NIX_OPTS = ["--option", "sandbox", "true", "--option", "build-users-group", "",
            "--option", "substituters", "", "--option", "extra-sandbox-paths", SANDBOX_PATHS]
STRACE = ["strace", "-f", "--seccomp-bpf", "-e", "trace=%file,%process,%network"]
# Nix's exit code for a --check whose rebuilt output differs (100 + 4): the
# build still ran in full, so its time counts; the table says so.
NIX_NOT_DETERMINISTIC = 104
BIG_EVENTS = 10_000_000
# Stop `why` on the synthetic trace past this peak RSS: the host must survive
# a reader that does not stream (the target is 1.5 GB; 8 GB says "far over").
BIG_RSS_LIMIT_KIB = 8 << 20

TARGETS = [
    # key, label, limit, how it compares
    ("vs_nix", "nixrec / nix-build wall", 2.0, "<="),
    ("vs_strace", "nixrec / strace wall", 0.35, "<="),
    ("count_diff", "exec/open/connect counts vs strace, worst |diff| %", 1.0, "<="),
    ("bytes_per_event", "trace bytes per event", 8.0, "<="),
    ("size_ratio", "trace size / strace text size", 1 / 15, "<="),
    ("rss_mb", "recorder peak RSS, MB", 200.0, "<="),
    ("replay", "replay to the last call / recording wall", 1.1, "<="),
    ("events_from", "events --from N, first line, worst s", 0.2, "<="),
    ("why", "why on the hello trace, s", 5.0, "<="),
    ("big_why", "why on the 10M-event synthetic trace, s", 60.0, "<="),
    ("big_rss_mb", "why on the 10M-event trace, peak RSS MB", 1536.0, "<="),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class CannotRun(Exception):
    """A prerequisite is missing or a build did not run: no numbers to give."""


def nix_env():
    env = dict(os.environ)
    env["NIX_REMOTE"] = ""       # a local store, no daemon (the brief's host)
    return env


# --- the three ways to build ------------------------------------------------------------


def nix_build_argv():
    return ["nix-build", *NIX_OPTS, FIXTURE, "-A", ATTR, "--no-out-link", "--check"]


def prepare(env):
    for tool in ("nix-build", "nix-instantiate", "nix-store", "strace"):
        if shutil.which(tool) is None:
            raise CannotRun(f"{tool} not found (make setup installs nix-bin and strace)")
    if not os.access(NIXREC, os.X_OK):
        raise CannotRun(f"{NIXREC} not found (run make setup)")
    r = measure.timed(["nix-instantiate", FIXTURE, "-A", ATTR], env=env, cwd=ROOT)
    if r.rc != 0:
        raise CannotRun(f"nix-instantiate failed:\n{r.tail()}")
    drv = r.stdout.decode().strip()
    out = measure.timed(["nix-store", "-q", "--outputs", drv], env=env).stdout.decode().split()
    valid = measure.timed(["nix-store", "--check-validity", *out], env=env).rc == 0
    if not valid:
        log(f"bench: {out[0]} is not built yet; building it once (untimed) so --check can run")
        r = measure.timed(nix_build_argv()[:-1], env=env, cwd=ROOT)
        if r.rc != 0:
            raise CannotRun(f"nix-build failed:\n{r.tail()}")
    return drv


def run_nix(env):
    r = measure.timed(nix_build_argv(), env=env, cwd=ROOT)
    if r.rc not in (0, NIX_NOT_DETERMINISTIC):
        raise CannotRun(f"nix-build --check failed (exit {r.rc}):\n{r.tail()}")
    return r


def run_strace(env, log_path):
    r = measure.timed(STRACE + ["-o", log_path] + nix_build_argv(), env=env, cwd=ROOT)
    if r.rc not in (0, NIX_NOT_DETERMINISTIC):
        raise CannotRun(f"strace nix-build --check failed (exit {r.rc}):\n{r.tail()}")
    return r


def awake(run, *args):
    """run(*args) while this process holds the CPU latency request nixrec
    makes; None when it cannot (not root)."""
    from nixrec.recorder.sandbox import linux
    fd = linux.hold_cpu_latency(0)
    if fd is None:
        return None
    try:
        return run(*args)
    finally:
        os.close(fd)


def run_nixrec(env, trace, low_latency=True):
    argv = [NIXREC, "record", FIXTURE, "-A", ATTR, "--extra-sandbox-paths", SANDBOX_PATHS,
            "-o", trace, "-q"]
    if not low_latency:
        env = dict(env, NIXREC_LOW_LATENCY="0")
    r = measure.timed(argv, env=env, cwd=ROOT, poll_rss=True)
    if r.rc != 0:
        raise CannotRun(f"nixrec record failed (exit {r.rc}):\n{r.tail()}")
    shutil.rmtree(trace + ".d", ignore_errors=True)      # the outputs: not measured
    return r


def last_call(trace):
    """-> seq of the trace's last call event (a stop for --until: exits and
    forks are not calls a replay can stop before)."""
    from nixrec.recorder.tracefile import open_trace
    last = None
    with open_trace(trace) as r:
        for ev in r.events(max(1, r.last_seq - 5000)):
            if ev.kind in ("syscall", "exec", "output"):
                last = ev.seq
    return last


def run_replay(env, trace, seq):
    """`nixrec replay TRACE --until SEQ --exec true`: the sandbox rebuilt, the
    build re-run and frozen before its last call, a command run there."""
    argv = [NIXREC, "replay", trace, "--until", str(seq), "--exec", "true", "-q"]
    r = measure.timed(argv, env=env, cwd=ROOT)
    if r.rc != 0:
        log(f"bench: replay --until {seq} exited {r.rc} (not timed):\n{r.tail()}")
        return None
    # With --exec the exit status is the command's, at the target or at a
    # divergence: only a stop at the target is a replay to the last call.
    if f"stopped before event {seq} ".encode() not in r.stderr or b"diverged" in r.stderr:
        log(f"bench: replay --until {seq} did not reach its stop (not timed):\n{r.tail()}")
        return None
    return r


# --- rounds -------------------------------------------------------------------------


class Round:
    def __init__(self, i):
        self.i = i
        self.nix = self.strace = self.nixrec = None     # measure.Run
        self.nix_awake = self.nixrec_idle = self.strace_awake = None   # D, E, F
        self.replay = None                              # measure.Run, None if it failed
        self.st = None                                  # measure.StraceCounts
        self.tc = None                                  # measure.TraceCounts
        self.trace = None
        self.trace_bytes = None


def do_round(i, n, env, workdir) -> Round:
    rd = Round(i)
    rd.nix = run_nix(env)
    st_log = os.path.join(workdir, f"strace-{i}.txt")
    rd.strace = run_strace(env, st_log)
    rd.st = measure.parse_strace(st_log)
    os.unlink(st_log)           # ~45 MB each; only its counts and size are kept
    rd.trace = os.path.join(workdir, f"hello-{i}.nixrec")
    rd.nixrec = run_nixrec(env, rd.trace)
    rd.trace_bytes = measure.file_size(rd.trace)
    rd.tc = measure.count_trace(rd.trace)
    rd.nix_awake = awake(run_nix, env)
    if rd.tc.summary.get("low_latency"):
        idle = os.path.join(workdir, f"hello-{i}-idle.nixrec")
        rd.nixrec_idle = run_nixrec(env, idle, low_latency=False)
        os.unlink(idle)
    rd.strace_awake = awake(run_strace, env, st_log)
    if os.path.exists(st_log):
        os.unlink(st_log)
    rd.replay = run_replay(env, rd.trace, last_call(rd.trace))
    log(f"bench: round {i}/{n}: nix-build {rd.nix.wall:.1f} s, strace {rd.strace.wall:.1f} s, "
        f"nixrec {rd.nixrec.wall:.1f} s ({rd.tc.events} events, "
        f"peak RSS {(rd.nixrec.peak_rss_kib or 0) / 1024:.0f} MB), replay "
        + (f"{rd.replay.wall:.1f} s" if rd.replay else "failed")
        + (f"; D {rd.nix_awake.wall:.1f} s" if rd.nix_awake else "")
        + (f", E {rd.nixrec_idle.wall:.1f} s" if rd.nixrec_idle else "")
        + (f", F {rd.strace_awake.wall:.1f} s" if rd.strace_awake else ""))
    return rd


# --- reading the trace ------------------------------------------------------------------


def reading_times(trace, last_seq, reps=3):
    """-> ({N: median s to the first line of `events --from N`}, median s of `why`)."""
    froms = {}
    for n in sorted({1, max(1, last_seq // 2), max(1, last_seq)}):
        ts = [measure.first_line_time([NIXREC, "events", trace, "--from", str(n)])
              for _ in range(reps)]
        froms[n] = measure.median(ts)
    whys = []
    for _ in range(reps):
        r = measure.timed([NIXREC, "why", trace])
        whys.append(r.wall if r.rc == 0 else None)
    return froms, measure.median(whys)


def big(workdir, keep, events=BIG_EVENTS):
    """Synthetic trace of `events` events: -> (events, bytes, write s, why Run)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"synth-{events}.nixrec")
    if not (keep and os.path.exists(path)):
        log(f"bench: writing {events:,} synthetic events to {path} (a few minutes)")
        r = measure.timed([PYTHON, os.path.join(ROOT, "bench", "synth.py"), path,
                           "--events", str(events)], cwd=ROOT)
        if r.rc != 0:
            raise CannotRun(f"bench/synth.py failed:\n{r.tail()}")
        log("bench: " + r.stderr.decode().strip())
        write_s = r.wall
    else:
        write_s = None
    from nixrec.recorder.tracefile import open_trace
    with open_trace(path) as t:
        n = t.last_seq
    log("bench: nixrec why on the synthetic trace")
    why = measure.timed([NIXREC, "why", path], poll_rss=True, rss_limit_kib=BIG_RSS_LIMIT_KIB)
    return n, measure.file_size(path), write_s, why


# --- the table ------------------------------------------------------------------------------


def fmt(v, spec=".2f", none="n/a"):
    return none if v is None else format(v, spec)


def paired(rounds, num, den):
    """Median over rounds of num/den measured in the same round."""
    return measure.median([num(r) / den(r) for r in rounds if den(r)])


def report(rounds, froms, why_s, big_res, runs, big_events=BIG_EVENTS):
    last = rounds[-1]
    nix_w = measure.median([r.nix.wall for r in rounds])
    st_w = measure.median([r.strace.wall for r in rounds])
    rec_w = measure.median([r.nixrec.wall for r in rounds])
    rec_in = measure.median([r.tc.summary.get("duration") for r in rounds])
    events = measure.median([r.tc.events for r in rounds])
    stops = measure.median([r.tc.stops for r in rounds])
    stops_c = measure.median([r.tc.summary.get("stops_c") or 0 for r in rounds])
    tbytes = measure.median([r.trace_bytes for r in rounds])
    st_calls = measure.median([sum(r.st.calls.values()) for r in rounds])
    st_bytes = measure.median([r.st.bytes for r in rounds])
    st_total = measure.median([r.st.total_bytes for r in rounds])
    rss = measure.median([r.nixrec.peak_rss_kib for r in rounds])
    cpu_u = measure.median([r.nixrec.cpu[0] for r in rounds if r.nixrec.cpu])
    cpu_s = measure.median([r.nixrec.cpu[1] for r in rounds if r.nixrec.cpu])
    vs_nix = paired(rounds, lambda r: r.nixrec.wall, lambda r: r.nix.wall)
    vs_strace = paired(rounds, lambda r: r.nixrec.wall, lambda r: r.strace.wall)
    st_vs_nix = paired(rounds, lambda r: r.strace.wall, lambda r: r.nix.wall)
    size_ratio = paired(rounds, lambda r: r.trace_bytes, lambda r: r.st.bytes)
    bpe = tbytes / events if events else None
    not_det = any(r.nix.rc or r.strace.rc for r in rounds)

    out = []
    p = out.append
    p(f"nixrec bench: GNU hello 2.10 ({FIXTURE} -A {ATTR}), {runs} run(s) of each, "
      "alternated; medians (ratios: median of the per-round ratios)")
    p("")
    p(f"{'':28}{'wall s':>8}{'/nix-build':>11}{'/strace':>9}{'events':>10}"
      f"{'events/s':>10}{'B/event':>9}{'output MB':>11}{'peak RSS':>10}")
    p(f"{'nix-build --check':28}{fmt(nix_w, '.1f'):>8}{'1.00':>11}{'':9}")
    p(f"{'strace -f + nix-build':28}{fmt(st_w, '.1f'):>8}{fmt(st_vs_nix):>11}{'1.00':>9}"
      f"{fmt(st_calls, ',.0f'):>10}{fmt(st_calls / st_w if st_w else None, ',.0f'):>10}"
      f"{fmt(st_bytes / st_calls if st_calls else None, '.1f'):>9}"
      f"{fmt(st_bytes / 1e6, '.1f'):>11}{'':>10}")
    p(f"{'nixrec record':28}{fmt(rec_w, '.1f'):>8}{fmt(vs_nix):>11}{fmt(vs_strace):>9}"
      f"{fmt(events, ',.0f'):>10}{fmt(events / rec_w if rec_w else None, ',.0f'):>10}"
      f"{fmt(bpe, '.2f'):>9}{fmt(tbytes / 1e6, '.2f'):>11}"
      f"{fmt(rss / 1024 if rss else None, '.0f') + ' MB':>10}")
    p("")
    p(f"  strace row: calls the build's process tree made, and its share of strace's text "
      f"({fmt(st_bytes / 1e6, '.1f')} of {fmt(st_total / 1e6, '.1f')} MB; the rest is "
      "nix-build itself)")
    p(f"  nixrec: {fmt(rec_in, '.1f')} s of the wall time is the traced build "
      f"(summary 'duration'), the rest instantiation, closure hashing and setup; "
      f"{fmt(stops, ',.0f')} tracer stops = {fmt(stops / events if events else None)} per "
      f"event, {fmt(stops / rec_in if rec_in else None, ',.0f')} per second, "
      f"{fmt(stops_c, ',.0f')} of them handled by the C loop (recorder/trace/fastpath.c)")
    p(f"  nixrec's own process (tracer + writer, not the build): CPU user "
      f"{fmt(cpu_u, '.1f')} s + sys {fmt(cpu_s, '.1f')} s = "
      f"{fmt(1e6 * (cpu_u + cpu_s) / stops if cpu_u is not None and stops else None, '.0f')}"
      " us per stop; peak RSS is its VmHWM")
    p(f"  trace / strace text of the build: {fmt(size_ratio, '.4f')} "
      f"(1/{fmt(1 / size_ratio if size_ratio else None, '.0f')})")
    held = [r for r in rounds if r.tc.summary.get("low_latency")]
    p(f"  CPUs kept awake while nixrec traces (CPU latency request 0 us): "
      f"{len(held)}/{len(rounds)} recordings held it")
    awake = [r for r in rounds if r.nix_awake]
    if awake:
        p(f"    D nix-build --check with the same request held: "
          f"{fmt(measure.median([r.nix_awake.wall for r in awake]), '.1f')} s; nixrec / it "
          f"{fmt(paired(awake, lambda r: r.nixrec.wall, lambda r: r.nix_awake.wall))}")
    idle = [r for r in rounds if r.nixrec_idle]
    if idle:
        p(f"    E nixrec record without it (NIXREC_LOW_LATENCY=0): "
          f"{fmt(measure.median([r.nixrec_idle.wall for r in idle]), '.1f')} s = "
          f"{fmt(paired(idle, lambda r: r.nixrec_idle.wall, lambda r: r.nix.wall))} x nix-build,"
          f" {fmt(paired(idle, lambda r: r.nixrec_idle.wall, lambda r: r.strace.wall), '.3f')}"
          " x strace")
    st_awake = [r for r in rounds if r.strace_awake]
    if st_awake:
        vs_awake = paired(st_awake, lambda r: r.nixrec.wall, lambda r: r.strace_awake.wall)
        p(f"    F strace -f + nix-build with the same request held: "
          f"{fmt(measure.median([r.strace_awake.wall for r in st_awake]), '.1f')} s; nixrec / "
          f"it {fmt(vs_awake, '.3f')} (the targets compare with strace as a user runs it, B)")
    if not_det:
        p("  note: nix-build --check reported a differing output in some run "
          f"(exit {NIX_NOT_DETERMINISTIC}); the build ran in full, its time counts")
    p("")

    p(f"completeness, round {last.i} (same round, builder's process tree only)")
    p(f"  {'':10}{'nixrec':>10}{'strace':>10}{'diff %':>9}")
    worst = 0.0
    for r in rounds:
        for g in measure.GROUPS:
            d = measure.pct_diff(r.tc.groups[g], r.st.groups[g])
            if d is not None:
                worst = max(worst, abs(d))
    for g, names in measure.GROUPS.items():
        d = measure.pct_diff(last.tc.groups[g], last.st.groups[g])
        p(f"  {g:10}{last.tc.groups[g]:>10,}{last.st.groups[g]:>10,}{fmt(d, '+.2f'):>9}"
          f"   ({'/'.join(names)})")
    p(f"  processes {last.tc.processes:>10,}{last.st.pids:>10,}"
      f"{fmt(measure.pct_diff(last.tc.processes, last.st.pids), '+.2f'):>9}"
      "   (tree paths vs pids seen, threads included)")
    p(f"  worst |diff| over all {len(rounds)} round(s): {worst:.2f} %")
    p("")

    p(f"reading the trace of round {last.i} ({last.tc.events:,} events; median of 3)")
    for n, t in froms.items():
        p(f"  nixrec events --from {n:<10} first line after {fmt(t, '.3f')} s")
    p(f"  nixrec why                      {fmt(why_s, '.2f')} s")
    replayed = [r for r in rounds if r.replay]
    rp_ratio = paired(replayed, lambda r: r.replay.wall, lambda r: r.nixrec.wall) \
        if replayed else None
    p("")
    p(f"replay (each round, after its recording): nixrec replay TRACE --until <last call> "
      f"--exec true: {len(replayed)}/{len(rounds)} reached the stop; median "
      f"{fmt(measure.median([r.replay.wall for r in replayed]) if replayed else None, '.1f')} s"
      f" = {fmt(rp_ratio)} x the recording's wall")
    measured = {
        "replay": rp_ratio if len(replayed) == len(rounds) else None,
        "vs_nix": vs_nix, "vs_strace": vs_strace, "count_diff": worst,
        "bytes_per_event": bpe, "size_ratio": size_ratio,
        "rss_mb": rss / 1024 if rss else None,
        "events_from": max((t for t in froms.values() if t is not None), default=None),
        "why": why_s,
    }
    if big_res:
        n, size, write_s, why = big_res
        p("")
        p(f"synthetic trace (bench/synth.py): {n:,} events, {size / 1e6:.1f} MB "
          f"({size / n:.2f} B/event)" + (f", written in {write_s:.0f} s" if write_s else ""))
        killed = " (stopped at the RSS limit)" if why.killed else ""
        p(f"  nixrec why: {why.wall:.1f} s, peak RSS {fmt((why.peak_rss_kib or 0) / 1024, '.0f')}"
          f" MB, exit {why.rc}{killed}")
        ok = why.rc == 0 and not why.killed
        if big_events != BIG_EVENTS:
            p(f"  (not the target's {BIG_EVENTS:,} events: no verdict)")
        else:
            measured["big_why"] = why.wall if ok else None
            measured["big_rss_mb"] = why.peak_rss_kib / 1024 if why.peak_rss_kib else None
            if why.killed:
                measured["big_why"] = float("inf")
    p("")

    p("targets (issue 6)")
    for key, label, limit, _ in TARGETS:
        if key not in measured:
            continue
        v = measured[key]
        verdict = "n/a" if v is None else ("PASS" if v <= limit else "FAIL")
        lim = f"1/{1 / limit:.0f}" if key == "size_ratio" else f"{limit:g}"
        val = (f"1/{1 / v:.0f}" if key == "size_ratio" and v else fmt(v, ".3g"))
        p(f"  {label:52} <= {lim:>6}   measured {val:>8}   {verdict}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="rounds of A B C (default 3)")
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--big", action="store_true",
                    help="also time `nixrec why` on a synthetic 10M-event trace (minutes)")
    ap.add_argument("--big-events", type=int, default=BIG_EVENTS, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help="keep traces here (default: a temporary directory, "
                                      "removed at the end)")
    a = ap.parse_args(argv)
    runs = 1 if a.quick else max(1, a.runs)
    os.chdir(ROOT)
    env = nix_env()
    workdir = a.workdir or tempfile.mkdtemp(prefix="nixrec-bench-")
    os.makedirs(workdir, exist_ok=True)
    t0 = time.monotonic()
    try:
        prepare(env)
        rounds = [do_round(i + 1, runs, env, workdir) for i in range(runs)]
        last = rounds[-1]
        froms, why_s = reading_times(last.trace, last.tc.events)
        big_res = big(workdir, bool(a.workdir), a.big_events) if a.big else None
    except CannotRun as e:
        log(f"bench: could not run: {e}")
        return 1
    finally:
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(rounds, froms, why_s, big_res, runs, a.big_events))
    log(f"bench: done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
