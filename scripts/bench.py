#!/usr/bin/env python3
"""Forward-pass benchmark: dico-convert against PyTorch eager on the same weights, in one run.

    python3 scripts/bench.py [--presets S,XL] [--batches 1,2] [--rounds 3] [--runs 3]
                             [--models DIR] [--ablation]

Builds dico-convert in release mode, writes synthetic preset weights with
`dico-convert synth` into bench-out/ (or uses DIR/<preset>.safetensors), then alternates
rounds of our `bench` subcommand and scripts/bench_pytorch.py (interleaved so the shared
machine's noise hits every side alike), and prints medians over all timed runs and ratios
(below 1.0 = faster). Each round times the imported graph (`bench`) and the optimized one
(`bench --optimize`, the default pass pipeline). With --ablation each round also times the
pipeline minus each pass that changed the graph (`--skip-pass P`) and the pipeline with
`split-reduce-chan` in place of `fold-reduce-chan`: what each pass buys is the time it
saves against the full pipeline. The configurations run in reverse order every other round.
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
    ap.add_argument("--models", default=OUT, help="directory holding <preset>.safetensors (written there if missing)")
    ap.add_argument("--ablation", action="store_true", help="also time the pipeline minus each pass")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if it is installed")
    args = ap.parse_args()

    subprocess.run(["swift", "build", "-c", "release", "--product", "dico-convert"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            have_torch = True
        except ImportError:
            pass
    os.makedirs(args.models, exist_ok=True)
    rows = []
    for preset in args.presets.split(","):
        model = os.path.join(args.models, f"{preset}.safetensors")
        if not os.path.exists(model):
            subprocess.run([BIN, "synth", "--preset", preset, "--seed", "0", model], check=True)
        base = [BIN, "bench", model, "--size", str(args.size), "--threads", str(args.threads)]
        for batch in [int(b) for b in args.batches.split(",")]:
            configs = [("imported", []), ("optimized", ["--optimize"])]
            if args.ablation:
                probe = run_json(base + ["--batch", "1", "--runs", "1", "--optimize"])
                for p in probe["passes_applied"]:
                    configs.append((f"without {p}", ["--skip-pass", p]))
                if "fold-reduce-chan" in probe["pipeline"]:
                    alt = ",".join("split-reduce-chan" if p == "fold-reduce-chan" else p for p in probe["pipeline"])
                    configs.append(("split-reduce-chan for fold-reduce-chan", ["--passes", alt]))
            times = {name: [] for name, _ in configs}
            nodes = {}
            peer = []
            for rnd in range(args.rounds):
                # Order reversed every other round, so that a drift of the shared machine's
                # speed (or an after-effect of the previous run) does not favour one side.
                for name, extra in (configs if rnd % 2 == 0 else configs[::-1]):
                    r = run_json(base + ["--batch", str(batch), "--runs", str(args.runs)] + extra)
                    assert r["finite"], "non-finite output"
                    times[name] += r["runs"]
                    nodes[name] = r["nodes"]
                if have_torch:
                    p = run_json([sys.executable, os.path.join(ROOT, "scripts", "bench_pytorch.py"), model,
                                  "--preset", preset, "--batch", str(batch), "--size", str(args.size),
                                  "--runs", str(args.runs), "--threads", str(args.threads)])
                    peer += p["runs"]
            med = {k: statistics.median(v) for k, v in times.items()}
            mins = {k: min(v) for k, v in times.items()}
            t = statistics.median(peer) if peer else None
            rows.append((preset, batch, med, nodes, t, mins, min(peer) if peer else None))
            o, i = med["optimized"], med["imported"]
            print(f"DiCo-{preset} batch {batch}: imported {i:.3f} s, optimized {o:.3f} s, ratio {o / i:.2f}" +
                  (f"; PyTorch {t:.3f} s, imported/PyTorch {i / t:.2f}, optimized/PyTorch {o / t:.2f}" if t else ""), flush=True)

    print()
    print(f"date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC  machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip() if os.path.exists('/proc/cpuinfo') else ''}")
    if have_torch:
        import torch
        print(f"torch {torch.__version__}, threads {args.threads}, latent {args.size}x{args.size}, "
              f"{args.rounds} rounds x {args.runs} runs each, medians")
    print("| model | batch | imported (s) | optimized (s) | optimized / imported | PyTorch eager (s) | optimized / PyTorch | same, fastest runs |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, batch, med, nodes, t, mins, tmin in rows:
        o, i = med["optimized"], med["imported"]
        print(f"| DiCo-{preset} | {batch} | {i:.3f} | {o:.3f} | {o / i:.2f} | " +
              (f"{t:.3f} | {o / t:.2f} |" if t else "not measured | |") +
              f" {mins['optimized'] / mins['imported']:.2f}" + (f", {mins['optimized'] / tmin:.2f} |" if tmin else " |"))
    if args.ablation:
        print()
        print("| model | batch | pipeline | nodes | median (s) | vs full pipeline | fastest run (s) | vs full pipeline |")
        print("|---|---|---|---|---|---|---|---|")
        for preset, batch, med, nodes, t, mins, tmin in rows:
            for name, v in med.items():
                print(f"| DiCo-{preset} | {batch} | {name} | {nodes[name]} | {v:.3f} | {v / med['optimized']:.3f} | "
                      f"{mins[name]:.3f} | {mins[name] / mins['optimized']:.3f} |")


if __name__ == "__main__":
    main()
