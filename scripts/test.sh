#!/usr/bin/env bash
# Set up (once) and run the whole test suite: ruff, then pytest. This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The pinned CPU build first: an unpinned torch would pull several GB of CUDA packages.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q "$@"
