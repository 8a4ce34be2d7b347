"""Each `why` rule on a small synthetic trace: kinds, order, fields."""

from test_analysis_synth import BB, Synth

from nixrec.analysis.render.text import why_text


def top(rep):
    assert rep["root_causes"], rep
    return rep["root_causes"][0]


def kinds(rep):
    return [c["kind"] for c in rep["root_causes"]]


def shell_noise(t, proc):
    """What a libc and a shell probe on the way: none of it is a cause."""
    t.open(proc, "/usr/lib/locale/locale-archive", errno="ENOENT")
    t.open(proc, "/etc/ld.so.cache", errno="ENOENT")
    t.stat(proc, "/usr/local/bin/gcc", errno="ENOENT")   # `test -x`, PATH probes
    t.stat(proc, "/etc/nsswitch.conf", errno="ENOENT")
    t.connect(proc, "/var/run/nscd/socket", errno="ENOENT", family="AF_UNIX")


def zlib_build():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/make", ["make", "all"])
    shell_noise(t, "1.1")
    t.spawn("1.1", "1.1.1", "/nix/store/cccccccccccccccccccccccccccccccc-gcc/bin/gcc",
            ["gcc", "-c", "x.c"])
    t.spawn("1.1.1", "1.1.1.1", "/nix/store/cccccccccccccccccccccccccccccccc-gcc/cc1",
            ["cc1", "x.c"])
    shell_noise(t, "1.1.1.1")
    t.open("1.1.1.1", "/build/x.c")
    t.stat("1.1.1.1", "/usr/include/stdio.h", errno="ENOENT")   # probe, found below
    t.stat("1.1.1.1", "/nix/store/dddddddddddddddddddddddddddddddd-libc/include/stdio.h")
    t.open("1.1.1.1", "/usr/include/zlib.h", errno="ENOENT")
    t.err("1.1.1.1", "x.c:1:10: fatal error: zlib.h: No such file or directory\n")
    t.finish("1.1.1.1", 1)
    t.finish("1.1.1", 1)
    t.err("1.1", "make: *** [Makefile:3: x.o] Error 1\n")
    t.finish("1.1", 2)
    t.exit("1", 2)
    t.header["plan"]["inputs"] += [
        "/nix/store/cccccccccccccccccccccccccccccccc-gcc",
        "/nix/store/dddddddddddddddddddddddddddddddd-libc"]
    return t


def test_failure_chain_goes_from_builder_to_origin():
    rep = zlib_build().why()
    assert rep["status"] == "failed" and rep["exit_code"] == 2
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.1", "1.1.1", "1.1.1.1"]
    assert rep["failure_chain"][-1]["argv"] == ["cc1", "x.c"]
    assert rep["failure_chain"][1]["exit_code"] == 2


def test_a_pipeline_writer_killed_by_sigpipe_is_not_the_failure_followed():
    # configure: `grep ... | head -1` (grep dies of SIGPIPE), then a compiler
    # check that fails, then the script's own exit 1.
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/sh", ["sh", "./configure"])
    t.spawn("1.1", "1.1.1", BB + "/bin/cc", ["cc", "conftest.c"])
    t.open("1.1.1", "/usr/include/zlib.h", errno="ENOENT")
    t.finish("1.1.1", 1)
    t.spawn("1.1", "1.1.2", BB + "/bin/grep", ["grep", "x", "big.log"])
    t.spawn("1.1", "1.1.3", BB + "/bin/head", ["head", "-1"])
    t.finish("1.1.3", 0)
    t.finish("1.1.2", None, signal="SIGPIPE")
    t.finish("1.1", 1)
    t.exit("1", 1)
    assert [e["proc"] for e in t.why()["failure_chain"]] == ["1", "1.1", "1.1.1"]
    # With only the writer failed (pipefail), it is the one.
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/grep", ["grep", "x", "big.log"])
    t.finish("1.1", None, signal="SIGPIPE")
    t.exit("1", 1)
    assert [e["proc"] for e in t.why()["failure_chain"]] == ["1", "1.1"]


def test_undeclared_host_path_beats_probes_and_noise():
    rep = zlib_build().why()
    c = top(rep)
    assert c["kind"] == "undeclared-host-path"
    assert c["path"] == "/usr/include/zlib.h" and c["proc"] == "1.1.1.1"
    assert c["errno"] == "ENOENT" and c["syscall"] == "openat"
    assert c["argv"] == ["cc1", "x.c"]
    paths = [x.get("path") for x in rep["root_causes"]]
    # A probe that later succeeded on the same name is not listed above it.
    assert "/usr/include/stdio.h" not in paths[:1]
    assert rep["replay"].endswith(f"--until {c['seq']}")
    text = why_text(rep)
    assert "root cause: cc1 (1.1.1.1) could not open /usr/include/zlib.h: ENOENT " \
           "-- not a declared input" in text
    assert "zlib.h: No such file" in text and "replay: nixrec replay" in text


def test_nscd_and_locale_noise_are_never_top():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/false", ["false"])
    shell_noise(t, "1.1")
    t.finish("1.1", 1)
    t.exit("1", 1)
    rep = t.why()
    assert top(rep)["kind"] == "fallback"


def network_build(dns=False):
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/sh", ["sh", "./run-tests"])
    t.spawn("1.1", "1.1.1", BB + "/bin/nc", ["nc", "example.com", "80"])
    shell_noise(t, "1.1.1")
    if dns:
        t.connect("1.1.1", "127.0.0.1:53", errno="ECONNREFUSED", dns="example.com")
        t.err("1.1.1", "nc: bad address 'example.com'\n")
    else:
        t.connect("1.1.1", "1.1.1.1:80")
        t.err("1.1.1", "nc: can't connect to remote host (1.1.1.1): "
                       "Network is unreachable\n")
    t.finish("1.1.1", 1)
    t.finish("1.1", 1)
    t.exit("1", 1)
    return t


def test_network_names_the_address():
    c = top(network_build().why())
    assert c["kind"] == "network" and c["address"] == "1.1.1.1:80"
    assert c["errno"] == "ENETUNREACH" and c["proc"] == "1.1.1"
    assert "fixed-output" in c["hint"]


def test_dns_names_the_host():
    c = top(network_build(dns=True).why())
    assert c["kind"] == "dns" and c["host"] == "example.com"


def test_missing_executable_from_a_shell_stat_search():
    t = Synth()
    t.stat("1", "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-tools/bin/cc", errno="ENOENT")
    t.stat("1", BB + "/bin/cc")          # a probe that succeeds: noise
    t.stat("1", "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-tools/bin/pkg-config",
           errno="ENOENT")
    t.stat("1", BB + "/bin/pkg-config", errno="ENOENT")
    t.err("1", "sh: pkg-config: not found\n")
    t.exit("1", 127)
    t.header["plan"]["inputs"].append("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-tools")
    rep = t.why()
    c = top(rep)
    assert c["kind"] == "missing-executable" and c["command"] == "pkg-config"
    assert c["looked_in"] == sorted([BB + "/bin",
                                     "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-tools/bin"])
    assert all(x.get("command") != "cc" for x in rep["root_causes"])


def test_missing_executable_from_an_execvp_search():
    t = Synth()
    t.fork("1", "1.1")
    for d in ("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-tools/bin", BB + "/bin"):
        t.exec("1.1", d + "/python3", ["python3", "gen.py"], errno="ENOENT")
    t.err("1.1", "make: python3: No such file or directory\n")
    t.finish("1.1", 127)
    t.exit("1", 2)
    c = top(t.why())
    assert c["kind"] == "missing-executable" and c["command"] == "python3"
    assert len(c["looked_in"]) == 2


def test_exec_enoent_of_an_existing_script_is_a_missing_interpreter():
    t = Synth()
    t.open("1", "/build/configure", write=True)
    t.sys("1", "fchmodat", "/build/configure", flags=0o755)
    t.fork("1", "1.1")
    t.exec("1.1", "/build/configure", ["./configure"], errno="ENOENT")
    t.err("1.1", "sh: ./configure: not found\n")
    t.finish("1.1", 127)
    t.exit("1", 127)
    c = top(t.why())
    assert c["kind"] == "missing-interpreter" and c["path"] == "/build/configure"
    assert "interpreter" not in c
    assert "does not show which" in c["summary"]


def test_missing_interpreter_named_from_the_store_or_the_trace():
    script = BB + "/libexec/run.sh"
    t = Synth()
    t.fork("1", "1.1")
    t.exec("1.1", script, [script], errno="ENOENT")
    t.finish("1.1", 127)
    t.exit("1", 1)
    c = top(t.why(peek=lambda p: "/usr/bin/env" if p == script else None))
    assert c["kind"] == "missing-interpreter" and c["interpreter"] == "/usr/bin/env"
    t2 = Synth()
    t2.fork("1", "1.1")
    t2.open("1.1", "/bin/bash", errno="ENOENT")
    t2.exec("1.1", script, [script], errno="ENOENT")
    t2.finish("1.1", 127)
    t2.exit("1", 1)
    assert top(t2.why())["interpreter"] == "/bin/bash"


def test_undeclared_store_path_names_the_store_path():
    other = "/nix/store/ffffffffffffffffffffffffffffffff-other"
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/cat", ["cat", other + "/share/data"])
    t.open("1.1", other + "/share/data", errno="ENOENT")
    t.err("1.1", f"cat: can't open '{other}/share/data': No such file or directory\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert c["kind"] == "undeclared-store-path" and c["store_path"] == other
    assert c["path"] == other + "/share/data"


def test_home_write_wins_over_write_denied():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/mkdir", ["mkdir", "-p", "/homeless-shelter/.cache"])
    t.sys("1.1", "mkdir", "/homeless-shelter", errno="EACCES", flags=0o777)
    t.err("1.1", "mkdir: can't create directory '/homeless-shelter': Permission denied\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    rep = t.why()
    assert kinds(rep)[0] == "home" and top(rep)["path"] == "/homeless-shelter"
    assert "writableTmpDirAsHomeHook" in top(rep)["hint"]


def test_write_denied_and_write_outside():
    t = Synth()
    t.open("1", "/build/src/config.mk", write=True, errno="EACCES")
    t.err("1", "sh: can't create src/config.mk: Permission denied\n")
    t.exit("1", 1)
    assert top(t.why())["kind"] == "write-denied"
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/cp", ["cp", "tool", "/usr/local/bin/tool"])
    t.open("1.1", "/usr/local/bin/tool", write=True, errno="ENOENT")
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert c["kind"] == "write-outside" and c["path"] == "/usr/local/bin/tool"


def test_seccomp_setuid_chmod_and_xattr():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/chmod", ["chmod", "u+s", "/nix/store/o/bin/su"])
    t.sys("1.1", "fchmodat", "/build/out/bin/su", errno="EPERM", flags=0o4755)
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert c["kind"] == "seccomp" and c["syscall"] == "fchmodat"
    t = Synth()
    t.sys("1", "setxattr", "/build/f", errno="ENOTSUP", name="user.x")
    t.exit("1", 1)
    assert top(t.why())["kind"] == "seccomp"
    # A chmod without setuid bits refused EPERM is not seccomp.
    t = Synth()
    t.sys("1", "fchmodat", "/build/f", errno="EPERM", flags=0o755)
    t.exit("1", 1)
    assert top(t.why())["kind"] != "seccomp"


def test_race_between_two_background_jobs():
    t = Synth()
    t.fork("1", "1.1")                              # ( sleep 1; echo > gen.h ) &
    t.spawn("1.1", "1.1.1", BB + "/bin/sleep", ["sleep", "1"])
    t.spawn("1", "1.2", BB + "/bin/cat", ["cat", "gen.h"])
    t.open("1.2", "/build/gen.h", errno="ENOENT")
    t.err("1.2", "cat: can't open 'gen.h': No such file or directory\n")
    t.exit("1.2", 1)
    t.finish("1.1.1", 0)
    t.open("1.1", "/build/gen.h", write=True)
    t.exit("1.1", 0)
    t.wait("1", "1.1", 0)
    t.wait("1", "1.2", 1)
    t.exit("1", 1)
    rep = t.why()
    c = top(rep)
    assert c["kind"] == "race" and c["path"] == "/build/gen.h"
    assert c["proc"] == "1.2" and c["creator"] == "1.1"
    assert c["created_seq"] > c["seq"]
    assert "enableParallelBuilding" in c["hint"]


def test_sequential_create_after_failure_is_not_a_race():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/cat", ["cat", "gen.h"])
    t.open("1.1", "/build/gen.h", errno="ENOENT")
    t.finish("1.1", 1)
    t.spawn("1", "1.2", BB + "/bin/touch", ["touch", "gen.h"])   # forked after
    t.open("1.2", "/build/gen.h", write=True)
    t.finish("1.2", 0)
    t.exit("1", 1)
    assert "race" not in kinds(t.why())


def test_signal_kill_is_the_cause():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/timeout", ["timeout", "-s", "KILL", "1", "sleep", "5"])
    t.spawn("1.1", "1.1.1", BB + "/bin/sleep", ["sleep", "5"])
    t.stat("1.1.1", "/etc/localtime", errno="ENOENT")
    t.finish("1.1.1", None, signal="SIGKILL")
    t.finish("1.1", 137)
    t.exit("1", 137)
    rep = t.why()
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.1", "1.1.1"]
    c = top(rep)
    assert c["kind"] == "signal" and c["signal"] == "SIGKILL" and c["proc"] == "1.1.1"


def test_symlink_out_of_the_sandbox_names_link_and_target():
    t = Synth()
    t.sys("1", "symlinkat", "/usr/share/dict/words", path2="/build/words",
          target="/usr/share/dict/words")
    t.spawn("1", "1.1", BB + "/bin/wc", ["wc", "-l", "words"])
    t.open("1.1", "/build/words", errno="ENOENT")
    t.err("1.1", "wc: words: No such file or directory\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert c["kind"] == "undeclared-host-path"
    assert c["path"] == "/usr/share/dict/words" and c["link"] == "/build/words"


def test_misleading_missing_file_follows_data_flow_to_the_failed_producer():
    t = Synth()
    t.fork("1", "1.1")
    t.exec("1.1", BB + "/bin/sh", ["sh", "-c", "gen-version --out=version.h"])
    t.stat("1.1", BB + "/bin/gen-version", errno="ENOENT")
    t.err("1.1", "sh: gen-version: not found\n")
    t.finish("1.1", 127)
    t.err("1", "warning: version generation failed, using defaults\n")
    t.spawn("1", "1.2", BB + "/bin/cat", ["cat", "version.h", "main.c"])
    shell_noise(t, "1.2")
    t.open("1.2", "/build/version.h", errno="ENOENT")
    t.err("1.2", "cat: can't open 'version.h': No such file or directory\n")
    t.finish("1.2", 1)
    t.exit("1", 1)
    rep = t.why()
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.2"]
    c = top(rep)
    assert c["kind"] == "missing-executable" and c["command"] == "gen-version"
    assert c["via"] == {"missing": "/build/version.h", "consumer": "1.2",
                        "producer": "1.1"}
    assert "version.h was never made" in c["summary"]
    assert any(x["kind"] == "fallback" and x["path"] == "/build/version.h"
               for x in rep["root_causes"][1:])


def test_fallback_points_at_the_origins_last_failed_call():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/grep", ["grep", "VERSION", "meta.txt"])
    t.open("1.1", "/build/other", errno="ENOENT")
    t.open("1.1", "/build/meta.txt", errno="ENOENT")
    t.err("1.1", "grep: meta.txt: No such file or directory\n")
    t.finish("1.1", 2)
    t.exit("1", 2)
    rep = t.why()
    c = top(rep)
    assert c["kind"] == "fallback" and c["path"] == "/build/meta.txt"
    assert any("grep: meta.txt" in e for e in c["evidence"])
    assert rep["stderr_tail"][-1] == {"proc": "1.1",
                                      "text": "grep: meta.txt: No such file or directory"}


def test_chain_follows_the_last_waited_failure_not_an_ignored_one():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/false", ["false"])       # `false || true`
    t.finish("1.1", 1)
    t.spawn("1", "1.2", BB + "/bin/nc", ["nc", "1.1.1.1", "80"])
    t.connect("1.2", "1.1.1.1:80")
    t.finish("1.2", 1)
    t.exit("1", 1)
    rep = t.why()
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.2"]
    assert top(rep)["kind"] == "network"


def test_network_outside_the_chain_ranks_below_the_origin_failure():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/nc", ["nc", "-z", "1.1.1.1", "80"])  # optional probe
    t.connect("1.1", "1.1.1.1:80")
    t.finish("1.1", 0)
    t.spawn("1", "1.2", BB + "/bin/cat", ["cat", "/usr/include/zlib.h"])
    t.open("1.2", "/usr/include/zlib.h", errno="ENOENT")
    t.err("1.2", "cat: can't open '/usr/include/zlib.h': No such file or directory\n")
    t.finish("1.2", 1)
    t.exit("1", 1)
    assert kinds(t.why())[:2] == ["undeclared-host-path", "network"]


def test_succeeded_build_has_nothing_to_explain():
    t = Synth()
    t.open("1", "/usr/lib/locale/locale-archive", errno="ENOENT")
    t.exit("1", 0)
    rep = t.why()
    assert rep["status"] == "succeeded" and rep["root_causes"] == []
    assert rep["failure_chain"] == [] and rep["exit_code"] == 0
    assert "succeeded" in why_text(rep)


def test_partial_trace_is_said_and_still_analysed():
    t = network_build()
    t.events = t.events[:-3]          # recording stopped before the exits
    rep = t.why(problems=["recording was interrupted after event 12"],
                summary=None)
    # Without the exits the builder has not failed yet: nothing to blame.
    assert rep["partial"] == ["recording was interrupted after event 12"]
    assert "partial trace" in why_text(rep)
    t = network_build()
    rep = t.why(problems=["x"], summary={"exit_status": 1, "exit_signal": None})
    assert top(rep)["kind"] == "network"


def test_json_shape():
    rep = zlib_build().why(trace_path="t.nixrec")
    assert set(rep) >= {"status", "exit_code", "failure_chain", "root_causes",
                        "stderr_tail", "replay"}
    assert rep["replay"].startswith("nixrec replay t.nixrec --until ")
    for e in rep["failure_chain"]:
        assert set(e) >= {"proc", "pid", "argv", "exit_code"}
    for c in rep["root_causes"]:
        assert {"kind", "seq", "proc", "argv", "summary", "hint"} <= set(c)


def test_dns_without_a_decoded_question_guesses_the_host():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/nslookup", ["nslookup", "example.com"])
    t.connect("1.1", "127.0.0.1:53", errno=None)        # UDP connect succeeds
    t.err("1.1", "nslookup: write to '127.0.0.1': Connection refused\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert c["kind"] == "dns" and c["host"] == "example.com"
    assert c["address"] == "127.0.0.1:53"


def test_race_shaped_like_busybox_subshells():
    """`( sleep 1; echo > gen.h ) & ( cat gen.h > main.i ) & wait $a; wait $b`."""
    t = Synth()
    t.fork("1", "1.1")
    t.fork("1.1", "1.1.1")
    t.exec("1.1.1", BB + "/bin/sleep", ["sleep", "1"])
    t.fork("1", "1.2")
    t.open("1.2", "/build/main.i", write=True)
    t.fork("1.2", "1.2.1")
    t.exec("1.2.1", BB + "/bin/cat", ["cat", "gen.h"])
    t.open("1.2.1", "/build/gen.h", errno="ENOENT")
    t.err("1.2.1", "cat: can't open 'gen.h': No such file or directory\n")
    t.finish("1.2.1", 1)
    t.exit("1.2", 1)
    t.finish("1.1.1", 0)
    t.open("1.1", "/build/gen.h", write=True)
    t.exit("1.1", 0)
    t.wait("1", "1.1", 0)
    t.wait("1", "1.2", 1)
    t.exit("1", 1)
    rep = t.why()
    assert [e["proc"] for e in rep["failure_chain"]] == ["1", "1.2", "1.2.1"]
    c = top(rep)
    assert (c["kind"], c["path"], c["creator"]) == ("race", "/build/gen.h", "1.1")


def test_busybox_timeout_kills_the_process_that_execd_the_command():
    t = Synth()
    t.fork("1", "1.1")
    t.exec("1.1", BB + "/bin/timeout", ["timeout", "-s", "KILL", "1", "sleep", "5"])
    t.fork("1.1", "1.1.1")                       # the watcher
    t.exec("1.1", BB + "/bin/sleep", ["sleep", "5"])
    t.sys("1.1.1", "kill", None, pid=1)
    t.exit("1.1.1", 0)
    t.exit("1.1", None, "SIGKILL")
    t.wait("1", "1.1", 137)
    t.err("1", "Killed\n")
    t.exit("1", 137)
    rep = t.why()
    c = top(rep)
    assert (c["kind"], c["signal"], c["proc"]) == ("signal", "SIGKILL", "1.1")
    assert "killed by SIGKILL" in c["summary"]


# -- host toolchains seen from the sandbox (the `make demo` shapes) -----------------

HOST_MOUNTS = [{"target": p, "source": p, "optional": False}
               for p in ("/bin", "/lib", "/lib64", "/usr/bin", "/usr/lib", "/usr/libexec")]
GCC_INC = "/usr/lib/gcc/x86_64-linux-gnu/12/include"
RED = "\x1b[01;31m\x1b[K"
OFF = "\x1b[m\x1b[K"


def host_gcc_build(include_mounted=False):
    """make -> gcc -> cc1 from the host, as fixtures/demo.nix runs them."""
    mounts = HOST_MOUNTS + ([{"target": "/usr/include", "source": "/usr/include",
                              "optional": False}] if include_mounted else [])
    t = Synth(sandbox_paths=mounts)
    t.spawn("1", "1.1", "/usr/bin/make", ["make", "CC=gcc"])
    t.stat("1.1", "/usr/gnu/include", errno="ENOENT")       # make's own include dirs
    t.stat("1.1", "/usr/include", errno="ENOENT")
    t.stat("1.1", "/build/main.o", errno="ENOENT")           # target check
    t.spawn("1.1", "1.1.1", "/usr/bin/gcc", ["gcc", "-c", "main.c"])
    t.sys("1.1.1", "access", "/usr/lib/gcc/x86_64-linux-gnu/12/specs", errno="ENOENT")
    t.spawn("1.1.1", "1.1.1.1", "/usr/lib/gcc/x86_64-linux-gnu/12/cc1", ["cc1", "main.c"])
    t.stat("1.1.1.1", "/etc/busybox.conf", errno="ENOENT")
    t.sys("1.1.1.1", "readlink", "/usr/lib", errno="EINVAL")     # realpath
    t.sys("1.1.1.1", "readlink", "/usr/local", errno="ENOENT")
    t.stat("1.1.1.1", GCC_INC)
    t.stat("1.1.1.1", "/usr/local/include", errno="ENOENT")
    if not include_mounted:
        t.stat("1.1.1.1", "/usr/include/x86_64-linux-gnu", errno="ENOENT")
        t.stat("1.1.1.1", "/usr/include", errno="ENOENT")
    t.stat("1.1.1.1", "/build/main.c.gch", errno="ENOENT")
    t.open("1.1.1.1", "/build/main.c")
    t.open("1.1.1.1", GCC_INC + "/stdc-predef.h", errno="ENOENT")
    t.stat("1.1.1.1", GCC_INC + "/zlib.h.gch", errno="ENOENT")
    t.open("1.1.1.1", GCC_INC + "/zlib.h", errno="ENOENT")
    if include_mounted:
        t.open("1.1.1.1", "/usr/include/zlib.h", errno="ENOENT")
    # Nix gives the builder a pty: gcc colours its messages.
    t.err("1.1.1.1", f"main.c:3:10: {RED}fatal error: {OFF}zlib.h: No such file or "
                     "directory\ncompilation terminated.\n")
    t.finish("1.1.1.1", 1)
    t.finish("1.1.1", 1)
    t.err("1.1", "make: *** [Makefile:9: main.o] Error 1\n")
    t.finish("1.1", 2)
    t.exit("1", 2)
    return t


def test_include_search_names_the_header_and_the_hidden_include_dir():
    rep = host_gcc_build().why()
    c = top(rep)
    assert c["kind"] == "undeclared-host-path" and c["proc"] == "1.1.1.1"
    assert c["path"] == "/usr/include" and c["header"] == "zlib.h"
    assert c["accessed"] == GCC_INC + "/zlib.h" and c["syscall"] == "openat"
    assert c["looked_in"][0] == "/usr/include"
    assert set(c["looked_in"]) == {"/usr/include", "/usr/local/include",
                                   "/usr/include/x86_64-linux-gnu"}
    assert c["summary"] == "cc1 (1.1.1.1) could not open zlib.h: /usr/include is " \
                           "not in the sandbox -- not a declared input"
    assert any("newfstatat(/usr/include) = -1 ENOENT" in e for e in c["evidence"])
    assert any("fatal error: zlib.h: No such file" in e and "\x1b" not in e
               for e in c["evidence"])
    # Not a PATH search, and none of the probes on the way is a suspect.
    assert kinds(rep) == ["undeclared-host-path"], rep["root_causes"]


def test_include_search_with_every_dir_there_is_a_missing_header():
    c = top(host_gcc_build(include_mounted=True).why())
    assert c["kind"] == "missing-header" and c["header"] == "zlib.h"
    assert c["looked_in"] == ["/usr/include", GCC_INC]
    assert c["summary"] == "cc1 (1.1.1.1) could not find the header zlib.h (looked " \
        f"in /usr/include, {GCC_INC}; not in the sandbox: /usr/local/include)"


def failed_builder(**exec_args):
    t = Synth(sandbox_paths=[m for m in HOST_MOUNTS if m["target"] != "/lib64"])
    t.events = []
    argv = ["sh", "-e", "-c", "make"]
    t.header["plan"]["argv"] = argv
    t.ev("exec", "1", syscall="execve", path="/bin/sh", errno="ENOENT",
         args={"argv": argv, **exec_args})
    t.exit("1", 1)
    return t


def test_exec_of_a_file_whose_elf_interpreter_is_missing():
    rep = failed_builder(interpreter="/lib64/ld-linux-x86-64.so.2",
                         interpreter_missing=True).why()
    assert rep["failure_chain"][0]["argv"][0] == "sh"
    c = top(rep)
    assert c["kind"] == "missing-interpreter" and c["path"] == "/bin/sh"
    assert c["interpreter"] == "/lib64/ld-linux-x86-64.so.2"
    assert c["summary"] == "sh (1) could not execute /bin/sh: ENOENT -- its ELF " \
        "interpreter /lib64/ld-linux-x86-64.so.2 is missing: /lib64 is not in the sandbox"
    assert "/lib64" in c["hint"]


def test_exec_enoent_without_interpreter_facts_is_still_a_missing_program():
    c = top(failed_builder().why())
    assert c["kind"] == "missing-executable" and c["command"] == "sh"


def cc_link_build(target="/etc/alternatives/cc", link_target=None):
    t = Synth(sandbox_paths=HOST_MOUNTS)
    t.spawn("1", "1.1", "/usr/bin/make", ["make", "CC=cc"])
    # The loader goes through /lib -> usr/lib, which the sandbox has: no cause.
    t.open("1.1", "/lib/x86_64-linux-gnu/tls/libdl.so.2", errno="ENOENT",
           ) .args.update(link="/lib", link_target="usr/lib")
    t.open("1.1", "/lib/x86_64-linux-gnu/libdl.so.2").args.update()
    t.stat("1.1", "/usr/bin/cc", errno="ENOENT").args.update(
        link="/usr/bin/cc", link_target=link_target or target)
    t.stat("1.1", "/bin/cc", errno="ENOENT").args.update(
        link="/usr/bin/cc", link_target=link_target or target)
    t.err("1.1", "cc -O2 -c main.c\nmake: cc: No such file or directory\n"
                 "make: *** [Makefile:9: main.o] Error 127\n")
    t.finish("1.1", 2)
    t.exit("1", 2)
    return t


def test_symlink_out_of_the_sandbox_from_the_tracer_names_link_and_target():
    rep = cc_link_build().why()
    c = top(rep)
    assert c["kind"] == "undeclared-host-path"
    assert c["path"] == "/etc/alternatives/cc" and c["link"] == "/usr/bin/cc"
    assert c["accessed"] == "/usr/bin/cc"
    assert c["summary"] == "make (1.1) could not find /usr/bin/cc: it is a symlink to " \
        "/etc/alternatives/cc, which is not in the sandbox -- not a declared input"
    assert "missing-executable" not in kinds(rep)
    assert not any("libdl" in (x.get("path") or "") for x in rep["root_causes"])


def test_relative_symlink_into_a_mounted_path_is_not_a_cause():
    # /usr/bin/cc -> gcc-12 that is simply not installed: a missing command.
    rep = cc_link_build(link_target="x86_64-linux-gnu-gcc-12").why()
    assert kinds(rep)[0] == "missing-executable", rep["root_causes"]


def test_startup_probes_are_never_suspects():
    """busybox.conf, mkdir -p's EEXIST, cp's look before it creates, readlink
    EINVAL: what every build does; none of it may be listed."""
    t = Synth()
    t.stat("1", "/etc/busybox.conf", errno="ENOENT")
    t.spawn("1", "1.1", BB + "/bin/mkdir", ["mkdir", "-p", "/build/a/b"])
    t.sys("1.1", "mkdir", "/build", errno="EEXIST")
    t.sys("1.1", "mkdir", "/build/a")
    t.finish("1.1", 0)
    t.spawn("1", "1.2", BB + "/bin/cp", ["cp", "x", "/build/a/b/x"])
    t.stat("1.2", "/build/a/b/x", errno="ENOENT")
    t.sys("1.2", "readlink", "/build/a", errno="EINVAL")
    t.open("1.2", "/build/a/b/x", write=True)
    t.finish("1.2", 0)
    t.spawn("1", "1.3", BB + "/bin/cp", ["cp", "tool", "/usr/local/bin/tool"])
    t.stat("1.3", "/usr/local/bin/tool", errno="ENOENT")
    t.open("1.3", "/usr/local/bin/tool", write=True, errno="ENOENT")
    t.finish("1.3", 1)
    t.exit("1", 1)
    rep = t.why()
    # cp's failed stat of /usr/local/bin/tool is part of the write, not a suspect.
    assert [(c["kind"], c["path"]) for c in rep["root_causes"]] == \
        [("write-outside", "/usr/local/bin/tool")]
