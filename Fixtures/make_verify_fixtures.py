"""Independent references for the verifier (Sources/DicoVerify), and corrupted models.

Run from the repo root:  python3 Fixtures/make_verify_fixtures.py
Writes (each a few KB to tens of KB, deterministic):
  Fixtures/verify_metrics.safetensors    a seeded perturbation of known size and its metrics
                                         (relative L2, cosine, SQNR, max abs, PSNR), numpy float64
  Fixtures/verify_frechet.safetensors    two Gaussians (means, covariances) and two feature sets,
                                         with the Frechet distance from scipy.linalg.sqrtm
  Fixtures/verify_schedule.safetensors   DiCo's linear betas, respaced indices for several step
                                         counts ("250", "100", "10", "ddim25", "ddim50") and the
                                         posterior coefficients of the "10" respacing, written after
                                         ADM's gaussian_diffusion.py / respace.py
  Fixtures/verify_sampler.safetensors    two short trajectories of Fixtures/tiny.safetensors run in
                                         PyTorch (Fixtures/dico_torch.py) with an ADM-style DDPM
                                         (learned range, cfg 1.4) and DDIM (eta 0, no guidance)
                                         sampler: x_T, the per-step noise, the latents after every
                                         step

  python3 Fixtures/make_verify_fixtures.py corrupt IN OUT KIND
writes a corrupted copy of a DiCo safetensors model, KIND one of
  out-scale        final_layer.out_proj weight and bias times 1.1 (a 10% scale error in the output conv)
  transpose-conv1  every block's conv1.weight [D, D, 1, 1] with out and in swapped (a transposed
                   layout in one op type across all blocks)
Run by hand, never by CI.
"""

import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def save(path, tensors, meta):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path,
              metadata={k: meta[k] for k in sorted(meta)})
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


# --- metrics -------------------------------------------------------------------------------

def metrics(c, r):
    c = c.astype(np.float64)
    r = r.astype(np.float64)
    d = c - r
    rel = np.linalg.norm(d) / np.linalg.norm(r)
    cos = float(np.dot(c, r) / (np.linalg.norm(c) * np.linalg.norm(r)))
    sqnr = 10 * np.log10(np.sum(r * r) / np.sum(d * d))
    mx = np.max(np.abs(d))
    peak = r.max() - r.min()
    psnr = 10 * np.log10(peak * peak / np.mean(d * d))
    return {"rel_l2": float(rel), "cosine": cos, "sqnr_db": float(sqnr), "max_abs": float(mx), "psnr_db": float(psnr)}


def make_metrics():
    rng = np.random.default_rng(20261201)
    ref = rng.standard_normal(4096).astype(np.float32)
    # A perturbation of known size: relative L2 1e-2 by construction (up to float32 rounding).
    noise = rng.standard_normal(4096)
    noise *= 1e-2 * np.linalg.norm(ref.astype(np.float64)) / np.linalg.norm(noise)
    cand = (ref.astype(np.float64) + noise).astype(np.float32)
    m = metrics(cand, ref)
    print("metrics:", m)
    save(os.path.join(HERE, "verify_metrics.safetensors"), {"reference": ref, "candidate": cand},
         {"expected": json.dumps(m), "made_by": "Fixtures/make_verify_fixtures.py"})


# --- Frechet -------------------------------------------------------------------------------

def frechet_scipy(mu1, s1, mu2, s2):
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def make_frechet():
    rng = np.random.default_rng(7)
    d = 6
    a = rng.standard_normal((d, d))
    b = rng.standard_normal((d, d))
    s1 = a @ a.T + 0.5 * np.eye(d)
    s2 = b @ b.T + 0.5 * np.eye(d)
    mu1 = rng.standard_normal(d)
    mu2 = rng.standard_normal(d)
    fd = frechet_scipy(mu1, s1, mu2, s2)
    # Diagonal (commuting) covariances have the closed form |mu1-mu2|^2 + sum (sqrt a - sqrt b)^2.
    da = rng.uniform(0.5, 2.0, d)
    db = rng.uniform(0.5, 2.0, d)
    fd_diag = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(da) - np.sqrt(db)) ** 2))
    # Feature sets: Gaussian fit with numpy.cov (n-1), then scipy.
    x = rng.multivariate_normal(mu1, s1, size=40)
    y = rng.multivariate_normal(mu2, s2, size=40)
    fd_sets = frechet_scipy(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    print(f"frechet: general {fd:.12g}, diagonal {fd_diag:.12g}, sets {fd_sets:.12g}")
    save(os.path.join(HERE, "verify_frechet.safetensors"),
         {"mu1": mu1, "s1": s1, "mu2": mu2, "s2": s2, "diag1": da, "diag2": db, "x": x, "y": y},
         {"expected": json.dumps({"general": fd, "diagonal": fd_diag, "sets": fd_sets}), "made_by": "Fixtures/make_verify_fixtures.py"})


# --- schedule (after ADM's gaussian_diffusion.py and respace.py) ------------------------------

def linear_betas(n=1000):
    scale = 1000 / n
    return np.linspace(scale * 0.0001, scale * 0.02, n, dtype=np.float64)


def space_timesteps(num_timesteps, section_counts):
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        desired = int(section_counts[len("ddim"):])
        for i in range(1, num_timesteps):
            if len(range(0, num_timesteps, i)) == desired:
                return set(range(0, num_timesteps, i))
        raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
    section_counts = [int(x) for x in str(section_counts).split(",")]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        taken = []
        for _ in range(section_count):
            taken.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken
        start_idx += size
    return set(all_steps)


class Diffusion:
    """The parts of ADM's GaussianDiffusion (learned-range variance) the samplers use."""

    def __init__(self, betas):
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)


def respaced(use_timesteps, base_betas):
    base = Diffusion(base_betas)
    last = 1.0
    new_betas = []
    timestep_map = []
    for i, abar in enumerate(base.alphas_cumprod):
        if i in use_timesteps:
            new_betas.append(1 - abar / last)
            last = abar
            timestep_map.append(i)
    return Diffusion(np.array(new_betas)), np.array(timestep_map, dtype=np.int64)


SPACINGS = ["250", "100", "10", "ddim25", "ddim50"]


def make_schedule():
    betas = linear_betas()
    tensors = {"betas": betas}
    for s in SPACINGS:
        tensors[f"indices_{s}"] = np.array(sorted(space_timesteps(1000, s)), dtype=np.int64)
    d, tmap = respaced(space_timesteps(1000, "10"), betas)
    assert (tmap == tensors["indices_10"]).all()
    tensors.update({
        "r10_betas": d.betas, "r10_alphas_cumprod": d.alphas_cumprod,
        "r10_posterior_log_variance_clipped": d.posterior_log_variance_clipped,
        "r10_posterior_mean_coef1": d.posterior_mean_coef1, "r10_posterior_mean_coef2": d.posterior_mean_coef2,
    })
    print("schedule: indices_10", tensors["indices_10"].tolist())
    save(os.path.join(HERE, "verify_schedule.safetensors"), tensors, {"spacings": ",".join(SPACINGS), "made_by": "Fixtures/make_verify_fixtures.py"})


# --- sampler trajectories on the tiny fixture --------------------------------------------------

def guided_out(model, x, t, y, scale, null_class):
    """DiCo's forward_with_cfg on the state x (M samples): batch [x; x], labels [y; null]; the
    guided first 3 channels and the conditional half's other channels, for the first half.
    Model in float32 (as the Swift executor), the mixing in float64 (as the Swift sampler)."""
    import torch

    m = x.shape[0]
    xf = torch.from_numpy(x.astype(np.float32))
    with torch.inference_mode():
        if scale > 1:
            out = model(torch.cat([xf, xf]), torch.full((2 * m,), float(t)), torch.cat([y, torch.full((m,), null_class)])).double().numpy()
            cond, uncond = out[:m], out[m:]
            res = cond.copy()
            res[:, :3] = uncond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])
            return res
        return model(xf, torch.full((m,), float(t)), y).double().numpy()


def trajectory(model, spacing, kind, scale, labels, size, seed, null_class):
    import torch

    diff, tmap = respaced(space_timesteps(1000, spacing), linear_betas())
    rng = np.random.default_rng(seed)
    m = len(labels)
    shape = (m, 4, size, size)
    x = rng.standard_normal(shape)
    x_T = x.copy()
    noises, steps = [], []
    y = torch.tensor(labels, dtype=torch.int64)
    for i in reversed(range(diff.num_timesteps)):
        out = guided_out(model, x, tmap[i], y, scale, null_class)
        eps, v = out[:, :4], out[:, 4:]
        pred_xstart = diff.sqrt_recip_alphas_cumprod[i] * x - diff.sqrt_recipm1_alphas_cumprod[i] * eps
        if kind == "ddpm":
            min_log = diff.posterior_log_variance_clipped[i]
            max_log = np.log(diff.betas[i])
            frac = (v + 1) / 2
            log_var = frac * max_log + (1 - frac) * min_log
            mean = diff.posterior_mean_coef1[i] * pred_xstart + diff.posterior_mean_coef2[i] * x
            z = rng.standard_normal(shape)
            noises.append(z)
            x = mean + (1.0 if i != 0 else 0.0) * np.exp(0.5 * log_var) * z
        else:
            eps2 = (diff.sqrt_recip_alphas_cumprod[i] * x - pred_xstart) / diff.sqrt_recipm1_alphas_cumprod[i]
            abar_prev = diff.alphas_cumprod_prev[i]
            x = pred_xstart * np.sqrt(abar_prev) + np.sqrt(1 - abar_prev) * eps2
        steps.append(x.copy())
    return x_T, (np.stack(noises) if noises else np.zeros((0,) + shape)), np.stack(steps)


def make_sampler():
    import torch

    sys.path.insert(0, HERE)
    import dico_torch

    torch.set_num_threads(2)
    cfg = {"hidden_size": 24, "depths": [2, 1, 2, 1, 2], "mlp_ratio": 2, "in_channels": 4, "learn_sigma": True, "num_classes": 10}
    model = dico_torch.load_safetensors(os.path.join(HERE, "tiny.safetensors"), cfg)
    labels = [3, 7]
    tensors = {"labels": np.array(labels, dtype=np.int64)}
    runs = {"ddpm": ("5", "ddpm", 1.4, 11), "ddim": ("5", "ddim", 1.0, 12)}
    for name, (spacing, kind, scale, seed) in runs.items():
        x_T, noises, steps = trajectory(model, spacing, kind, scale, labels, 8, seed, 10)
        tensors[f"{name}_x_T"] = x_T
        tensors[f"{name}_noise"] = noises
        tensors[f"{name}_steps"] = steps
        print(f"sampler {name}: final std {steps[-1].std():.4f}, max |x| {np.abs(steps).max():.3f}")
    meta = {"runs": json.dumps({k: {"steps": v[0], "kind": v[1], "cfg": v[2], "seed": v[3]} for k, v in runs.items()}),
            "model": "tiny.safetensors", "size": "8", "torch": torch.__version__, "made_by": "Fixtures/make_verify_fixtures.py"}
    save(os.path.join(HERE, "verify_sampler.safetensors"), tensors, meta)


# --- corrupted models ----------------------------------------------------------------------

def corrupt(src, dst, kind):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    with safe_open(src, "np") as f:
        meta = f.metadata() or {}
    sd = load_file(src)
    if kind == "out-scale":
        for k in ("final_layer.out_proj.weight", "final_layer.out_proj.bias"):
            sd[k] = (sd[k].astype(np.float64) * 1.1).astype(np.float32)
    elif kind == "transpose-conv1":
        n = 0
        for k in list(sd):
            if k.endswith(".conv1.weight"):
                sd[k] = np.ascontiguousarray(sd[k].transpose(1, 0, 2, 3))
                n += 1
        print(f"transposed {n} conv1 weights")
    else:
        raise SystemExit(f"unknown corruption {kind}")
    meta = dict(meta)
    meta["corruption"] = kind
    save_file(sd, dst, metadata=meta)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "corrupt":
        corrupt(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    make_metrics()
    make_frechet()
    make_schedule()
    make_sampler()
    return 0


if __name__ == "__main__":
    sys.exit(main())
