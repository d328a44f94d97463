#!/usr/bin/env bash
# Creates .venv with only what the command line needs: the core package and a CPU build of torch.
# torch 2.13.0 (CPU) is the one these machines install from local disk (the bundles need 2.2 or newer;
# scripts/check-older-torch.sh); a torch already there that is new enough is kept (the full
# setup, scripts/setup.sh, installs 2.14.1 for the LRP baseline's torchvision). Plain `torch` from
# PyPI would be a multi-GB CUDA build. `bash scripts/setup-core.sh web` adds the web viewer; the
# `dicom` extra (highdicom, for --dicom and DICOM seeds) is always installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import sys, torch; sys.exit(tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])) < (2, 13))" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
EXTRAS="[dicom]"
if [ "${1:-}" = "web" ]; then
  EXTRAS="[dicom,web]"
fi
.venv/bin/python -m pip install --quiet -e ".$EXTRAS"
