"""The evidence `why` and `deps` weigh (issue 21): the log's own words
(idioms.py), the host's view kept in the trace (hostview.py), tolerated
failures, and one order of causes. Unit tests on synthetic traces; the
real builds are in test_hostview.py and the corpus (bench/accuracy.py)."""

import os

import pytest
from test_analysis_dataflow import configure_without_headers, why as why_dataflow
from test_analysis_synth import BB, OUT, Synth

from nixrec.analysis.idioms import IDIOMS, errno_said, idiom_link, is_failure_line
from nixrec.analysis.render.text import deps_text, why_text
from nixrec.recorder.tracefile.hostview import Collector, HostView, probe
from nixrec.recorder.tracefile.model import Event


def top(rep):
    assert rep["root_causes"], rep
    return rep["root_causes"][0]


# -- the log's own words --------------------------------------------------------------

def test_each_idiom_matches_the_real_message_it_was_written_from():
    for i in IDIOMS:
        assert i.pattern.search(i.example), i.name
        assert is_failure_line(i.example), i.name


def lookup(path, syscall="openat", errno="ENOENT", **kw):
    return dict(kind="undeclared-host-path", path=path, syscall=syscall, errno=errno, **kw)


# (a real tool's message, a failed call it is about, one it is not about)
IDIOM_CASES = [
    ("/usr/bin/ld: cannot find -lz: No such file or directory",
     lookup("/usr/lib/x86_64-linux-gnu/libz.so"), lookup("/usr/lib/libzstd.so")),
    ("./minigzip: error while loading shared libraries: libz.so.1: cannot open shared "
     "object file: No such file or directory",
     lookup("/usr/lib/x86_64-linux-gnu/libz.so.1"), lookup("/usr/lib/libz.so.2")),
    ("ModuleNotFoundError: No module named 'yaml'",
     lookup("/usr/lib/python3/dist-packages/yaml", syscall="newfstatat"),
     lookup("/usr/lib/python3/dist-packages/pyyaml.pth")),
    ("Can't locate JSON/PP.pm in @INC (you may need to install the JSON::PP module)",
     lookup("/usr/share/perl5/JSON/PP.pm"), lookup("/usr/share/perl5/PP.pm")),
    ("sh: 1: xsltproc: not found",
     dict(kind="missing-executable", command="xsltproc", path="/usr/bin/xsltproc",
          syscall="execve", errno="ENOENT"),
     dict(kind="missing-executable", command="xmllint", path="/usr/bin/xmllint",
          syscall="execve", errno="ENOENT")),
    ("install: cannot change ownership of '/nix/store/x-y/f': Invalid argument",
     lookup("/nix/store/x-y/f", syscall="fchownat", errno="EINVAL"),
     lookup("/nix/store/x-y/f", syscall="fsetxattr", errno="ENOTSUP")),
    ("mkdir: cannot create directory '/var/lib/x': Permission denied",
     lookup("/var/lib/x", syscall="mkdir", errno="EACCES"), lookup("/var/lib/x")),
    ("cp: cannot create regular file '/nix/store/x-y/z': Read-only file system",
     lookup("/nix/store/x-y/z", errno="EROFS"), lookup("/nix/store/x-y/z", errno="EACCES")),
    ("fatal: unable to access 'https://git.example.com/r.git/': Could not resolve host: "
     "git.example.com", dict(kind="dns", host="git.example.com", syscall="connect"),
     dict(kind="dns", host="pypi.org", syscall="connect")),
    ("OSError: service/proto not found", lookup("/etc/services"), lookup("/etc/protocols")),
    ("locale.Error: unsupported locale setting", lookup("/usr/lib/locale/locale-archive"),
     lookup("/usr/lib/python3/dist-packages")),
    ('warning: failed to load external entity "http://docbook.sourceforge.net/release/xsl/'
     'current/manpages/docbook.xsl"', lookup("/etc/xml/catalog", syscall="newfstatat"),
     lookup("/etc/resolv.conf")),
]


@pytest.mark.parametrize("line,about,other", IDIOM_CASES,
                         ids=[c[0][:30] for c in IDIOM_CASES])
def test_an_idiom_links_its_message_to_the_call_it_is_about(line, about, other):
    assert idiom_link(about, [line]), line
    assert not idiom_link(other, [line]), line


def test_the_errno_in_words_with_its_verb_names_the_call():
    line = "install: cannot change ownership of '/nix/store/x-y/f': Invalid argument"
    assert errno_said(lookup("/nix/store/x-y/f", syscall="fchownat", errno="EINVAL"), [line])
    # The same object, another errno and operation: not what the line says.
    assert not errno_said(lookup("/nix/store/x-y/f", syscall="fsetxattr", errno="ENOTSUP"),
                          [line])
    # "No such file or directory" ends half the lines of a failed build: a
    # lookup needs its path or name said, not its errno.
    assert not errno_said(lookup("/usr/bin/f"), ["open /x/f: No such file or directory"])


def test_only_lines_about_a_failure_are_evidence():
    for line in ("evaling implicit 'postPatch' string hook", "Running phase: checkPhase",
                 "checking for zlib.h... yes", "patching sources"):
        assert not is_failure_line(line), line
    for line in ("OSError: service/proto not found", "make: *** [Makefile:2: check] Error 1",
                 "cp: cannot stat 'x': No such file or directory", "FAIL: test_roundtrip"):
        assert is_failure_line(line), line


def stdenv_hook_lookup(mounted=True):
    """nixpkgs' stdenv: `type -p postPatch` fails its PATH lookup, the
    builder logs "evaling implicit 'postPatch' string hook", and later the
    check phase fails for a reason of its own. The host's /usr and /bin are
    mounted (extra-sandbox-paths), as in the issue's build."""
    t = Synth(sandbox_paths=[{"source": p, "target": p} for p in ("/usr", "/bin")]
              if mounted else ())
    t.stat("1", "/usr/bin/postPatch", errno="ENOENT")
    t.stat("1", "/bin/postPatch", errno="ENOENT")
    t.err("1", "evaling implicit 'postPatch' string hook\n", fd=1)
    t.err("1", "Running phase: checkPhase\n", fd=1)
    t.spawn("1", "1.1", BB + "/bin/make", ["make", "check"])
    t.err("1.1", "FAIL: test_roundtrip\nmake: *** [Makefile:2: check] Error 1\n")
    t.finish("1.1", 2)
    t.exit("1", 2)
    return t


def test_a_name_in_a_line_that_is_not_about_a_failure_is_no_cause():
    rep = stdenv_hook_lookup().why()
    assert "postPatch" not in (top(rep).get("path") or ""), top(rep)
    hook = [c for c in rep["root_causes"] if "postPatch" in (c.get("path") or "")]
    assert not any(c.get("log_mention") for c in hook), hook
    # /usr/bin hidden instead: a search of two hidden directories, which the
    # host's view shows the host cannot answer either.
    view = {"paths": {"/usr/bin/postPatch": None, "/bin/postPatch": None}}
    rep = stdenv_hook_lookup(mounted=False).why(summary={"exit_status": 2,
                                                         "host_view": view})
    assert "postPatch" not in (top(rep).get("path") or ""), top(rep)


def test_an_idiom_outranks_what_the_same_process_names_in_passing():
    """xsltproc without the XML catalog goes to the network for the URL:
    libxml2's complaint is about the catalog, the host in the URL is where it
    went next."""
    t = Synth()
    url = "http://docbook.sourceforge.net/release/xsl/current/manpages/docbook.xsl"
    t.spawn("1", "1.1", "/usr/bin/xsltproc", ["xsltproc", url, "page.xml"])
    t.stat("1.1", "/etc/xml/catalog", errno="ENOENT")
    t.connect("1.1", "127.0.0.1:53", errno=None, dns="docbook.sourceforge.net")
    t.err("1.1", f'warning: failed to load external entity "{url}"\ncannot parse {url}\n')
    t.finish("1.1", 4)
    t.exit("1", 2)
    view = {"paths": {"/etc/xml/catalog": ["file", 4084, "xml-core"]}}
    rep = t.why(summary={"exit_status": 2, "host_view": view})
    assert (top(rep)["path"], top(rep)["log_mention"]) == ("/etc/xml/catalog", "idiom")
    dns = [c for c in rep["root_causes"] if c["kind"] == "dns"]
    assert dns and dns[0]["score"] < top(rep)["score"]


def test_a_failed_child_the_complaint_names_is_searched_too():
    """meson asks pkg-config for systemd (it fails: /usr/share/pkgconfig is
    dropped at start), then tries cmake, whose failure the chain follows."""
    t = Synth(sandbox_paths=[{"source": "/usr/lib", "target": "/usr/lib"}])
    t.spawn("1", "1.1", "/usr/bin/meson", ["meson", "setup", "build"])
    t.spawn("1.1", "1.1.1", "/usr/bin/pkg-config", ["pkg-config", "--modversion", "systemd"])
    t.stat("1.1.1", "/usr/share/pkgconfig", errno="ENOENT")
    for d in ("/usr/lib/x86_64-linux-gnu/pkgconfig", "/usr/lib/pkgconfig"):
        t.open("1.1.1", d + "/systemd.pc", errno="ENOENT")
    t.finish("1.1.1", 1)
    t.spawn("1.1", "1.1.2", "/usr/bin/cmake", ["cmake", "--find-package"])
    t.open("1.1.2", "/usr/share/cmake-3.25/Modules/CMake.cmake", errno="ENOENT")
    t.finish("1.1.2", 1)
    t.err("1.1", 'meson.build:3:0: ERROR: Dependency "systemd" not found, tried pkgconfig\n')
    t.finish("1.1", 1)
    t.exit("1", 1)
    view = {"paths": {"/usr/share/pkgconfig": ["dir", 0, None],
                      "/usr/share/cmake-3.25/Modules/CMake.cmake": None}}
    c = top(t.why(summary={"exit_status": 1, "host_view": view}))
    assert (c["proc"], c["path"], c["looked_for"]) == ("1.1.1",
                                                       "/usr/share/pkgconfig/systemd.pc",
                                                       "systemd.pc")


def test_a_thread_is_its_program():
    """The java launcher (1.1) starts the JVM's main thread (1.1.1), which
    prints the error and ends with status 0; the launcher exits 1. The
    thread's failed lookup and its log are the program's."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/lib/jvm/bin/javac", ["javac", "App.java"])
    t.open("1.1", "/usr/lib/jvm/lib/jvm.cfg", errno="ENOENT")
    t.ev("fork", "1.1", syscall="clone", result=7, args={"child": "1.1.1", "thread": True})
    t.stat("1.1.1", "/etc/java/security/java.security", errno="ENOENT")
    t.err("1.1.1", 'Exception in thread "main" \n'
                   "java.lang.InternalError: Error loading java.security file\n")
    for i in range(30):                       # a long stack trace
        t.err("1.1.1", f"\tat java.base/Frame{i}.run(Frame.java:{i})\n")
    t.exit("1.1.1", 0)
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert (c["path"], c["proc"], c["log_mention"]) == ("/etc/java/security/java.security",
                                                        "1.1.1", "name")


def test_a_resolver_query_takes_its_host_from_its_programs_threads():
    """go: one thread connects to the resolver, another reports the lookup."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/go", ["go", "build"])
    for th in ("1.1.1", "1.1.2"):
        t.ev("fork", "1.1", syscall="clone", result=7, args={"child": th, "thread": True})
    t.ev("fork", "1.1.2", syscall="clone", result=8, args={"child": "1.1.2.1", "thread": True})
    t.connect("1.1.1", "[::1]:53", errno=None)
    t.err("1.1.2.1", 'main.go:6:2: Get "https://goproxy.example.com/x.zip": dial tcp: lookup '
                     "goproxy.example.com on [::1]:53: read udp: connection refused\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    dns = [c for c in t.why()["root_causes"] if c["kind"] == "dns"]
    assert dns and all(c["host"] == "goproxy.example.com" for c in dns), dns


# -- the host's view ------------------------------------------------------------------

SERVICES = ["file", 12813, "netbase"]


def python_services(host=True):
    """A python3 test calls getservbyname: the interpreter's start-up probes
    fail (on the host too), then /etc/services (the host has it)."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/python3", ["python3", "-m", "unittest"])
    t.open("1.1", "/usr/bin/pybuilddir.txt", errno="ENOENT")
    t.open("1.1", "/usr/bin/python3._pth", errno="ENOENT")
    t.open("1.1", "/etc/services", errno="ENOENT")
    t.err("1.1", "OSError: service/proto not found\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    view = {"paths": {"/usr/bin/pybuilddir.txt": None, "/usr/bin/python3._pth": None,
                      "/etc/services": SERVICES}, "packages": True, "truncated": False}
    return t, ({"exit_status": 1, "host_view": view} if host else None)


def test_the_path_the_host_has_is_the_cause_and_the_others_are_probes():
    t, summary = python_services()
    rep = t.why(summary=summary)
    c = top(rep)
    assert (c["kind"], c["path"], c["on_host"]) == ("undeclared-host-path", "/etc/services",
                                                    True)
    assert c["log_mention"] == "idiom" and "service/proto" in c["log_idiom"]
    probes = [x for x in rep["root_causes"] if x.get("path") == "/usr/bin/pybuilddir.txt"]
    assert all(x["on_host"] is False and x["score"] < c["score"] - 4 for x in probes)


def config_search(host):
    """A tool looks for its config in a list of known locations; only one of
    them is on the host. The log only says it found none."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/tool", ["tool", "build"])
    for d in ("/usr/lib/tool", "/etc/tool", "/usr/share/tool"):
        t.open("1.1", d + "/tool.conf", errno="ENOENT")
    t.err("1.1", "tool: error: no configuration file found\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    view = {"paths": {"/usr/lib/tool/tool.conf": None, "/etc/tool/tool.conf": ["file", 40, None],
                      "/usr/share/tool/tool.conf": None}}
    return t.why(summary={"exit_status": 1, "host_view": view} if host else None)


def test_a_search_names_the_candidate_the_host_has():
    c = top(config_search(host=True))
    assert (c["path"], c["on_host"], c["looked_for"]) == ("/etc/tool/tool.conf", True,
                                                          "tool.conf")
    # Without the host's view: the first hidden distribution directory.
    assert top(config_search(host=False))["path"] == "/usr/lib/tool/tool.conf"


def test_a_search_the_host_cannot_answer_either_ranks_below_a_hidden_path():
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/tool", ["tool"])
    for d in ("/usr/lib/tool", "/usr/share/tool"):
        t.open("1.1", d + "/plugin.so", errno="ENOENT")
    t.open("1.1", "/etc/tool.conf", errno="ENOENT")
    t.err("1.1", "tool: error: giving up\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    view = {"paths": {"/usr/lib/tool/plugin.so": None, "/usr/share/tool/plugin.so": None,
                      "/etc/tool.conf": ["file", 10, None]}}
    rep = t.why(summary={"exit_status": 1, "host_view": view})
    assert top(rep)["path"] == "/etc/tool.conf"
    search = [c for c in rep["root_causes"] if c.get("looked_for") == "plugin.so"]
    assert search and search[0]["on_host"] is False


def test_deps_keeps_hidden_apart_from_probes():
    t, summary = python_services()
    t.connect("1.1", "127.0.0.1:53", errno=None, dns="example.org")
    # pkg-config drops /usr/share/pkgconfig (hidden) and uses /usr/lib/pkgconfig.
    t.stat("1.1", "/usr/share/pkgconfig", errno="ENOENT")
    t.stat("1.1", "/usr/lib/pkgconfig")
    summary["host_view"]["paths"]["/usr/share/pkgconfig"] = ["dir", 0, None]
    groups = {g.get("path") or g.get("host"): g for g in
              __import__("nixrec.analysis.deps", fromlist=["x"]).undeclared_accesses(
                  t.header, list(t.events), summary)["undeclared"]}
    assert groups["/etc/services"]["group"] == "hidden"
    assert groups["/usr/share/pkgconfig"]["group"] == "hidden"
    assert groups["/etc/services"]["category"] == "host"
    for p in ("/usr/bin/pybuilddir.txt", "/usr/bin/python3._pth"):
        assert groups[p]["group"] == "probe", groups[p]
    # A resolver query from the sandbox was never answered: not a use.
    dns = groups["example.org"]
    assert (dns["group"], dns["result"]) == ("refused", "unanswered")
    text = deps_text({"undeclared": list(groups.values()), "unused_inputs": []})
    assert "Hidden by the sandbox (the host has them):\n  Host paths:\n    /etc/services" \
        in text
    assert "example.org  connect unanswered x1" in text
    assert "connect succeeded" not in text
    # Without the host's view /etc/services is a libc probe, as before.
    old = __import__("nixrec.analysis.deps", fromlist=["x"]).undeclared_accesses(
        t.header, list(t.events), None)["undeclared"]
    assert [g["group"] for g in old if g.get("path") == "/etc/services"] == ["probe"]


def test_the_host_view_is_made_of_what_failed_and_read_back(tmp_path):
    see = Collector("/build")
    real = tmp_path / "there"
    real.write_bytes(b"12345")
    for path, errno in ((str(real), "ENOENT"), (str(tmp_path / "gone"), "EACCES"),
                        ("/build/x", "ENOENT"), ("/proc/1/x", "ENOENT"),
                        (str(tmp_path / "ok"), None), (str(tmp_path), "EEXIST")):
        see(Event("syscall", "1", syscall="openat", path=path, errno=errno))
    assert see.paths == {str(real), str(tmp_path / "gone")}
    view = probe(see.paths, inputs=[str(tmp_path)], packages=False)
    assert view["paths"][str(real)] == ["file", 5, None]
    assert view["paths"][str(tmp_path / "gone")] is None
    assert view["paths"][str(tmp_path)] == ["dir", 0, None]
    hv = HostView({"host_view": view})
    assert hv.has(str(real)) is True and hv.has(str(tmp_path / "gone")) is False
    assert hv.has("/never/asked") is None and HostView({}).has(str(real)) is None
    assert hv.entry(str(real)) == {"type": "file", "size": 5, "package": None}


@pytest.mark.skipif(not os.path.exists("/var/lib/dpkg/info/base-files.list"),
                    reason="not a Debian host (no dpkg database)")
def test_the_host_view_names_the_debian_package():
    view = probe(["/etc/debian_version"])
    assert view["packages"] and view["paths"]["/etc/debian_version"][2] == "base-files"


def perl_services(view=True):
    """perl: getservbyname returns undef without a word when /etc/services
    is missing; the test then fails on the value and perl exits 1 having
    printed nothing itself (prove reports). Its module lookups under /etc/perl
    fail on the host too."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/perl", ["perl", "t/address.t"])
    t.open("1.1", "/etc/ld.so.cache", errno="ENOENT")
    t.open("1.1", "/build/t/address.t")             # its own work starts here
    t.stat("1.1", "/etc/perl/Test/More.pmc", errno="ENOENT")
    t.stat("1.1", "/usr/share/perl5/Test/More.pmc", errno="ENOENT")
    t.open("1.1", "/etc/services", errno="ENOENT")
    t.stat("1.1", "/etc/perl/Test2/API/Breakage.pmc", errno="ENOENT")
    t.stat("1.1", "/usr/share/perl5/Test2/API/Breakage.pmc", errno="ENOENT")
    t.finish("1.1", 1)
    t.exit("1", 1)
    paths = {"/etc/ld.so.cache": ["file", 100, "libc-bin"], "/etc/services": SERVICES}
    for p in ("/etc/perl/Test/More.pmc", "/usr/share/perl5/Test/More.pmc",
              "/etc/perl/Test2/API/Breakage.pmc", "/usr/share/perl5/Test2/API/Breakage.pmc"):
        paths[p] = None
    return t.why(summary={"exit_status": 1, "host_view": {"paths": paths}} if view else None)


def test_what_the_origin_asked_for_last_that_the_host_has_leads():
    c = top(perl_services())
    assert (c["path"], c["log_mention"], c["on_host"]) == ("/etc/services", "before", True)
    # Without the host's view nothing says so: /etc/services stays a libc probe.
    assert all(c.get("path") != "/etc/services"
               for c in perl_services(view=False)["root_causes"])


def test_no_lead_before_the_program_is_at_its_own_work():
    """perl -e 'die ...': the loader's ld.so.cache (the host has it) is the
    only hidden file, read before perl touched anything of the build."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/perl", ["perl", "-e", "die"])
    t.open("1.1", "/etc/ld.so.cache", errno="ENOENT")
    t.stat("1.1", "/etc/perl/Carp.pmc", errno="ENOENT")
    t.stat("1.1", "/usr/local/share/perl/Carp.pmc", errno="ENOENT")
    t.err("1.1", "checksum mismatch\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    view = {"paths": {"/etc/ld.so.cache": ["file", 39803, None], "/etc/perl/Carp.pmc": None,
                      "/usr/local/share/perl/Carp.pmc": None}}
    rep = t.why(summary={"exit_status": 1, "host_view": view})
    assert top(rep)["kind"] == "fallback" and top(rep)["score"] < 4 + 4
    assert all(c.get("log_mention") != "before" for c in rep["root_causes"])


def test_a_plain_assertion_failure_gets_no_host_cause():
    """python3 -c "assert ...": its start-up asks whether sitecustomize.py (a
    symlink into the hidden /etc/python3.11, the host has it) is there; the
    failure is the assertion, nothing the sandbox did."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/python3", ["python3", "-c", "assert 0"])
    t.open("1.1", "/usr/bin/pybuilddir.txt", errno="ENOENT")
    t.ev("syscall", "1.1", syscall="newfstatat", path="/usr/lib/python3.11/sitecustomize.py",
         errno="ENOENT", args={"link": "/usr/lib/python3.11/sitecustomize.py",
                               "link_target": "/etc/python3.11/sitecustomize.py"})
    t.err("1.1", "Traceback (most recent call last):\nAssertionError: wrong value\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    view = {"paths": {"/usr/bin/pybuilddir.txt": None,
                      "/usr/lib/python3.11/sitecustomize.py": ["file", 155, None],
                      "/etc/python3.11/sitecustomize.py": ["file", 155, None]}}
    assert top(t.why(summary={"exit_status": 1, "host_view": view}))["kind"] == "fallback"


def test_make_s_own_include_directories_are_no_search():
    """make stats /usr/gnu/include, /usr/local/include, /usr/include at every
    start: the host having /usr/local/include makes no cause of it."""
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/make", ["make"])
    for d in ("/usr/gnu/include", "/usr/local/include", "/usr/include"):
        t.stat("1.1", d, errno="ENOENT")
    t.spawn("1.1", "1.1.1", BB + "/bin/sh", ["sh", "-c", "exit 1"])
    t.err("1.1.1", "test_x: FAILED\n")
    t.finish("1.1.1", 1)
    t.err("1.1", "make: *** [Makefile:2: all] Error 1\n")
    t.finish("1.1", 2)
    t.exit("1", 2)
    view = {"paths": {"/usr/gnu/include": None, "/usr/local/include": ["dir", 0, None],
                      "/usr/include": ["dir", 0, None]}}
    rep = t.why(summary={"exit_status": 2, "host_view": view})
    assert top(rep)["kind"] == "fallback"
    assert not any(c.get("looked_for") == "include" for c in rep["root_causes"])


def test_the_message_machinery_is_never_the_lead():
    """cp formats its complaint through gettext: locale.alias is read after
    the failure and before the line, and the host has it."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/cp", ["cp", "/usr/share/x/data", "."])
    t.stat("1.1", "/usr/share/x/data", errno="ENOENT")
    t.open("1.1", "/usr/share/locale/locale.alias", errno="ENOENT")
    t.err("1.1", "cp: cannot stat 'data': No such file or directory\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    view = {"paths": {"/usr/share/x/data": ["file", 3, None],
                      "/usr/share/locale/locale.alias": ["file", 2996, "locales"]}}
    rep = t.why(summary={"exit_status": 1, "host_view": view})
    assert top(rep)["path"] == "/usr/share/x/data"
    assert all(c.get("path") != "/usr/share/locale/locale.alias" for c in rep["root_causes"])


def test_a_directory_printed_only_inside_a_longer_path_is_not_named():
    t = Synth()
    t.spawn("1", "1.1", BB + "/bin/make", ["make"])
    t.open("1.1", "/usr/share/dpkg/architecture.mk", errno="ENOENT")
    t.stat("1.1", "/usr/share/dpkg", errno="ENOENT")
    t.err("1.1", "make: *** No rule to make target '/usr/share/dpkg/architecture.mk'.  "
                 "Stop.\n")
    t.finish("1.1", 2)
    t.exit("1", 2)
    rep = t.why()
    assert top(rep)["path"] == "/usr/share/dpkg/architecture.mk"
    assert all(c.get("log_mention") is None for c in rep["root_causes"]
               if c.get("path") == "/usr/share/dpkg")


# -- tolerated failures ------------------------------------------------------------------

def install_owner():
    """install -o root: fsetxattr (ACL) ENOTSUP, fchmod sets the mode anyway,
    then fchownat EINVAL (uid 0 is not mapped in the sandbox)."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/install", ["install", "-o", "root", "f", OUT + "/f"])
    t.open("1.1", OUT + "/f", write=True)
    t.sys("1.1", "fsetxattr", OUT + "/f", errno="ENOTSUP")
    t.sys("1.1", "fchmod", OUT + "/f")
    t.sys("1.1", "fchownat", OUT + "/f", errno="EINVAL")
    t.err("1.1", f"install: cannot change ownership of '{OUT}/f': Invalid argument\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    return t


def test_a_failure_the_same_operation_then_did_is_tolerated_not_the_cause():
    rep = install_owner().why()
    c = top(rep)
    assert (c["kind"], c["syscall"], c["errno"]) == ("write-denied", "fchownat", "EINVAL")
    assert "could not change the owner" in c["summary"]
    # Alone, the tolerated fsetxattr is marked and scores below any good cause.
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/install", ["install", "f", OUT + "/f"])
    t.sys("1.1", "fsetxattr", OUT + "/f", errno="ENOTSUP")
    t.sys("1.1", "fchmod", OUT + "/f")
    t.finish("1.1", 1)
    t.exit("1", 1)
    xattr = [c for c in t.why()["root_causes"] if c.get("syscall") == "fsetxattr"]
    assert xattr and all(c["tolerated"] > c["seq"] and c["score"] < 4 for c in xattr)


# -- one order -------------------------------------------------------------------------

def reports():
    yield python_services()[0].why(summary=python_services()[1])
    yield perl_services()
    yield install_owner().why()
    yield stdenv_hook_lookup().why()
    yield config_search(host=True)
    t, _, _, _ = configure_without_headers()     # a cause found through a producer
    yield why_dataflow(t)
    fb = Synth()                                  # nothing explains it: the fallback
    fb.spawn("1", "1.1", BB + "/bin/false", ["false"])
    fb.open("1.1", "/usr/share/x/data", errno="ENOENT")
    fb.finish("1.1", 1)
    fb.exit("1", 1)
    yield fb.why()


def test_the_order_is_one_function_of_the_score_in_text_and_json():
    for rep in reports():
        causes = rep["root_causes"]
        scores = [c["score"] for c in causes]
        assert scores == sorted(scores, reverse=True), causes
        text = why_text(rep)
        assert causes[0]["summary"] in text.split("root cause: ", 1)[1].split("\n")[0]
        shown = [line.split("] #", 1)[1].split(" ", 1)[0] for line in text.splitlines()
                 if line.startswith("  [")]
        assert shown == [str(c["seq"]) for c in causes[1:4]]
