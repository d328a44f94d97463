#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs every pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -p no:cacheprovider "$@"
