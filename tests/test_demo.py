"""`make demo` end to end: scripts/demo.sh records fixtures/demo.nix (a C program
including <zlib.h>, built by the host's gcc) and `nixrec why` must name the
header, the host include directory the sandbox hides, and the replay command.

Needs Nix, a working `nixrec record` and the host's gcc and make; without them
the test skips with the reason, except under CI=true where it fails (style.md §8).
"""

import os
import subprocess

import pytest

from nixfix import NIXREC, REPO, missing, nix_env, require_nix


@pytest.mark.e2e
def test_demo_explains_the_missing_header():
    require_nix()
    if not NIXREC.exists():
        missing(f"{NIXREC} is missing (run bash scripts/setup.sh)")
    for tool in ("/usr/bin/gcc", "/usr/bin/make"):
        if not os.access(tool, os.X_OK):
            missing(f"the demo builds with the host's {tool}, and there is none")
    p = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=nix_env(),
                       capture_output=True, text=True, timeout=300)
    out = p.stdout
    assert p.returncode == 0, f"{out}\n{p.stderr}"
    assert out.startswith("demo: recording fixtures/demo.nix"), out
    root = next(line for line in out.splitlines() if line.startswith("root cause:"))
    assert "zlib.h" in root and "/usr/include" in root, out
    assert "nixrec replay out/demo.nixrec --until " in out, out
    assert (REPO / "out" / "demo.nixrec").is_file()
    page = REPO / "out" / "demo.html"
    assert out.rstrip().endswith(f"demo: the report as one page (timeline, dependencies, "
                                 f"log): out/demo.html (open it in a browser)"), out
    assert root[len("root cause: "):].replace("<", "&lt;").replace(">", "&gt;") \
        in page.read_text()
