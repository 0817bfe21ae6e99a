"""Generate the DiCo test fixtures in Fixtures/ (deterministic, fixed seeds).

Run from the repo root:  python3 Fixtures/make_fixtures.py

Writes:
  Fixtures/tiny.safetensors         C=24, depths [2,1,2,1,2], r=2, 10 classes (seed 0)
  Fixtures/tiny_ref_a.safetensors   x [4,4,16,16], t f32 [0,999,500.5,37], y [3,10,0,9]
  Fixtures/tiny_ref_b.safetensors   x [2,4,8,12],  t i64 [250,1],          y [10,5]
  Fixtures/tiny_r4.safetensors      C=16, depths [1,1,1,1,1], r=4, 7 classes (seed 1)
  Fixtures/tiny_r4_ref.safetensors  x [2,4,8,8],   t f32 [10,900],         y [7,2]
Each reference holds x, t, y, out (float32 torch forward) and out_f64 (the same
forward with model and inputs in float64, sinusoidal features included).

Prints the fp32-vs-fp64 relative L2 floor, the output std and a sensitivity check.
Run by hand, never by CI.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dico_torch  # noqa: E402

TOL = 1e-5  # relative L2 tolerance of the Swift tests


def rel_l2(a, b):
    a = a.double()
    b = b.double()
    return ((a - b).norm() / b.norm()).item()


def forward_both(model32, x, t, y):
    """Returns (out fp32, out fp64, out fp64-with-float32-sinusoid)."""
    with torch.inference_mode():
        out32 = model32(x, t, y)
    model64 = dico_torch.build(model32.config(), dtype=torch.float64)
    model64.load_state_dict(model32.state_dict())  # exact fp32 -> fp64 widening
    model64.eval()
    t64 = t.double() if t.is_floating_point() else t
    with torch.inference_mode():
        out64 = model64(x.double(), t64, y)
    return out32, out64, model64


def sinusoid_floor(model64, x, t, y):
    """fp64 forward but with the sinusoidal features computed in float32 (as the spec
    literally says, "t as float32") and then widened: isolates how much of the floor
    comes from the float32 timestep features alone."""
    orig = dico_torch.TimestepEmbedder.forward

    def fwd32(self, tt):
        f = self.timestep_embedding(tt, self.frequency_embedding_size, dtype=torch.float32)
        return self.mlp(f.to(self.mlp[0].weight.dtype))

    dico_torch.TimestepEmbedder.forward = fwd32
    try:
        with torch.inference_mode():
            return model64(x.double(), t, y)
    finally:
        dico_torch.TimestepEmbedder.forward = orig


def save_st(tensors, path, metadata):
    """safetensors.torch.save_file, then put the __metadata__ keys in sorted order.

    save_file serialises the metadata map in a random (hash) order, so two runs give
    files whose bytes differ only in the header's metadata key order. Reordering keeps
    the header's length, so tensor offsets are untouched; the files become
    byte-for-byte reproducible."""
    save_file(tensors, path, metadata=metadata)
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        hdr = json.loads(raw, object_pairs_hook=dict)
        hdr["__metadata__"] = dict(sorted(hdr["__metadata__"].items()))
        new = json.dumps(hdr, separators=(",", ":")).encode()
        new = new + b" " * (n - len(new)) if len(new) <= n else None
        if new is not None and json.loads(new) == json.loads(raw):
            f.seek(8)
            f.write(new)


def save_model(model, path, seed):
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "dico.config": json.dumps(model.config(), sort_keys=True),
        "made_by": "Fixtures/make_fixtures.py",
        "init_seed": str(seed),
        "torch": torch.__version__,
    }
    save_st(sd, path, meta)
    return sum(v.numel() for v in sd.values())


def make_reference(model, name, x, t, y, model_file, x_seed, sens_names=None):
    out32, out64, model64 = forward_both(model, x, t, y)
    assert out32.shape == (x.shape[0], model.out_channels, x.shape[2], x.shape[3]), out32.shape
    assert torch.isfinite(out32).all() and torch.isfinite(out64).all()
    floor = rel_l2(out32, out64)
    out64_t32 = sinusoid_floor(model64, x, t, y)
    t_part = rel_l2(out64_t32, out64)
    net_floor = rel_l2(out32, out64_t32)
    path = os.path.join(HERE, name)
    save_st(
        {
            "x": x.contiguous(),
            "t": t.contiguous(),
            "y": y.contiguous(),
            "out": out32.contiguous(),
            "out_f64": out64.contiguous(),
        },
        path,
        {
            "model": model_file,
            "x_seed": str(x_seed),
            "made_by": "Fixtures/make_fixtures.py",
            "torch": torch.__version__,
        },
    )
    print(f"\n{name}: x {list(x.shape)} t {t.dtype} {t.tolist()} y {y.tolist()}")
    print(f"  out std {out32.std().item():.4f}, mean {out32.mean().item():+.4f}, max|out| {out32.abs().max().item():.3f}")
    print(f"  per-sample std {[round(v, 4) for v in out32.std(dim=(1, 2, 3)).tolist()]}")
    print(f"  fp32 vs fp64 relative L2 (floor): {floor:.3e}  ({TOL / floor:.1f}x under the {TOL:g} tolerance)")
    print(f"    float32 sinusoid features alone (fp64 net fed f32 features vs out_f64): {t_part:.3e}")
    print(f"    float32 network alone (out vs fp64 net fed the same f32 features):     {net_floor:.3e}")
    result = {"floor": floor, "t_part": t_part, "net_floor": net_floor, "std": out32.std().item(), "sens": {}}

    if sens_names:
        print("  sensitivity (zero one tensor, relative L2 change of fp64 output):")
        sd = model64.state_dict()
        for tn in sens_names:
            saved = sd[tn].clone()
            with torch.no_grad():
                sd[tn].zero_()
            with torch.inference_mode():
                o = model64(x.double(), t.double() if t.is_floating_point() else t, y)
            with torch.no_grad():
                sd[tn].copy_(saved)
            ch = rel_l2(o, out64)
            result["sens"][tn] = ch
            print(f"    {tn:45s} {ch:.3e} {'ok' if ch > 1e-3 else 'TOO SMALL'}")
    return result


def check_pixel_shuffle():
    """The spec's index formulas agree with torch's PixelShuffle / PixelUnshuffle."""
    a = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(5))
    u = torch.nn.functional.pixel_unshuffle(a, 2)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                assert torch.equal(u[:, c * 4 + i * 2 + j], a[:, c, i::2, j::2])
    assert torch.equal(torch.nn.functional.pixel_shuffle(u, 2), a)


def main():
    torch.set_num_threads(2)
    check_pixel_shuffle()
    results = {}

    # --- tiny: C=24, depths [2,1,2,1,2], r=2, 10 classes --------------------------
    cfg = {"hidden_size": 24, "depths": [2, 1, 2, 1, 2], "mlp_ratio": 2, "in_channels": 4,
           "learn_sigma": True, "num_classes": 10}
    tiny = dico_torch.init_random_(dico_torch.build(cfg), seed=0).eval()
    n = save_model(tiny, os.path.join(HERE, "tiny.safetensors"), seed=0)
    print(f"tiny.safetensors: {n:,} parameters, config {json.dumps(tiny.config(), sort_keys=True)}")

    sens = [
        "encoder_level_1.0.conv3.weight",
        "latent.1.conv3.weight",
        "encoder_level_2.0.ca.1.weight",
        "decoder_level_1.1.ca.1.weight",
        "encoder_level_1.1.adaLN_modulation.1.weight",
        "decoder_level_1.0.adaLN_modulation.1.weight",
        "t_embedder_2.mlp.2.weight",
        "y_embedder.embedding_table_0.weight",
        "y_embedder.embedding_table_1.weight",
        "y_embedder.embedding_table_2.weight",
        "down1_2.body.0.weight",
        "down2_3.body.0.weight",
        "up3_2.body.0.weight",
        "up2_1.body.0.weight",
        "reduce_chan_level2.weight",
        "reduce_chan_level1.weight",
        "final_layer.adaLN_modulation.1.weight",
        "final_layer.out_proj.weight",
    ]
    x = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(100))
    t = torch.tensor([0.0, 999.0, 500.5, 37.0], dtype=torch.float32)
    y = torch.tensor([3, 10, 0, 9], dtype=torch.int64)
    results["tiny_ref_a"] = make_reference(tiny, "tiny_ref_a.safetensors", x, t, y, "tiny.safetensors", 100, sens)

    x = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(101))
    t = torch.tensor([250, 1], dtype=torch.int64)
    y = torch.tensor([10, 5], dtype=torch.int64)
    results["tiny_ref_b"] = make_reference(tiny, "tiny_ref_b.safetensors", x, t, y, "tiny.safetensors", 101)

    # --- tiny_r4: C=16, depths [1,1,1,1,1], r=4, 7 classes -------------------------
    cfg4 = {"hidden_size": 16, "depths": [1, 1, 1, 1, 1], "mlp_ratio": 4, "in_channels": 4,
            "learn_sigma": True, "num_classes": 7}
    r4 = dico_torch.init_random_(dico_torch.build(cfg4), seed=1).eval()
    n4 = save_model(r4, os.path.join(HERE, "tiny_r4.safetensors"), seed=1)
    print(f"\ntiny_r4.safetensors: {n4:,} parameters, config {json.dumps(r4.config(), sort_keys=True)}")
    sens4 = [
        "encoder_level_1.0.conv3.weight",
        "latent.0.ca.1.weight",
        "decoder_level_1.0.conv4.weight",
        "decoder_level_1.0.adaLN_modulation.1.weight",
        "y_embedder.embedding_table_0.weight",
        "up3_2.body.0.weight",
        "reduce_chan_level1.weight",
        "final_layer.out_proj.weight",
    ]
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(102))
    t = torch.tensor([10.0, 900.0], dtype=torch.float32)
    y = torch.tensor([7, 2], dtype=torch.int64)
    results["tiny_r4_ref"] = make_reference(r4, "tiny_r4_ref.safetensors", x, t, y, "tiny_r4.safetensors", 102, sens4)

    print("\nsummary:")
    for k, v in results.items():
        print(f"  {k}: floor {v['floor']:.3e}, std {v['std']:.4f}"
              + (f", min sensitivity {min(v['sens'].values()):.3e}" if v["sens"] else ""))
    worst = max(v["floor"] for v in results.values())
    ok = worst < TOL / 4 and all(s > 1e-3 for v in results.values() for s in v["sens"].values())
    print(f"  worst floor {worst:.3e} vs tolerance {TOL:g} ({TOL / worst:.1f}x margin): {'OK' if ok else 'CHECK'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
