#!/usr/bin/env bash
# Xvfb and the GL libraries that PsychoPy's window needs without a display (docs/methods.md, Installing).
# Installs them with apt when run as root; otherwise prints the exact command to run.
set -euo pipefail

packages=(xvfb xauth libgl1 libglx-mesa0 libgl1-mesa-dri libglu1-mesa)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: not a Debian/Ubuntu system; install Xvfb and OpenGL (Mesa) libraries yourself: ${missing[*]}" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "closedloop needs these system packages for the PsychoPy presenter: ${missing[*]}" >&2
  echo "run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
