"""The trace file format: the one owner of its byte layout (docs/trace-format.md)."""

from nixrec.recorder.tracefile.model import Event, Process, KINDS  # noqa: F401
