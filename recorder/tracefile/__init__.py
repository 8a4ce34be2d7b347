"""The trace file format: the one owner of its byte layout (docs/trace-format.md).

    with TraceWriter(path, header) as w:        # recorder
        w.append(event); ...; w.close(summary, processes)
    r = open_trace(path)                         # analysis, replay, `nixrec events`
    for ev in r.events(from_seq=400): ...
"""

from nixrec.recorder.tracefile.model import Event, Process, KINDS  # noqa: F401
from nixrec.recorder.tracefile.format import FORMAT_VERSION  # noqa: F401
from nixrec.recorder.tracefile.writer import TraceWriter, TraceWriteError  # noqa: F401
from nixrec.recorder.tracefile.reader import TraceReader, open_trace  # noqa: F401
