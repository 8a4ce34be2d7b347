"""A recording without its end gets no verdict (issue 23): kill -9 of the
recorder, a full disk, a trace cut after its header, Ctrl-C or SIGTERM while
building or while checking the outputs. Synthetic traces (Synth) fed to
`why`'s analysis, its text and the report's verdict."""

from nixrec.analysis.render.text import why_text
from test_analysis_synth import BB, Synth

CUT = ["recording interrupted after event 9"]


def interrupted(during="building", by="SIGINT", exit_status=1, signal="SIGKILL"):
    return {"exit_status": exit_status, "exit_signal": signal, "interrupted": True,
            "interrupted_by": by, "interrupted_while": during, "killed": None}


def a_test_fails_then_the_build_goes_on():
    """A probe's child fails (exit 2, as a configure test does), the build goes on."""
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/sh", ["sh", "./configure"])
    t.spawn("1.1", "1.1.1", BB + "/bin/cat", ["cat", "/usr/include/zlib.h"])
    t.open("1.1.1", "/usr/include/zlib.h", errno="ENOENT")
    t.err("1.1.1", "cat: can't open '/usr/include/zlib.h': No such file or directory\n")
    t.finish("1.1.1", 2)
    t.spawn("1.1", "1.1.2", BB + "/bin/sleep", ["sleep", "100"])
    return t


def test_no_end_recorded_is_incomplete_never_succeeded():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/sleep", ["sleep", "100"])
    rep = t.why(problems=CUT, summary=None)
    assert rep["status"] == "incomplete"
    assert rep["incomplete"]["reason"].startswith("no end of the build was recorded "
                                                  "(recording interrupted after event 9")
    assert rep["incomplete"]["recorded"]["processes"] == 2
    assert rep["incomplete"]["recorded"]["running"] == 2
    text = why_text(rep)
    assert "succeeded" not in text
    assert text.splitlines()[:3] == [
        "note: partial trace: recording interrupted after event 9",
        "incomplete: " + rep["incomplete"]["reason"] + ": no verdict on the build",
        f"recorded: {rep['incomplete']['recorded']['events']} events of 2 processes, "
        "2 still running at the end; the last event was of sleep (1.1)"]
    assert "no failure was recorded before the end" in text


def test_a_builder_that_exited_zero_without_a_summary_is_incomplete():
    # Killed while checking the outputs: Nix's checks may still have failed it.
    t = Synth()
    t.exit("1", 0)
    rep = t.why(problems=CUT, summary=None)
    assert rep["status"] == "incomplete" and "succeeded" not in why_text(rep)


def test_header_only_trace():
    t = Synth()
    t.events = []
    rep = t.why(problems=["recording interrupted after event 0"], summary=None)
    assert rep["status"] == "incomplete"
    assert why_text(rep).splitlines()[2] == "recorded: no event (the build had not started)"


def test_last_failure_seen_is_explained():
    t = a_test_fails_then_the_build_goes_on()
    rep = t.why(problems=CUT, summary=None)
    assert rep["status"] == "incomplete"
    assert [e["proc"] for e in rep["failure_chain"]] == ["1.1.1"]
    assert rep["root_causes"][0]["path"] == "/usr/include/zlib.h"
    text = why_text(rep)
    assert "last failure seen: cat (1.1.1, 2)" in text
    assert "root cause:" in text


def test_interrupt_while_building_blames_nobody():
    """Ctrl-C: every process SIGKILLed, the builder too: no failure chain of
    kills, no limit, no "closed its standard output"."""
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/sleep", ["sleep", "100"])
    t.finish("1.1", None, signal="SIGKILL")
    t.exit("1", None, signal="SIGKILL")
    summary = interrupted()
    summary["killed"] = "killed when it closed its standard output and error (as Nix does)"
    rep = t.why(summary=summary)           # (as traces before issue 23 said it)
    assert rep["status"] == "incomplete" and rep["killed"] is None
    assert rep["failure_chain"] == [] and rep["root_causes"] == []
    text = why_text(rep)
    assert text.startswith("incomplete: the recording was interrupted (SIGINT) while "
                           "building: no verdict on the build\n"), text
    assert "closed its standard output" not in text and "SIGKILL" not in text


def test_interrupt_while_checking_the_outputs():
    t = Synth()
    t.exit("1", 0)
    rep = t.why(summary=interrupted("checking the outputs", "SIGTERM", 1, None))
    assert rep["status"] == "incomplete"
    assert rep["incomplete"]["reason"] == \
        "the recording was interrupted (SIGTERM) while checking the outputs"


def test_a_failure_recorded_before_the_interrupt_is_the_truth():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/cat", ["cat", "/usr/include/zlib.h"])
    t.open("1.1", "/usr/include/zlib.h", errno="ENOENT")
    t.finish("1.1", 1)
    t.exit("1", 1)
    rep = t.why(summary=interrupted("checking the outputs", "SIGINT", 1, None))
    assert rep["status"] == "failed"
    text = why_text(rep)
    assert text.splitlines()[:2] == [
        "build failed (exit code 1)",
        "note: incomplete recording: the recording was interrupted (SIGINT) while "
        "checking the outputs"]


def test_report_verdict_is_incomplete():
    from nixrec.analysis.render.html import report_html
    from nixrec.analysis.report import report_data
    t = a_test_fails_then_the_build_goes_on()
    rep = t.why(problems=CUT, summary=None)
    page = report_html(report_data(t.header, {}, list(t.events), rep,
                                   t.deps(), trace_path="t.nixrec"))
    assert '<div class="verdict incomplete">incomplete: no end of the build was recorded' \
        in page
    assert "the build succeeded" not in page and "below, the last failure seen" in page
