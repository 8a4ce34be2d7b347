"""Hostile text never reaches the terminal (issue 23).

fixtures/hostiletext.nix is a real build whose paths, argv and log lines carry
escape sequences: `/usr/include/ESC]0;PWNED BEL zlib.h` (sets a terminal's
title), ESC[2J (clears it), \\r, BEL, a bidi override, and an argv with a
newline that spells a line of `why`'s own. Every verb runs on its trace and
none of their stdout or stderr may hold a raw control character: only
nixrec's own newlines and tabs. The build log that `record` and `replay`
stream keeps its \\r and colours (SGR), nothing else.
"""

import re

import pytest

from nixfix import FIXTURES, _nix, require_busybox, require_nix, run_nixrec

# C0 but \\n and \\t, DEL, C1 (as UTF-8), bidi embeddings/overrides/isolates.
RAW = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xaa-\xae]"
                 rb"|\xe2\x81[\xa6-\xa9]")
SGR = re.compile(rb"\x1b\[[0-9;]*m")


def raw_controls(data: bytes, log=False) -> list:
    if log:         # the streamed build log: its colours and \r stay
        data = SGR.sub(b"", data).replace(b"\r", b"")
    return RAW.findall(data)


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    require_nix()
    require_busybox()
    d = tmp_path_factory.mktemp("hostile-text")
    out = {}
    for seed in ("a", "b"):
        drv = _nix(["nix-instantiate", str(FIXTURES / "hostiletext.nix"),
                    "--argstr", "seed", seed]).decode().strip().splitlines()[-1]
        trace = d / f"{seed}.nixrec"
        p = run_nixrec("record", drv, "-o", trace, timeout=120)    # the log streamed too
        assert p.returncode == 1, p.stderr
        out[seed] = (trace, p)
    return d, out


@pytest.mark.e2e
def test_no_verb_prints_the_builds_control_characters(traces):
    d, out = traces
    trace, rec = out["a"]
    # The build did write them: the trace holds the raw bytes.
    assert b"\x1b]0;PWNED\x07" in run_nixrec("events", trace, "--json").stdout.replace(
        b"\\u001b", b"\x1b").replace(b"\\u0007", b"\x07")
    assert raw_controls(rec.stdout) == []
    assert raw_controls(rec.stderr, log=True) == []
    assert b"\\x1b]0;PWNED\\x07" in rec.stderr              # shown, escaped, in the log
    runs = {" ".join(map(str, v)): run_nixrec(*v) for v in [
        ("why", trace), ("why", trace, "--json"), ("deps", trace), ("deps", trace, "--json"),
        ("deps", trace, "--markdown"), ("phases", trace), ("phases", trace, "--json"),
        ("events", trace), ("events", trace, "--json"), ("events", trace, "--failed"),
        ("report", trace, "-o", d / "r.html"), ("graph", trace, "-o", d / "g.dot"),
        ("diff", trace, out["b"][0]), ("diff", trace, out["b"][0], "--json")]}
    for name, p in runs.items():
        assert p.returncode in (0, 1), (name, p.stderr)
        assert raw_controls(p.stdout) == [], name
        assert raw_controls(p.stderr) == [], name
    why = runs[f"why {trace}"].stdout.decode()
    # The cause names the path with its escapes shown, the newline in the
    # argv is \n: no line of why's own is forged.
    assert "/usr/include/\\x1b]0;PWNED\\x07zlib.h" in why
    assert not any(line.startswith("running in 1: forged") for line in why.splitlines())
    assert "forged a" in why and "x\\nrunning in 1: forged a" in why
    deps = runs[f"deps {trace}"].stdout.decode()
    assert "/etc/\\x1b[2Jhost" in deps


@pytest.mark.e2e
def test_replays_messages_and_log_are_escaped(traces):
    _, out = traces
    trace, _ = out["a"]
    p = run_nixrec("replay", trace, "--until-fail", "--exec", "true", timeout=120)
    assert raw_controls(p.stdout, log=True) == [] and raw_controls(p.stderr, log=True) == []
    err = p.stderr.decode()
    assert "nixrec: the failing command (process 1.7): " in err
    assert "\\x1b]0;PWNED\\x07zlib.h" in err and "x\\nrunning in 1: forged a" in err


def test_escape_and_the_log_filter():
    from nixrec.recorder.tracefile.printable import LogFilter, escape, escape_all, json_text
    assert escape("/usr/include/\x1b]0;PWNED\x07zlib.h") == "/usr/include/\\x1b]0;PWNED\\x07zlib.h"
    assert escape("a\nb\tc\r\x9b\u202e\udcff") == "a\\nb\\tc\\r\\x9b\\u202e\\xff"
    assert escape("line\n", keep="\n") == "line\n" and escape("plain é ✓") == "plain é ✓"
    assert escape_all({"k": ["\x1b[2J", 3, None]}) == {"k": ["\\x1b[2J", 3, None]}
    assert json_text('"\x9b\u2066"') == '"\\u009b\\u2066"'
    got = []
    f = LogFilter(got.append)
    for chunk in (b"\x1b[1;31mred\x1b[0m \x1b]0;T\x07\r\n", b"x\x1b[3", b"2mgreen\x1b", b"[2J\x08\n"):
        f(chunk)
    assert b"".join(got) == (b"\x1b[1;31mred\x1b[0m \\x1b]0;T\\x07\r\n"
                             b"x\x1b[32mgreen\\x1b[2J\\x08\n")


def test_a_fork_bombs_failure_chain_is_cut_to_a_readable_line():
    from nixrec.analysis.render.text import why_text
    chain = [{"proc": "1" + ".1" * i, "argv": ["sh"], "exit_code": 1} for i in range(2000)]
    rep = {"status": "failed", "exit_code": 1, "failure_chain": chain, "root_causes": [],
           "replay": "nixrec replay T --until 9"}
    line = next(l for l in why_text(rep).splitlines() if l.startswith("failure chain:"))
    assert len(line) < 400 and "... 1994 more ..." in line
    assert line.endswith("sh (1.1.1.1...1.1.1.1, depth 2000, 1)")
