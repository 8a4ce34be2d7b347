# nixrec: `make demo` and `make test` do all the set-up (README).
VENV := .venv
NIXREC := $(VENV)/bin/nixrec

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	@bash scripts/test.sh

bench: setup
	@$(VENV)/bin/python bench/run.py

clean:
	rm -rf $(VENV) out .pytest_cache recorder/trace/_fastpath.so
