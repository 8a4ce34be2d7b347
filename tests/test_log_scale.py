"""Logs at scale (issue 23): a line without a newline costs linear time.

Progress bars redraw one line with \\r tens of thousands of times; `why` and
`report` joined every write to the line so far and split it again, quadratic
in the line: 80,000 redraws took `why` 153 s. Here: the line assembly's
semantics (loglines.py), its cost compared at two sizes (8x the writes must
cost about 8x the time, not 64x), its memory (a line keeps a bounded head and
tail), and a real recorded build of 20,000 redraws through `why` and `report`.
The full-size builds (80,000 redraws, 2 GiB of stdout) are bench/log_scale.py's.
"""

import time

import pytest

from nixrec.analysis import loglines
from nixrec.analysis.facts import collect
from nixrec.analysis.loglines import HEAD, TAIL, LineSplitter
from nixrec.recorder.tracefile.model import Event

from nixfix import instantiate, run_nixrec


def feed_all(writes, keep=200, proc="1"):
    sp = LineSplitter(keep)
    out = []
    for w in writes:
        out += sp.feed(proc, w)
    return out, sp.flush().get(proc)


def test_a_redrawn_line_is_its_last_state():
    lines, rest = feed_all([b"\rget 1/3", b"\rget 2/3", b"\rget 3/3", b"\n", b"\rnext 1"])
    assert lines == ["get 3/3"] and rest == "next 1"
    # CR LF ends a line (a \r then \n, split across writes); \r\r\n too.
    assert feed_all([b"done\r", b"\n", b"two\r\r\n"])[0] == ["done", "two"]
    # A redraw inside one write, and one across writes.
    assert feed_all([b"a 10%\ra 50%", b"\ra 100%\n"])[0] == ["a 100%"]
    assert feed_all([b"old text\r", b"new\n"])[0] == ["new"]


def test_lines_across_writes_colours_and_blanks():
    lines, rest = feed_all([b"fatal er", b"ror: zlib.h: No such", b" file\n\n  \nnext\npart"])
    assert lines == ["fatal error: zlib.h: No such file", "next"] and rest == "part"
    assert feed_all([b"\x1b[01;31merror:\x1b[0m bad\n"])[0] == ["error: bad"]


def test_one_write_gives_only_the_last_lines_kept():
    data = b"".join(b"line %d\n" % i for i in range(1000))
    lines, _ = feed_all([b"first ", data], keep=3)
    assert lines == ["line 997", "line 998", "line 999"]
    # When the walk back reaches the first line, it is joined to the earlier write.
    assert feed_all([b"first ", b"half\nsecond\n"], keep=3)[0] == ["first half", "second"]


def test_a_long_line_keeps_its_head_and_tail():
    writes = [b"error: start "] + [b"x" * 4096] * 2000 + [b" the end\n"]
    (line,), _ = feed_all(writes)
    assert line.startswith("error: start xxx") and line.endswith("xxx the end")
    assert loglines.CUT in line and len(line) <= HEAD + TAIL + len(loglines.CUT)
    sp = LineSplitter(10)
    for _ in range(5000):
        sp.feed("1", b"y" * 1000)
    pending = sp._pending["1"]
    assert len(pending.head) <= HEAD and len(pending.tail) <= TAIL


def progress_events(n):
    """A builder that redraws a progress line n times, then fails saying why."""
    evs = [Event("exec", "1", pid=1, syscall="execve", path="/bin/sh",
                 args={"argv": ["sh", "-c", "fetch"]}, seq=1, time=1)]
    for i in range(n):
        evs.append(Event("output", "1", pid=1, syscall="write", result=40,
                         args={"fd": 1, "data": b"\rdownloading [%-20s] %d/%d" % (b"#" * 20, i, n)},
                         seq=len(evs) + 1, time=len(evs) + 1))
    evs.append(Event("output", "1", pid=1, syscall="write", result=30,
                     args={"fd": 2, "data": b"\nerror: checksum mismatch\n"},
                     seq=len(evs) + 1, time=len(evs) + 1))
    evs.append(Event("exit", "1", pid=1, result=1, args={"status": 1},
                     seq=len(evs) + 1, time=len(evs) + 1))
    return evs


def collect_seconds(events, rounds=3):
    best = None
    for _ in range(rounds):
        t0 = time.perf_counter()
        facts = collect({"plan": {}}, {}, iter(events))
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, facts


def test_why_reads_a_redrawn_line_in_linear_time():
    # 40,000 redraws: the old assembly copied the line so far on every write,
    # ~80 GB of copying here (minutes); linear, 8x the writes cost ~8x the time.
    small, big = progress_events(5000), progress_events(40000)
    t_small, _ = collect_seconds(small)
    t_big, facts = collect_seconds(big)
    assert t_big / t_small < 24, (t_small, t_big)       # quadratic would be ~64
    lines = [line for _, line in facts.stderr["1"]]
    assert lines == ["downloading [####################] 39999/40000",
                     "error: checksum mismatch"]


@pytest.mark.e2e
def test_a_recorded_progress_bar_through_why_and_report(tmp_path):
    drv = instantiate("logscale.nix", "progressSmall")         # 20,000 redraws
    trace = tmp_path / "progress.nixrec"
    assert run_nixrec("record", drv, "-o", trace, "-q", timeout=300).returncode == 1
    text = run_nixrec("why", trace).stdout.decode()
    # The line as the terminal last showed it, and the error after it.
    assert "stderr of 1: downloading [####################] 19999/20000\n" in text
    assert "error: checksum mismatch after 20000 updates" in text
    assert "19998/20000" not in text and "\\r" not in text and "\r" not in text
    page = tmp_path / "r.html"
    assert run_nixrec("report", trace, "-o", page).returncode == 0
    html = page.read_text()
    assert "19999/20000" in html and "19998/20000" not in html


def test_one_pass_feeds_every_analysis_the_same_events():
    from nixrec.analysis.onepass import one_pass
    reads = []

    def events():
        for i in range(10000):
            reads.append(i)
            yield i

    def first_ten(evs):             # stops early: the others still get everything
        return [e for _, e in zip(range(10), evs)]

    total, ten, count = one_pass(events(), sum, first_ten, lambda evs: sum(1 for _ in evs))
    assert (total, ten, count) == (sum(range(10000)), list(range(10)), 10000)
    assert len(reads) == 10000                  # read once

    def broken(evs):
        next(iter(evs))
        raise ValueError("analysis failed")
    with pytest.raises(ValueError, match="analysis failed"):
        one_pass(iter(range(5000)), sum, broken)
