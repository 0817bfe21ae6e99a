#!/usr/bin/env python3
"""Time the PyTorch (CPU) DiCo forward pass, as a peer for the Swift implementation.

usage:
  python3 scripts/bench_pytorch.py MODEL.safetensors (--preset S|B|L|XL|H | --config-json JSON_OR_PATH)
                                   [--batch N] [--size 32] [--runs K] [--threads 2] [--warmup 1] [--seed 0]

Loads the weights (stripping any `module.` / `model.` / `ema.` prefixes), builds the
model (strict load: every tensor must match), sets torch.set_num_threads, runs under
torch.inference_mode() the warm-up pass(es) and then K timed forward passes on seeded
inputs (x ~ randn [N, in, size, size], t uniform in [0, 1000), y uniform in
[0, num_classes]; the null class is a valid label), and prints one JSON line:
  {"peer": "pytorch", "torch": ..., "batch": N, "median_s": ..., "min_s": ..., "runs": [...]}
Without --preset / --config-json the file's "dico.config" metadata is used if present.
Run by hand, never by CI.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fixtures"))
import dico_torch  # noqa: E402


def parse_config(args):
    if args.preset:
        return dico_torch.config_from_preset(args.preset)
    if args.config_json:
        s = args.config_json
        if os.path.exists(s):
            with open(s) as f:
                return json.load(f)
        return json.loads(s)
    from safetensors import safe_open

    with safe_open(args.model, "pt") as f:
        meta = f.metadata() or {}
    if "dico.config" in meta:
        return json.loads(meta["dico.config"])
    sys.exit("need --preset or --config-json (the file has no dico.config metadata)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--preset", choices=sorted(dico_torch.PRESETS))
    g.add_argument("--config-json", help="JSON string or path to a JSON file (keys as DiCo.__init__)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=32, help="latent spatial size (divisible by 4)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.size % 4:
        sys.exit("--size must be divisible by 4")

    torch.set_num_threads(args.threads)
    config = parse_config(args)
    t0 = time.perf_counter()
    model = dico_torch.load_safetensors(args.model, config)
    load_s = time.perf_counter() - t0

    gen = torch.Generator().manual_seed(args.seed)
    n = args.batch
    x = torch.randn(n, model.in_channels, args.size, args.size, generator=gen)
    t = torch.randint(0, 1000, (n,), generator=gen).float()
    y = torch.randint(0, model.num_classes + 1, (n,), generator=gen)

    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            out = model(x, t, y)
        for _ in range(args.runs):
            t1 = time.perf_counter()
            out = model(x, t, y)
            times.append(time.perf_counter() - t1)
    assert out.shape == (n, model.out_channels, args.size, args.size)
    assert torch.isfinite(out).all()

    print(json.dumps({
        "peer": "pytorch",
        "torch": torch.__version__,
        "batch": n,
        "size": args.size,
        "threads": args.threads,
        "params": dico_torch.param_count(model),
        "load_s": round(load_s, 3),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "runs": times,
    }))


if __name__ == "__main__":
    main()
