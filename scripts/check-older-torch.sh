#!/usr/bin/env bash
# Which torch loads the shipped bundles? Installs torch VERSION (default 2.2.2, the newest for Intel
# macOS) into a throw-away venv, runs every bundle's networks there and compares the outputs with
# the package's own torch. Downloads about 2.5 GB (PyPI's Linux torch carries CUDA libraries).
#   bash scripts/check-older-torch.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-2.2.2}
VENV=${TMPDIR:-/tmp}/cyclegan-explain-torch-$VERSION
[ -x .venv/bin/python ] || bash scripts/setup.sh
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "torch==$VERSION" "numpy<2"; }
.venv/bin/python scripts/bundle_outputs.py save "$VENV/reference.pt"
"$VENV/bin/python" -W ignore scripts/bundle_outputs.py compare "$VENV/reference.pt"
