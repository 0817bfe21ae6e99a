#!/usr/bin/env python3
"""Conversion benchmark: `dico-convert IN OUT.dico --int8` (and other precisions) against a
plain copy of the same input file, interleaved in one run.

    python3 scripts/bench_convert.py [--preset XL] [--precisions int8,fp16] [--rounds 3] [--onnx FILE.onnx]

Builds dico-convert (release), writes synthetic preset weights into bench-out/ if missing,
warms the page cache, then per round: `cp IN bench-out/copy.bin` and each conversion. Prints
median wall time, the peak RSS of each conversion (from wait4), and the ratio to the copy.
With --onnx (an export of the same weights, e.g. by scripts/export_dico_onnx.py), each round
also converts it to int8 and `inspect`s both files (import: parse and recognize), and runs
`inspect --prove` on the ONNX file (import with the canonicalization proof that conversion and
`run` make), each printed with the ratio to the safetensors path.
"""
import argparse, os, statistics, subprocess, time, datetime, platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "dico-convert")
OUT = os.path.join(ROOT, "bench-out")


def timed(cmd):
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"{cmd} failed with status {status}")
    return elapsed, usage.ru_maxrss / 1024.0  # MB (Linux reports KiB)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="XL")
    ap.add_argument("--precisions", default="int8,fp16,fp32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--onnx", help="an ONNX export of the same model, converted next to the safetensors file")
    args = ap.parse_args()
    subprocess.run(["swift", "build", "-c", "release", "--product", "dico-convert"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    os.makedirs(OUT, exist_ok=True)
    model = os.path.join(OUT, f"{args.preset}.safetensors")
    if not os.path.exists(model):
        subprocess.run([BIN, "synth", "--preset", args.preset, "--seed", "0", model], check=True)
    size = os.path.getsize(model)
    with open(model, "rb") as f:  # warm the page cache, as for the copy
        while f.read(1 << 24):
            pass
    copy_path = os.path.join(OUT, "copy.bin")
    copies, runs = [], {p: [] for p in args.precisions.split(",")}
    imports = {"safetensors": [], "onnx": [], "onnx-proven": []}
    onnx_int8 = []
    for _ in range(args.rounds):
        if args.onnx:
            imports["safetensors"].append(timed([BIN, "inspect", model]))
            imports["onnx"].append(timed([BIN, "inspect", args.onnx]))
            imports["onnx-proven"].append(timed([BIN, "inspect", "--prove", args.onnx]))
            onnx_int8.append(timed([BIN, args.onnx, os.path.join(OUT, "onnx-int8.dico"), "--int8", "--force", "--quiet"]))
        copies.append(timed(["cp", model, copy_path])[0])
        os.remove(copy_path)
        for p in runs:
            target = os.path.join(OUT, f"{args.preset}-{p}.dico")
            flag = [] if p == "fp32" else [f"--{p}"]
            runs[p].append(timed([BIN, model, target, "--force", "--quiet"] + flag))
    c = statistics.median(copies)
    print(f"date: {datetime.date.today()}  machine: {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"input: DiCo-{args.preset} synth, {size / 1e9:.2f} GB; {args.rounds} rounds, medians")
    print("| work | wall (s) | peak RSS (MB) | ratio to copy |")
    print("|---|---|---|---|")
    print(f"| cp input (plain copy) | {c:.2f} | | 1.00 |")
    for p, r in runs.items():
        t = statistics.median(x[0] for x in r)
        m = max(x[1] for x in r)
        out = os.path.getsize(os.path.join(OUT, f"{args.preset}-{p}.dico"))
        print(f"| dico-convert --{p} ({out / 1e9:.2f} GB out) | {t:.2f} | {m:.0f} | {t / c:.2f} |")
    if args.onnx:
        st = statistics.median(x[0] for x in runs["int8"]) if "int8" in runs else None
        print()
        print(f"ONNX: {os.path.basename(args.onnx)} ({(os.path.getsize(args.onnx) + sum(os.path.getsize(os.path.join(os.path.dirname(args.onnx), f)) for f in os.listdir(os.path.dirname(args.onnx) or '.') if f.startswith(os.path.basename(args.onnx) + '.'))) / 1e9:.2f} GB with external data)")
        print("| work | safetensors (s) | safetensors RSS (MB) | onnx (s) | onnx RSS (MB) | ratio |")
        print("|---|---|---|---|---|---|")
        a, b = imports["safetensors"], imports["onnx"]
        ta, tb = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
        print(f"| import (`inspect`) | {ta:.2f} | {max(x[1] for x in a):.0f} | {tb:.2f} | {max(x[1] for x in b):.0f} | {tb / ta:.2f} |")
        p = imports["onnx-proven"]
        tp = statistics.median(x[0] for x in p)
        print(f"| import with the proof (`inspect --prove`) | {ta:.2f} | {max(x[1] for x in a):.0f} | {tp:.2f} | {max(x[1] for x in p):.0f} | {tp / ta:.2f} |")
        if st is not None:
            to = statistics.median(x[0] for x in onnx_int8)
            print(f"| convert --int8 | {st:.2f} | {max(x[1] for x in runs['int8']):.0f} | {to:.2f} | {max(x[1] for x in onnx_int8):.0f} | {to / st:.2f} |")


if __name__ == "__main__":
    main()
