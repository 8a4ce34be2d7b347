"""The build sandbox as Nix 2.8 makes it (docs/sandbox.md): the plan, plain data
stored in the trace header so replay rebuilds the same sandbox (plan.py); the
ordered setup steps on the host and in the builder's child (steps.py); the
builder's launch through its helper (launch.py); and the Linux calls that
Python's standard library lacks (linux.py: mount, namespaces, ptrace, seccomp)."""
