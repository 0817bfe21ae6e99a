#!/usr/bin/env bash
# Verifier benchmark and drift table (BENCHMARKS.md, "Verifier"): synthesizes DiCo-S, converts it
# to fp32/fp16/bf16/int8, makes the two corruptions the thresholds must fail, and runs
# `verify --quick` and the default verification on each, printing wall and CPU time and the
# gate values. Needs python3 with numpy and safetensors (for the corruptions). About an hour on a
# busy 2-core machine; not part of the test suite.
#   bash scripts/bench_verify.sh [WORKDIR] [MODES]     (MODES: "quick default", the default)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=${1:-bench-out/verify}
modes=${2:-quick default}
swift build -c release --product dico-convert
bin=$root/.build/release/dico-convert
mkdir -p "$work"
cd "$work"
[ -f S.safetensors ] || "$bin" synth --preset S S.safetensors
for p in fp32 fp16 bf16 int8; do
  flag=""; [ $p = fp32 ] || flag=--$p
  [ -f S-$p.dico ] || "$bin" S.safetensors S-$p.dico $flag --quiet
done
[ -f S-outscale.safetensors ] || python3 "$root/Fixtures/make_verify_fixtures.py" corrupt S.safetensors S-outscale.safetensors out-scale
[ -f S-transpose.safetensors ] || python3 "$root/Fixtures/make_verify_fixtures.py" corrupt S.safetensors S-transpose.safetensors transpose-conv1
for mode in $modes; do
  flag=""; [ $mode = quick ] && flag=--quick
  for c in S-fp32.dico S-fp16.dico S-bf16.dico S-int8.dico S-outscale.safetensors S-transpose.safetensors; do
    /usr/bin/time -f "$mode $c: %e s wall, %U s user + %S s sys" "$bin" verify S.safetensors $c $flag --json $mode-$c.json --force > $mode-$c.txt || true
    tail -1 $mode-$c.txt
  done
done
