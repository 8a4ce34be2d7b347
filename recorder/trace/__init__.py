"""The tracer: one seccomp-filtered ptrace loop over the build (tracer.py), THE
syscall table (syscalls.py) and the filter built from it (seccomp.py), the
decoding of a stopped call into an Event (calls.py, decode.py), the C fast path
(fastpath.c, loaded by fastpath.py) and the open predictor (predict.py)."""
