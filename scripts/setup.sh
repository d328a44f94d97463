#!/usr/bin/env bash
# Creates .venv in the repository and installs the core, the command line, training and test tools.
# torch is pinned first: 2.13.0 is the CPU build these machines install from local disk in seconds;
# an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[training,test,web]"
