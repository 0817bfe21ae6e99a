#!/usr/bin/env bash
# Installs the system packages dico-convert builds against (Debian/Ubuntu). Idempotent:
# does nothing when they are already there. Needs root or sudo for apt-get.
set -euo pipefail
need=()
for pkg in libopenblas-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
pkg-config --exists openblas || { echo "pkg-config cannot find openblas after install" >&2; exit 1; }
