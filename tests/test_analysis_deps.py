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
    assert "## DNS" in md and "| `example.org` | connect | refused (ECONNREFUSED) |" in md


def test_classifier_knows_the_mounted_sandbox_paths():
    mounts = [{"target": "/usr/lib", "source": "/usr/lib", "optional": False},
              {"target": "/bin", "source": "/bin", "optional": False}]
    c = PathClassifier(Synth(sandbox_paths=mounts).header["plan"])
    assert c.visible("/usr/lib/gcc/x86_64-linux-gnu/12/include")
    assert c.visible("/bin") and c.visible("/build/x") and c.visible(BB + "/bin/sh")
    assert not c.visible("/usr/include") and not c.visible("/usr/libexec")
    assert not c.visible("/etc/alternatives/cc") and not c.visible(OTHER)
    assert c.mounted_from_host("/usr/lib/x") and not c.mounted_from_host("/usr/lib64")
