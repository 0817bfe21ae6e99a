#!/usr/bin/env bash
# Installs what dico-convert builds against (Debian/Ubuntu): OpenBLAS, zlib and the protobuf-c
# runtime (header and library, for the ONNX importer) through apt,
# and numpy for the tests of the Python reference reader. Idempotent: does nothing when they
# are already there. Needs root or sudo for apt-get. The build does not need protoc-c
# (protobuf-c-compiler): the generated ONNX code is committed (scripts/gen-onnx-proto.sh).
set -euo pipefail
need=()
for pkg in libopenblas-dev zlib1g-dev libprotobuf-c-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
pkg-config --exists openblas zlib libprotobuf-c || { echo "pkg-config cannot find openblas, zlib or libprotobuf-c after install" >&2; exit 1; }
if [ "${1:-}" = "--with-python" ]; then
  python3 -c "import numpy" 2>/dev/null || python3 -m pip install -q numpy
fi
