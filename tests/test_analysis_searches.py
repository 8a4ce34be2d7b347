"""Failed file searches (searches.py), renamed outputs in races, the log naming
a whole path, and the resolver's host from a sibling's log: synthetic traces."""

from test_analysis_synth import Synth

TOOLS = [{"source": p, "target": p} for p in
         ("/bin", "/lib", "/lib64", "/usr/bin", "/usr/lib", "/usr/libexec")]


def top(rep):
    assert rep["root_causes"], rep
    return rep["root_causes"][0]


def cmake_like(found_later=False, more_lookups=0):
    """find_path(zlib.h): access(DIR/zlib.h) in prefix after prefix, then
    `more_lookups` other failed lookups (find_library's), then a later failure
    (its cache's tmp file)."""
    t = Synth(sandbox_paths=TOOLS)
    t.spawn("1", "1.1", "/usr/bin/cmake", ["cmake", "-S", ".", "-B", "build"])
    for d in ("/usr/bin/include", "/usr/local/include", "/usr/include/x86_64-linux-gnu",
              "/usr/include", "/usr/X11R6/include", "/opt/include", "/include"):
        t.sys("1.1", "access", d + "/zlib.h", errno="ENOENT")
    if found_later:
        t.sys("1.1", "access", "/usr/lib/zlib/zlib.h")
    for i in range(more_lookups):
        t.sys("1.1", "access", f"/usr/lib/x86_64-linux-gnu/libz{i}.so", errno="ENOENT")
    t.sys("1.1", "unlink", "/build/build/CMakeCache.txt.tmp1", errno="ENOENT")
    t.err("1.1", "Could NOT find ZLIB (missing: ZLIB_INCLUDE_DIR)\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    return t


def test_a_search_found_nowhere_names_the_hidden_distribution_directory():
    c = top(cmake_like().why())
    assert c["kind"] == "undeclared-host-path"
    # the first hidden system directory searched, shortened to its searched
    # ancestor; not /usr/local, /usr/X11R6, /opt or /include
    assert c["path"] == "/usr/include/zlib.h"
    assert c["looked_for"] == "zlib.h"
    assert c["looked_in"][0] == "/usr/include"
    assert "/opt/include" not in c["looked_in"]
    assert "found it nowhere" in c["summary"] and "/usr/include" in c["hint"]


def test_a_search_outlives_the_window_of_failed_calls_kept():
    # cmake probes hundreds of library names after the header: more than the
    # last failed calls analysis keeps per process (facts.FailLog.RECENT).
    c = top(cmake_like(more_lookups=600).why())
    assert (c["kind"], c["path"]) == ("undeclared-host-path", "/usr/include/zlib.h")


def test_a_search_that_found_its_file_is_no_cause():
    rep = cmake_like(found_later=True).why()
    assert all(c.get("looked_for") is None for c in rep["root_causes"]), rep


def test_a_dropped_search_directory_is_blamed_like_pkg_config_s():
    """pkgconf stats its search path at start and opens X.pc only in the
    directories that exist; the hidden one (/usr/share/pkgconfig) is the cause."""
    t = Synth(sandbox_paths=TOOLS)
    t.spawn("1", "1.1", "/usr/bin/pkg-config", ["pkg-config", "--modversion", "systemd"])
    for d in ("/usr/local/lib/pkgconfig", "/usr/local/share/pkgconfig",
              "/usr/share/pkgconfig"):
        t.stat("1.1", d, errno="ENOENT")
    t.stat("1.1", "/usr/lib/pkgconfig")
    t.stat("1.1", "/usr/lib/x86_64-linux-gnu/pkgconfig")
    for name in ("systemd-uninstalled.pc", "systemd.pc"):
        for d in ("/usr/lib/x86_64-linux-gnu/pkgconfig", "/usr/lib/pkgconfig"):
            t.open("1.1", f"{d}/{name}", errno="ENOENT")
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert (c["kind"], c["path"]) == ("undeclared-host-path",
                                      "/usr/share/pkgconfig/systemd.pc")
    assert c["evidence"][0].startswith(f"event {c['seq']}: newfstatat(/usr/share/pkgconfig)")


def test_a_search_in_visible_directories_only_is_not_a_hidden_path():
    # Python's import of a module that is not installed: every directory is
    # mounted from the host, so the host lacks it too.
    t = Synth(sandbox_paths=TOOLS)
    t.spawn("1", "1.1", "/usr/bin/python3", ["python3", "-c", "import humanize"])
    for d in ("/usr/lib/python3.11", "/usr/lib/python3/dist-packages"):
        t.stat("1.1", d + "/humanize.py", errno="ENOENT")
    t.err("1.1", "ModuleNotFoundError: No module named 'humanize'\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    assert all(c.get("looked_for") is None for c in t.why()["root_causes"])


def test_a_generated_file_renamed_into_place_after_the_reader_looked_is_a_race():
    """make -j: `gen > version.h.tmp; mv version.h.tmp version.h` in one recipe
    (each line its own child of make) while another compiles main.c."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/make", ["make", "-j2"])
    t.spawn("1.1", "1.1.1", "/bin/sh", ["sh", "-c", "./gen > version.h.tmp"])
    t.open("1.1.1", "/build/version.h.tmp", write=True)
    t.spawn("1.1", "1.1.2", "/usr/bin/cc1", ["cc1", "main.c"])
    t.open("1.1.2", "/build/version.h", errno="ENOENT")
    t.err("1.1.2", "main.c:2:10: fatal error: version.h: No such file or directory\n")
    t.finish("1.1.2", 1)
    t.finish("1.1.1", 0)
    t.spawn("1.1", "1.1.3", "/bin/mv", ["mv", "version.h.tmp", "version.h"])
    t.sys("1.1.3", "renameat2", "/build/version.h.tmp", path2="/build/version.h")
    t.finish("1.1.3", 0)
    t.finish("1.1", 2)
    t.exit("1", 2)
    c = top(t.why())
    assert (c["kind"], c["path"], c["creator"]) == ("race", "/build/version.h", "1.1.1")


def test_a_path_is_named_by_the_log_only_as_a_whole():
    """git's config lock under HOME outranks its walk up to /.git, which the
    log's '/homeless-shelter/.gitconfig' only contains as a prefix."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/git", ["git", "config", "--global", "user.name", "CI"])
    t.stat("1.1", "/build/.git", errno="ENOENT")
    t.stat("1.1", "/.git", errno="ENOENT")
    t.open("1.1", "/homeless-shelter/.gitconfig.lock", write=True, errno="ENOENT")
    t.err("1.1", "error: could not lock config file /homeless-shelter/.gitconfig: "
                 "No such file or directory\n")
    t.finish("1.1", 255)
    t.exit("1", 255)
    c = top(t.why())
    assert (c["kind"], c["path"]) == ("home", "/homeless-shelter/.gitconfig.lock")


def test_a_resolver_query_takes_its_host_from_a_thread_sibling_s_log():
    """Go: one thread resolves, another prints 'lookup HOST on [::1]:53'."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/go", ["go", "build", "."])
    t.fork("1.1", "1.1.1")
    t.fork("1.1", "1.1.2")
    t.connect("1.1.2", "[::1]:53", errno=None, family="AF_INET6")
    t.err("1.1.1", 'main.go:6:2: Get "https://proxy.example.com/x.zip": dial tcp: '
                   'lookup proxy.example.com on [::1]:53: connection refused\n')
    t.finish("1.1.2", 1)
    t.finish("1.1.1", 1)
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert (c["kind"], c["host"]) == ("dns", "proxy.example.com")


def test_a_resolver_query_takes_its_host_from_a_thread_below_it():
    """Go again: the main thread resolves, a thread it started prints."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/go", ["go", "build", "."])
    t.connect("1.1", "127.0.0.1:53", errno=None)
    t.fork("1.1", "1.1.1")
    t.fork("1.1.1", "1.1.1.1")
    t.err("1.1.1.1", "dial tcp: lookup proxy.example.com on [::1]:53: connection refused\n")
    t.finish("1.1", 1)
    t.exit("1", 1)
    c = top(t.why())
    assert (c["kind"], c["host"]) == ("dns", "proxy.example.com")


def test_a_lock_file_the_reader_renamed_itself_is_no_race():
    """git: an earlier git made and renamed config.lock and exited; the next
    one finds config missing, makes config.lock and renames it itself."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/cmake", ["cmake", "-P", "gitclone.cmake"])
    t.spawn("1.1", "1.1.1", "/usr/bin/git", ["git", "init"])
    t.open("1.1.1", "/build/.git/config.lock", write=True)
    t.sys("1.1.1", "rename", "/build/.git/config.lock", path2="/build/.git/config")
    t.sys("1.1.1", "unlink", "/build/.git/config")
    t.finish("1.1.1", 0)
    t.spawn("1.1", "1.1.2", "/usr/bin/git", ["git", "clone", "https://git.example.com/x"])
    t.open("1.1.2", "/build/.git/config", errno="ENOENT")
    t.open("1.1.2", "/build/.git/config.lock", write=True)
    t.sys("1.1.2", "rename", "/build/.git/config.lock", path2="/build/.git/config")
    t.connect("1.1.2", "127.0.0.1:53", errno=None, dns="git.example.com")
    t.finish("1.1.2", 128)
    t.finish("1.1", 1)
    t.exit("1", 1)
    rep = t.why()
    assert top(rep)["kind"] == "dns"
    assert all(c["kind"] != "race" for c in rep["root_causes"]), rep["root_causes"]


def test_threads_of_one_program_do_not_race_each_other():
    """Go's build cache: one thread stats a cache directory, another makes it;
    the build failed on the module proxy's name."""
    t = Synth()
    t.spawn("1", "1.1", "/usr/bin/go", ["go", "build", "."])
    for n in ("1.1.1", "1.1.2"):
        t.ev("fork", "1.1", syscall="clone", result=200, args={"child": n, "thread": True})
    t.stat("1.1.2", "/build/go-cache/4b", errno="ENOENT")
    t.sys("1.1.1", "mkdir", "/build/go-cache/4b")
    t.connect("1.1", "127.0.0.1:53", errno=None, dns="goproxy.example.com")
    t.finish("1.1.2", 1)
    t.finish("1.1", 1)
    t.exit("1", 1)
    rep = t.why()
    assert top(rep)["kind"] == "dns"
    assert all(c["kind"] != "race" for c in rep["root_causes"]), rep["root_causes"]
