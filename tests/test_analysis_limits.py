"""`why` on builds the recorder killed for a limit (kind `limit`) and on refused
kill/ptrace calls (kind `process`), on small synthetic traces; `deps` lists the
refused calls. tests/test_analysis_hostile.py checks the same on real recordings."""

from test_analysis_synth import BB, Synth
from test_analysis_rootcause import kinds, top

from nixrec.analysis.limits import which
from nixrec.analysis.render.text import deps_text, why_text


def killed(reason):
    return {"exit_status": 1, "exit_signal": "SIGKILL", "killed": reason}


def hanging_build():
    """make -> cc1 stuck; everything SIGKILLed at once, nobody waited."""
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/make", ["make", "check"])
    t.spawn("1.1", "1.1.1", BB + "/bin/sh", ["sh", "-c", "./test-server"])
    t.connect("1.1.1", "1.1.1.1:80")                     # tried the network, then hung
    t.spawn("1.1", "1.1.2", BB + "/bin/sleep", ["sleep", "1000"])
    t.stat("1.1.2", "/etc/busybox.conf", errno="ENOENT")
    t.exit("1.1.2", None, "SIGKILL")
    t.exit("1.1.1", None, "SIGKILL")
    t.exit("1.1", None, "SIGKILL")
    t.exit("1", None, "SIGKILL")
    return t


def test_which_limit_names_nix_setting():
    assert which("timed out after 2 seconds") == ("timeout", "timeout")
    assert which("timed out after 1 seconds of silence") == ("max-silent-time", "silence")
    assert which("killed after writing more than 10 bytes of log output") == \
        ("max-build-log-size", "log-size")
    assert which("killed after running more than 200 processes at once") == \
        (None, "processes")
    assert which("killed when it closed its standard output and error (as Nix does)") \
        == (None, "closed-output")


def test_timeout_is_the_cause_and_the_running_process_ends_the_chain():
    rep = hanging_build().why(summary=killed("timed out after 2 seconds"))
    assert rep["killed"] == "timed out after 2 seconds"
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.1", "1.1.2"]
    c = top(rep)
    assert (c["kind"], c["proc"], c["setting"], c["signal"]) == \
        ("limit", "1.1.2", "timeout", "SIGKILL")
    assert c["limit"] == "timed out after 2 seconds"
    assert "timed out after 2 seconds" in c["summary"] and "sleep (1.1.2)" in c["summary"]
    assert "`timeout`" in c["hint"] and "network" in c["hint"]
    # The SIGKILLs are the limit's, not separate `signal` causes; the network
    # attempt is still there, after it.
    assert "signal" not in kinds(rep) and "network" in kinds(rep)
    assert "build failed (SIGKILL: timed out after 2 seconds)" in why_text(rep)


def test_silence_and_log_size_name_their_settings():
    rep = hanging_build().why(summary=killed("timed out after 1 seconds of silence"))
    assert (top(rep)["kind"], top(rep)["setting"]) == ("limit", "max-silent-time")
    assert "max-silent-time" in top(rep)["hint"]
    rep = hanging_build().why(
        summary=killed("killed after writing more than 1000 bytes of log output"))
    assert (top(rep)["kind"], top(rep)["setting"]) == ("limit", "max-build-log-size")
    assert "max-build-log-size" in top(rep)["hint"]


def test_too_many_processes_blames_the_process_that_forked_last():
    t = Synth()
    for i in range(1, 6):
        t.spawn("1", f"1.{i}", BB + "/bin/sleep", ["sleep", "600"])
    t.stat("1.3", "/etc/busybox.conf", errno="ENOENT")   # a child active last
    for i in range(1, 6):
        t.exit(f"1.{i}", None, "SIGKILL")
    t.exit("1", None, "SIGKILL")
    rep = t.why(summary=killed("killed after running more than 4 processes at once"))
    assert [e["proc"] for e in rep["failure_chain"]] == ["1"]
    c = top(rep)
    assert (c["kind"], c["proc"], c.get("setting")) == ("limit", "1", None)
    assert "fork bomb" in c["hint"]


def test_closed_output_says_what_nix_does():
    t = Synth()
    t.err("1", "closing the log\n", fd=1)
    t.open("1", "/dev/null", write=True)
    t.exit("1", None, "SIGKILL")
    rep = t.why(summary=killed(
        "killed when it closed its standard output and error (as Nix does)"))
    c = top(rep)
    assert (c["kind"], c["proc"]) == ("limit", "1")
    assert "exec >/dev/null" in c["hint"]


def test_a_process_that_exited_before_the_kill_is_not_the_running_one():
    t = hanging_build()
    t.events = t.events[:-4]                       # drop the kills...
    t.exit("1.1.2", 0)                             # ...sleep had ended normally
    t.wait("1.1", "1.1.2", 0)
    t.exit("1.1.1", None, "SIGKILL")
    t.exit("1.1", None, "SIGKILL")
    t.exit("1", None, "SIGKILL")
    rep = t.why(summary=killed("timed out after 2 seconds"))
    # make's wait is its last event: make was the one running (waiting).
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.1"]
    assert top(rep)["kind"] == "limit"


def test_sigkill_without_a_limit_is_still_a_signal():
    rep = hanging_build().why(summary={"exit_status": 1, "exit_signal": "SIGKILL"})
    assert top(rep)["kind"] == "signal" and rep["killed"] is None


# -- kill and ptrace of processes the build does not have ------------------------------

def ptrace_build(last_errno="EPERM"):
    t = Synth()
    t.sys("1", "kill", errno="ESRCH", target_pid=4242, signal="SIGTERM")
    t.err("1", "sh: can't kill pid 4242: No such process\n")
    t.spawn("1", "1.1", BB + "/bin/ls", ["ls", "/proc/4242"])
    t.stat("1.1", "/proc/4242", errno="ENOENT")
    t.err("1.1", "ls: /proc/4242: No such file or directory\n")
    t.finish("1.1", 1)
    t.spawn("1", "1.2", "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-escape",
            ["escape", "ptrace", "1"])
    t.sys("1.2", "ptrace", errno=last_errno, flags=16, target_pid=1)
    t.err("1.2", "escape: ptrace attach: Operation not permitted\n", fd=1)
    t.finish("1.2", 1)
    t.exit("1", 1)
    return t


def test_refused_ptrace_as_the_origins_last_failure_is_the_cause():
    rep = ptrace_build().why()
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.2"]
    c = top(rep)
    assert (c["kind"], c["syscall"], c["target_pid"], c["errno"]) == \
        ("process", "ptrace", 1, "EPERM")
    assert "ptrace" in c["summary"] and "process 1" in c["summary"]
    assert "PID namespace" in c["hint"]
    assert "event" in c["evidence"][0] and "pid 1" in c["evidence"][0]


def test_ls_of_a_missing_proc_path_is_not_a_missing_command():
    # "ls: /proc/4242: No such file" names a path; a missing command is named bare.
    assert "missing-executable" not in kinds(ptrace_build().why())


def test_refused_kill_is_the_cause_when_the_origin_gives_up_on_it():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/kill", ["kill", "-TERM", "4242"])
    t.sys("1.1", "kill", errno="ESRCH", target_pid=4242, signal="SIGTERM")
    t.err("1.1", "kill: can't kill pid 4242: No such process\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert (c["kind"], c["target_pid"], c["signal"], c["errno"]) == \
        ("process", 4242, "SIGTERM", "ESRCH")
    assert "PID namespace" in c["summary"]


def test_a_refused_kill_followed_by_another_failure_is_not_the_cause():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/sh", ["sh", "-c", "kill $p || true; cat x"])
    t.sys("1.1", "kill", errno="ESRCH", target_pid=4242, signal="SIGTERM")
    t.open("1.1", "/build/x", errno="ENOENT")
    t.err("1.1", "cat: can't open 'x': No such file or directory\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    rep = t.why()
    assert "process" not in kinds(rep)
    assert top(rep)["path"] == "/build/x"


def test_deps_lists_refused_signals_and_ptrace():
    t = ptrace_build()
    t.sys("1", "kill", target_pid=2, signal="SIGTERM")      # its own child: fine
    rep = t.deps()
    procs = [g for g in rep["undeclared"] if g["category"] == "process"]
    assert [(g["target_pid"], g["access"], g["errno"]) for g in procs] == \
        [(4242, "signal", "ESRCH"), (1, "ptrace", "EPERM")]
    assert procs[0]["signal"] == "SIGTERM"
    text = deps_text(rep)
    assert "Other processes" in text and "pid 4242 (SIGTERM)  signal refused ESRCH" in text
