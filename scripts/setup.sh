#!/usr/bin/env bash
# Creates .venv in the repository and installs the core, the command line, training and test tools.
# torch and torchvision are pinned first, to the pair these machines install from local disk
# (about a minute): zennit (LRP baseline) imports torchvision, and PyPI's torchvision does not load
# beside the CPU-only torch 2.13.0 wheel. Unpinned, pip would download a newer multi-GB build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -e ".[training,test,web,dicom]"
