"""The processes of a recording, seen from /proc: for tests that kill or
interrupt `nixrec record` and check that nothing of it is left
(test_crash_safety.py, test_faults.py)."""

import os


def _procs():
    """{pid: (ppid, tracer pid, start time)} of every host process."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        tracer = int(status.split("TracerPid:", 1)[1].split()[0])
        out[int(pid)] = (int(fields[1]), tracer, fields[19])
    return out


def build_of(recorder_pid):
    """The processes of a recording: descendants or tracees of the recorder,
    as (pid, start time) so a reused pid is not mistaken for a survivor.
    (Other builds may run on this machine: a command line does not tell.)"""
    procs = _procs()
    mine = {recorder_pid}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, tracer, _) in procs.items():
            if pid not in mine and (ppid in mine or tracer in mine):
                mine.add(pid)
                grew = True
    mine.discard(recorder_pid)
    return {(pid, procs[pid][2]) for pid in mine}


def survivors(build):
    procs = _procs()
    return [pid for pid, start in build if pid in procs and procs[pid][2] == start]
