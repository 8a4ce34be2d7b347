"""nixrec.analysis: the build as a graph, root causes and dependency reports.

Imports only nixrec.recorder.tracefile and nixrec.recorder.trace.syscalls, so it runs
anywhere a trace can be read, without ptrace.
"""
