#!/usr/bin/env bash
# One command for a fresh machine: install what dico-convert needs (idempotent), build it in
# release mode, and run the main job on the model that ships in Fixtures/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== building dico-convert (release)"
swift build -c release --product dico-convert
bin=.build/release/dico-convert

echo
echo "== inspect Fixtures/tiny.safetensors"
"$bin" inspect Fixtures/tiny.safetensors

echo
echo "== run it on the reference inputs Fixtures/tiny_ref_a.safetensors"
mkdir -p out
"$bin" run Fixtures/tiny.safetensors --input Fixtures/tiny_ref_a.safetensors --output out/tiny_out.safetensors --force
echo "wrote out/tiny_out.safetensors (tensor 'out', [4, 8, 16, 16] float32)"
echo
echo "Done. The binary is $bin; 'swift test' (or bash scripts/test.sh) runs the test suite."
