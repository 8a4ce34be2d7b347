# nixrec: `make demo` and `make test` do all the set-up (README).
VENV := .venv
NIXREC := $(VENV)/bin/nixrec

.PHONY: setup demo test bench bench-logs clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	@bash scripts/test.sh

bench: setup
	@$(VENV)/bin/python bench/run.py

# Logs at scale (docs/performance.md): records a 2 GiB log, minutes.
bench-logs: setup
	@$(VENV)/bin/python bench/log_scale.py --dir out/bench-logs

clean:
	rm -rf $(VENV) out .pytest_cache recorder/trace/_fastpath.so
