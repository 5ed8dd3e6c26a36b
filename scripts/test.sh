#!/usr/bin/env bash
# Set up (Debian packages, .venv, the package with its dev, train and serve extras) and run the linter and the default test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `bash scripts/test.sh tests/io`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,train,serve,batch
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
