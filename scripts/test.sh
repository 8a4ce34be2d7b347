#!/usr/bin/env bash
# Runs the whole test suite. Under CI=true a missing prerequisite fails (style.md §8).
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_REMOTE=
exec .venv/bin/python -m pytest -q -ra "$@"
