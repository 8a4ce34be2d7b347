"""nixrec.recorder: the .drv model, the sandbox, the tracer and the trace format."""

__version__ = "0.1.0"
