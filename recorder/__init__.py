"""nixrec.recorder: build a derivation in a Nix-faithful sandbox under a tracer.

Where Nix ends and tracing begins, one subpackage each:
- nix/        what Nix knows: the .drv model (ATerm and JSON), the store, the output checks
- sandbox/    the sandbox as Nix 2.8 makes it: its plan (plain data), its setup steps, the
              builder's launch, and the Linux calls they need
- trace/      the ptrace/seccomp tracer: THE syscall table, the filter, the decoders, the C
              fast path and the open predictor
- tracefile/  the trace file format (the one owner of its byte layout)
- cli/        the `nixrec` command: the root group, the recorder's verbs
- session.py  RecordSession: plan -> sandbox -> tracer -> writer; errors.py, the exit codes
"""

__version__ = "0.1.0"
