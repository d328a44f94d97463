#!/usr/bin/env bash
# Installs the Debian packages the web viewer and its browser tests need; does nothing when they
# are all present (safe to run on every CI job).
#   chromium                    the browser Testing/web drives (headless, through playwright)
#   libegl1 libegl-mesa0        EGL, through which VTK renders the slice views without a display
#   libgl1-mesa-dri             Mesa's software OpenGL driver (llvmpipe) behind EGL
#   fonts-dejavu-core           a font, so that the page's text renders in screenshots
set -euo pipefail
PACKAGES=(chromium libegl1 libegl-mesa0 libgl1-mesa-dri fonts-dejavu-core)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "System packages already installed: ${PACKAGES[*]}"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "Installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
