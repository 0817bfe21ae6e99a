"""Exports a DiCo safetensors file to ONNX with torch, as a user would, for benchmarks.

    python3 scripts/export_dico_onnx.py bench-out/XL.safetensors bench-out/XL-dynamo.onnx --preset XL
    python3 scripts/export_dico_onnx.py IN.safetensors OUT.onnx --preset S --exporter legacy --opset 17

The model is built with Fixtures/dico_torch.py (config from the preset, 1000 classes), loaded
strictly from IN, and exported with a dynamic batch and a 32x32 latent. The dynamo exporter
(default) writes the weights to OUT.data (torch's ONNXProgram.save with external_data=True);
the legacy exporter does the same by itself above 2 GB. Needs torch, onnx, onnxscript and
about 3x the model's size in memory (DiCo-XL: about 9 GB). Run by hand, never by CI.
"""

import argparse
import os
import sys
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Fixtures"))
import dico_torch  # noqa: E402
from make_onnx_fixtures import layer_norm_channels_static  # noqa: E402  (same export-friendly LayerNorm)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--preset", required=True, choices=sorted(dico_torch.PRESETS))
    ap.add_argument("--exporter", default="dynamo", choices=["dynamo", "legacy"])
    ap.add_argument("--opset", type=int, default=17, help="legacy exporter only (dynamo picks its own)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    dico_torch.layer_norm_channels = layer_norm_channels_static
    model = dico_torch.load_safetensors(a.src, a.preset)
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10.0, 500.0])
    y = torch.tensor([1, 1000])
    t0 = time.time()
    if a.exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(model, (x, t, y), dynamo=True, input_names=["x", "t", "y"], output_names=["out"],
                                    dynamic_shapes={"x": {0: batch}, "t": {0: batch}, "y": {0: batch}})
        program.save(a.dst, external_data=True)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x, t, y), a.dst, dynamo=False, opset_version=a.opset,
                              input_names=["x", "t", "y"], output_names=["out"],
                              dynamic_axes={"x": {0: "N"}, "t": {0: "N"}, "y": {0: "N"}, "out": {0: "N"}})
    print(f"exported {a.dst} ({a.exporter}) in {time.time() - t0:.1f} s")
    for f in sorted(os.listdir(os.path.dirname(os.path.abspath(a.dst)))):
        if f.startswith(os.path.basename(a.dst)):
            print(f"  {f}: {os.path.getsize(os.path.join(os.path.dirname(os.path.abspath(a.dst)), f)):,} bytes")


if __name__ == "__main__":
    sys.exit(main())
