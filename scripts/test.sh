#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and the system packages the browser tests need
# (scripts/install-system-deps.sh: Debian's chromium and EGL; uses sudo when not root),
# then runs every pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
bash scripts/setup.sh
.venv/bin/python -m pytest -p no:cacheprovider "$@"
