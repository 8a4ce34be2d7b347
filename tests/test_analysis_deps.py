"""`nixrec deps` on synthetic traces: categories, access kinds, results, unused inputs."""

from test_analysis_synth import BB, Synth

from nixrec.analysis.deps import PathClassifier
from nixrec.analysis.render.markdown import deps_markdown
from nixrec.analysis.render.text import deps_text

UNUSED = "/nix/store/uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu-unused"
OTHER = "/nix/store/ffffffffffffffffffffffffffffffff-other"


def build():
    t = Synth(inputs=(BB, UNUSED),
              sandbox_paths=[{"target": "/usr/bin/env", "source": "/usr/bin/env"}])
    t.open("1", "/build/src/main.c")
    t.open("1", "/etc/passwd")
    t.open("1", "/proc/self/stat")
    t.fork("1", "1.1")
    t.exec("1.1", "/usr/bin/env", ["env", "sh"])          # via extra-sandbox-paths
    t.open("1.1", "/usr/include/zlib.h", errno="ENOENT")
    t.open("1.1", "/usr/include/zlib.h", errno="ENOENT")
    t.stat("1.1", OTHER + "/bin/tool", errno="ENOENT")
    t.sys("1.1", "mkdir", "/homeless-shelter/.cache", errno="ENOENT", flags=0o777)
    t.connect("1.1", "1.1.1.1:443")
    t.connect("1.1", "127.0.0.1:53", errno="ECONNREFUSED", dns="example.org")
    t.connect("1.1", "/build/.sock", errno="ECONNREFUSED", family="AF_UNIX")
    t.open("1", "/nix/store/0000000000000000000000000000000a-demo/bin/x", write=True)
    t.exit("1.1", 1)
    t.exit("1", 1)
    return t


def by(rep, **kw):
    return [g for g in rep["undeclared"] if all(g.get(k) == v for k, v in kw.items())]


def test_each_category_with_access_and_result():
    rep = build().deps()
    env = by(rep, path="/usr/bin/env")[0]
    assert (env["category"], env["access"], env["result"]) == ("host", "exec", "succeeded")
    z = by(rep, path="/usr/include/zlib.h")[0]
    assert (z["category"], z["access"], z["result"], z["count"]) == \
        ("host", "read", "refused", 2)
    assert z["procs"] == ["1.1"] and z["errno"] == "ENOENT"
    s = by(rep, path=OTHER + "/bin/tool")[0]
    assert (s["category"], s["access"]) == ("store", "stat")
    h = by(rep, category="home")[0]
    assert (h["path"], h["access"]) == ("/homeless-shelter/.cache", "write")
    n = by(rep, category="network")
    assert [g["address"] for g in n] == ["1.1.1.1:443"]      # not the /build socket
    d = by(rep, category="dns")[0]
    assert d["host"] == "example.org" and d["access"] == "connect"


def test_declared_and_sandbox_paths_are_not_listed():
    rep = build().deps()
    listed = {g.get("path") for g in rep["undeclared"]}
    for p in ("/build/src/main.c", "/etc/passwd", "/proc/self/stat"):
        assert p not in listed
    assert not any(p and p.startswith("/nix/store/0000") for p in listed)


def test_order_is_by_category_then_first_seq():
    rep = build().deps()
    cats = [g["category"] for g in rep["undeclared"]]
    assert cats == sorted(cats, key=["host", "store", "home", "network", "dns"].index)
    host = by(rep, category="host")
    assert [g["first_seq"] for g in host] == sorted(g["first_seq"] for g in host)


def test_unused_inputs():
    rep = build().deps()
    assert rep["unused_inputs"] == [UNUSED]


def test_classifier():
    c = PathClassifier(Synth().header["plan"])
    assert c.category("/homeless-shelter/x") == "home"
    assert c.category(BB + "/bin/sh") == "input"
    assert c.category(OTHER) == "store"
    assert c.category("/nix/store/0000000000000000000000000000000a-demo/x") == "output"
    assert c.category("/build/x") == "build"
    assert c.category("/tmp/x") == "sandbox" and c.category("/dev/null") == "sandbox"
    assert c.category("/etc/hosts") == "sandbox"
    assert c.category("/etc/resolv.conf") == "host"
    assert c.category("/usr/include/zlib.h") == "host"


def test_renderers():
    rep = build().deps()
    text = deps_text(rep)
    assert "Host paths:" in text and "/usr/include/zlib.h  read refused ENOENT x2" in text
    assert UNUSED in text
    md = deps_markdown(rep)
    assert "### DNS" in md and "| `example.org` | connect | refused (ECONNREFUSED) |" in md


def test_classifier_knows_the_mounted_sandbox_paths():
    mounts = [{"target": "/usr/lib", "source": "/usr/lib", "optional": False},
              {"target": "/bin", "source": "/bin", "optional": False}]
    c = PathClassifier(Synth(sandbox_paths=mounts).header["plan"])
    assert c.visible("/usr/lib/gcc/x86_64-linux-gnu/12/include")
    assert c.visible("/bin") and c.visible("/build/x") and c.visible(BB + "/bin/sh")
    assert not c.visible("/usr/include") and not c.visible("/usr/libexec")
    assert not c.visible("/etc/alternatives/cc") and not c.visible(OTHER)
    assert c.mounted_from_host("/usr/lib/x") and not c.mounted_from_host("/usr/lib64")


def busybox_success():
    """A build that succeeded: busybox stats /etc/busybox.conf at every exec,
    the loader looks in its hwcaps directory, make finds `cc` on its second
    try; it used the host's /usr/bin/env (extra-sandbox-paths) and was
    refused a file it then did without."""
    t = Synth(sandbox_paths=[{"target": "/usr/bin/env", "source": "/usr/bin/env"}])
    for n in range(1, 4):
        t.spawn("1", f"1.{n}", BB + "/bin/sh", ["sh", "-c", "true"])
        t.stat(f"1.{n}", "/etc/busybox.conf", errno="ENOENT")
        t.open(f"1.{n}", "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6",
               errno="ENOENT")
        t.exit(f"1.{n}", 0)
    t.stat("1", "/usr/local/bin/cc", errno="ENOENT")     # a PATH search...
    t.stat("1", BB + "/bin/cc")                           # ...that found it
    t.exec("1", "/usr/bin/env", ["env"])
    t.open("1", "/etc/os-release", errno="ENOENT")
    t.exit("1", 0)
    return t


def test_deps_keeps_used_refused_and_absent_probes_apart():
    rep = busybox_success().deps()
    groups = {g["path"]: g for g in rep["undeclared"]}
    assert groups["/usr/bin/env"]["group"] == "used"
    assert groups["/usr/bin/env"]["category"] == "host"
    assert groups["/etc/os-release"]["group"] == "refused"
    for probe in ("/etc/busybox.conf", "/usr/local/bin/cc",
                  "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6"):
        g = groups[probe]
        assert (g["group"], g["category"], g["area"]) == ("probe", "probe", "host"), g
    assert groups["/etc/busybox.conf"]["count"] == 3
    # Text and Markdown: the groups titled, the probes one collapsed line.
    text = deps_text(rep)
    lines = text.splitlines()
    assert lines[0] == "Used outside the declared inputs:"
    assert "    /usr/bin/env  exec succeeded x1" in text
    assert any(l.startswith("Refused") for l in lines)
    probe = [l for l in lines if "Absent probes" in l]
    assert len(probe) == 1 and "3 paths, 7 lookups" in probe[0]
    assert "/etc/busybox.conf x3" in probe[0]
    assert not any(l.strip().startswith("/etc/busybox.conf") for l in lines)
    md = deps_markdown(rep)
    assert "## Used outside the declared inputs" in md and "### Host paths" in md
    assert "| `/etc/busybox.conf` |" not in md and "Absent probes" in md


def test_only_probes_read_as_no_undeclared_access():
    t = Synth()
    t.stat("1", "/etc/busybox.conf", errno="ENOENT")
    t.exit("1", 0)
    rep = t.deps()
    assert [g["category"] for g in rep["undeclared"]] == ["probe"]
    text = deps_text(rep)
    assert text.startswith("no undeclared accesses\nAbsent probes, not dependencies: 1 path,")
