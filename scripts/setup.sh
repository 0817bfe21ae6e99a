#!/usr/bin/env bash
# One command for a fresh machine: install what dico-convert needs (idempotent), build it in
# release mode, and run the main job on the model that ships in Fixtures/: convert it to an
# int8 .dico, inspect the result, and run it on the reference inputs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== building dico-convert (release)"
swift build -c release --product dico-convert
bin=.build/release/dico-convert
mkdir -p out

echo
echo "== dico-convert Fixtures/tiny.safetensors out/tiny-int8.dico --int8"
"$bin" Fixtures/tiny.safetensors out/tiny-int8.dico --int8 --force

echo
echo "== dico-convert inspect out/tiny-int8.dico"
"$bin" inspect out/tiny-int8.dico

echo
echo "== dico-convert run out/tiny-int8.dico --input Fixtures/tiny_ref_a.safetensors --output out/tiny-int8-out.safetensors"
"$bin" run out/tiny-int8.dico --input Fixtures/tiny_ref_a.safetensors --output out/tiny-int8-out.safetensors --force
echo "wrote out/tiny-int8-out.safetensors (tensor 'out', [4, 8, 16, 16] float32)"
echo
echo "Done. The binary is $bin; bash scripts/test.sh runs the test suite."
