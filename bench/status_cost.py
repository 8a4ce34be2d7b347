"""What the status line costs per line of build log (issue 17): rich's Live
display, which re-renders the status under every line it prints, against
recorder/cli/status.py, which writes the status as rich rendered it at its
last update. A benchmark, not a test.

    .venv/bin/python bench/status_cost.py

Both write 5,000 log lines to a pty 100 columns wide (a thread drains it);
prints the medians of 3 rounds.
"""

import fcntl
import os
import struct
import termios
import threading
import time

from nixrec.recorder.cli.status import LiveStatus, status_text

N, ROUNDS = 5000, 3
LINE = b"checking for something in the configure script... yes\n"
PROGRESS = {"elapsed": 3, "processes": 40, "alive": 2, "events": 1000, "refused": 0,
            "current": "gcc"}


def live_display(out):
    """-> log(bytes) through rich's Live: console.print above the live status."""
    import io
    from rich.console import Console
    from rich.live import Live
    from rich.segment import Segment
    from rich.text import Text

    class Raw:
        def __init__(self, text):
            self.text = text

        def __rich_console__(self, console, options):
            yield Segment(self.text)
    console = Console(file=io.TextIOWrapper(out, write_through=True), highlight=False)
    live = Live(Text(status_text(PROGRESS)), console=console, transient=True,
                auto_refresh=False)
    live.start(refresh=True)
    return lambda data: console.print(Raw(data.decode()), end="", crop=False), live.stop


def main():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))

    def drain():
        while os.read(master, 1 << 16):
            pass
    threading.Thread(target=drain, daemon=True).start()
    times = {"rich Live": [], "status.py": []}
    for _ in range(ROUNDS):
        log, stop = live_display(os.fdopen(os.dup(slave), "wb", buffering=0))
        t = time.perf_counter()
        for _ in range(N):
            log(LINE)
        times["rich Live"].append((time.perf_counter() - t) / N * 1e6)
        stop()
        line = LiveStatus(os.fdopen(os.dup(slave), "wb", buffering=0))
        line.status(PROGRESS)
        t = time.perf_counter()
        for _ in range(N):
            line.log(LINE)
        times["status.py"].append((time.perf_counter() - t) / N * 1e6)
        line.close()
    for name, v in times.items():
        v.sort()
        print(f"{name:10} {v[len(v) // 2]:7.1f} us per log line (median of {ROUNDS} x {N:,}; "
              f"{v[0]:.1f}-{v[-1]:.1f})")


if __name__ == "__main__":
    main()
