#!/usr/bin/env bash
# Set up the runtime and run the main job on the default input: the built-in synthetic abdominal CT study.
# Outputs go to out/demo (or the folder given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/twin-imaging demo --out "${1:-out/demo}"
