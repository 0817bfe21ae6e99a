#!/usr/bin/env python3
"""Forward-pass benchmark: dico-convert against PyTorch eager on the same weights, in one run.

    python3 scripts/bench.py [--presets S,XL] [--batches 1,2] [--rounds 3] [--runs 3]

Builds dico-convert in release mode, writes synthetic preset weights with
`dico-convert synth` into bench-out/, then alternates rounds of our `bench` subcommand
and scripts/bench_pytorch.py (interleaved so the shared machine's noise hits both), and
prints medians over all timed runs and the ratio ours / PyTorch (below 1.0 = we are faster).
PyTorch is optional: without it only our figures are printed.
"""
import argparse, json, os, platform, statistics, subprocess, sys, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "dico-convert")
OUT = os.path.join(ROOT, "bench-out")


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="S,XL")
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()

    subprocess.run(["swift", "build", "-c", "release", "--product", "dico-convert"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for preset in args.presets.split(","):
        model = os.path.join(OUT, f"{preset}.safetensors")
        if not os.path.exists(model):
            subprocess.run([BIN, "synth", "--preset", preset, "--seed", "0", model], check=True)
        for batch in [int(b) for b in args.batches.split(",")]:
            ours, peer = [], []
            for _ in range(args.rounds):
                r = run_json([BIN, "bench", model, "--batch", str(batch), "--size", str(args.size),
                              "--runs", str(args.runs), "--threads", str(args.threads)])
                assert r["finite"], "non-finite output"
                ours += r["runs"]
                if have_torch:
                    p = run_json([sys.executable, os.path.join(ROOT, "scripts", "bench_pytorch.py"), model,
                                  "--preset", preset, "--batch", str(batch), "--size", str(args.size),
                                  "--runs", str(args.runs), "--threads", str(args.threads)])
                    peer += p["runs"]
            o = statistics.median(ours)
            t = statistics.median(peer) if peer else None
            rows.append((preset, batch, o, t))
            print(f"DiCo-{preset} batch {batch}: dico-convert {o:.3f} s" +
                  (f", PyTorch {t:.3f} s, ratio {o / t:.2f}" if t else ""), flush=True)

    print()
    print(f"date: {datetime.date.today()}  machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip() if os.path.exists('/proc/cpuinfo') else ''}")
    if have_torch:
        import torch
        print(f"torch {torch.__version__}, threads {args.threads}, latent {args.size}x{args.size}, "
              f"{args.rounds} rounds x {args.runs} runs each, medians")
    print("| model | batch | dico-convert (s) | PyTorch eager (s) | ratio |")
    print("|---|---|---|---|---|")
    for preset, batch, o, t in rows:
        print(f"| DiCo-{preset} | {batch} | {o:.3f} | {t:.3f} | {o / t:.2f} |" if t else
              f"| DiCo-{preset} | {batch} | {o:.3f} | not measured | |")


if __name__ == "__main__":
    main()
