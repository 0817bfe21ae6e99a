"""Reference PyTorch implementation of DiCo, built strictly from ../shared/DICO_MODEL.md.

State-dict names follow the official checkpoints exactly (e.g. ``x_embedder.proj.weight``,
``t_embedder_1.mlp.0.weight``, ``y_embedder.embedding_table_0.weight``,
``encoder_level_1.0.ca.1.weight``, ``up3_2.body.0.weight``, ``final_layer.out_proj.weight``).

Run ``python3 Fixtures/dico_torch.py`` to check the parameter counts of the presets
(built on the ``meta`` device, so no memory is used).

This file is a test/fixture helper used by Fixtures/make_fixtures.py and
scripts/bench_pytorch.py; it is run by hand, never by CI.
"""

import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FREQ_EMBED_SIZE = 256
LN_EPS = 1e-6

# name: (hidden C, depths [enc1, enc2, latent, dec2, dec1], mlp ratio)
PRESETS = {
    "S": (128, [5, 4, 4, 4, 4], 2),
    "B": (256, [5, 4, 4, 4, 4], 2),
    "L": (352, [9, 8, 9, 8, 9], 2),
    "XL": (416, [9, 9, 10, 9, 9], 2),
    "H": (416, [14, 12, 10, 12, 14], 4),
}

# Exact counts from the spec (H is only "about 1.04 B" there).
EXPECTED_PARAMS = {
    "S": 33_137_672,
    "B": 129_992_712,
    "L": 463_897_992,
    "XL": 701_151_368,
}


def layer_norm_channels(x):
    """LayerNorm over the channel axis of an NCHW tensor at every pixel.

    Mean and biased variance over C, eps 1e-6, no affine (as nn.LayerNorm(C,
    elementwise_affine=False, eps=1e-6) applied to the channels-last view).
    """
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), eps=LN_EPS).permute(0, 3, 1, 2)


def modulate(x, shift, scale):
    return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=FREQ_EMBED_SIZE):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, dtype=torch.float32, max_period=10000):
        """[cos(t*f_0..), sin(t*f_0..)], f_i = exp(-ln(10000) * i / half).

        Computed in ``dtype`` (float32 per the spec; float64 for the float64 reference).
        """
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(start=0, end=half, dtype=dtype, device=t.device) / half
        )
        args = t[:, None].to(dtype) * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        w = self.mlp[0].weight
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size, dtype=w.dtype)
        return self.mlp(t_freq)


class LabelEmbedder(nn.Module):
    """Three class-embedding tables (widths C, 2C, 4C) with num_classes + 1 rows.

    Row ``num_classes`` is the null class used for classifier-free guidance. No
    label dropout is applied here (inference only): the caller passes y = num_classes.
    """

    def __init__(self, num_classes, widths):
        super().__init__()
        self.num_classes = num_classes
        for i, k in enumerate(widths):
            setattr(self, f"embedding_table_{i}", nn.Embedding(num_classes + 1, k))

    def forward(self, y):
        return (
            self.embedding_table_0(y),
            self.embedding_table_1(y),
            self.embedding_table_2(y),
        )


class DiCoBlock(nn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        ffn = int(dim * mlp_ratio)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=True)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=True)
        self.conv3 = nn.Conv2d(dim, dim, 1, bias=True)
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim, 1, bias=True))
        self.conv4 = nn.Conv2d(dim, ffn, 1, bias=True)
        self.conv5 = nn.Conv2d(ffn, dim, 1, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, bias=True))

    def forward(self, inp, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = modulate(layer_norm_channels(inp), shift1, scale1)
        x = F.gelu(self.conv2(self.conv1(x)))  # exact (erf) GELU
        x = x * torch.sigmoid(self.ca(x))
        x = inp + gate1[:, :, None, None] * self.conv3(x)
        y = modulate(layer_norm_channels(x), shift2, scale2)
        y = self.conv5(F.gelu(self.conv4(y)))
        return x + gate2[:, :, None, None] * y


class Downsample(nn.Module):
    """3x3 conv n -> n/2 (no bias), then PixelUnshuffle(2): n/2 -> 2n channels."""

    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, 3, stride=1, padding=1, bias=False),
            nn.PixelUnshuffle(2),
        )

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv n -> 2n (no bias), then PixelShuffle(2): 2n -> n/2 channels."""

    def __init__(self, n_feat):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, 3, stride=1, padding=1, bias=False),
            nn.PixelShuffle(2),
        )

    def forward(self, x):
        return self.body(x)


class FinalLayer(nn.Module):
    def __init__(self, dim, out_channels):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim, bias=True))
        self.out_proj = nn.Conv2d(dim, out_channels, 3, padding=1, bias=True)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.out_proj(modulate(layer_norm_channels(x), shift, scale))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, stride=1, padding=1, bias=True)

    def forward(self, x):
        return self.proj(x)


class DiCo(nn.Module):
    def __init__(
        self,
        hidden_size=128,
        depths=(5, 4, 4, 4, 4),
        mlp_ratio=2,
        in_channels=4,
        learn_sigma=True,
        num_classes=1000,
    ):
        super().__init__()
        if len(depths) != 5:
            raise ValueError("depths must be [enc1, enc2, latent, dec2, dec1]")
        if hidden_size % 2:
            raise ValueError("hidden_size must be even (down1_2 maps C -> C/2)")
        C = hidden_size
        self.hidden_size = C
        self.depths = list(depths)
        self.mlp_ratio = mlp_ratio
        self.in_channels = in_channels
        self.learn_sigma = learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.num_classes = num_classes

        self.x_embedder = PatchEmbed(in_channels, C)
        self.t_embedder_1 = TimestepEmbedder(C)
        self.t_embedder_2 = TimestepEmbedder(2 * C)
        self.t_embedder_3 = TimestepEmbedder(4 * C)
        self.y_embedder = LabelEmbedder(num_classes, (C, 2 * C, 4 * C))

        d_enc1, d_enc2, d_lat, d_dec2, d_dec1 = self.depths
        self.encoder_level_1 = nn.ModuleList([DiCoBlock(C, mlp_ratio) for _ in range(d_enc1)])
        self.down1_2 = Downsample(C)
        self.encoder_level_2 = nn.ModuleList([DiCoBlock(2 * C, mlp_ratio) for _ in range(d_enc2)])
        self.down2_3 = Downsample(2 * C)
        self.latent = nn.ModuleList([DiCoBlock(4 * C, mlp_ratio) for _ in range(d_lat)])
        self.up3_2 = Upsample(4 * C)
        self.reduce_chan_level2 = nn.Conv2d(4 * C, 2 * C, 1, bias=True)
        self.decoder_level_2 = nn.ModuleList([DiCoBlock(2 * C, mlp_ratio) for _ in range(d_dec2)])
        self.up2_1 = Upsample(2 * C)
        self.reduce_chan_level1 = nn.Conv2d(2 * C, 2 * C, 1, bias=True)
        self.decoder_level_1 = nn.ModuleList([DiCoBlock(2 * C, mlp_ratio) for _ in range(d_dec1)])
        self.final_layer = FinalLayer(2 * C, self.out_channels)

    def config(self):
        return {
            "hidden_size": self.hidden_size,
            "depths": list(self.depths),
            "mlp_ratio": self.mlp_ratio,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "learn_sigma": self.learn_sigma,
            "num_classes": self.num_classes,
            "frequency_embedding_size": FREQ_EMBED_SIZE,
        }

    def forward(self, x, t, y):
        t1 = self.t_embedder_1(t)
        t2 = self.t_embedder_2(t)
        t3 = self.t_embedder_3(t)
        y1, y2, y3 = self.y_embedder(y)
        c1, c2, c3 = t1 + y1, t2 + y2, t3 + y3

        h = self.x_embedder(x)
        for blk in self.encoder_level_1:
            h = blk(h, c1)
        e1 = h
        h = self.down1_2(e1)
        for blk in self.encoder_level_2:
            h = blk(h, c2)
        e2 = h
        h = self.down2_3(e2)
        for blk in self.latent:
            h = blk(h, c3)

        h = self.up3_2(h)
        h = self.reduce_chan_level2(torch.cat([h, e2], dim=1))  # upsampled first, then skip
        for blk in self.decoder_level_2:
            h = blk(h, c2)

        h = self.up2_1(h)
        h = self.reduce_chan_level1(torch.cat([h, e1], dim=1))  # width 2C at full resolution
        for blk in self.decoder_level_1:
            h = blk(h, c2)

        return self.final_layer(h, c2)


# ---------------------------------------------------------------------------
# helpers


def config_from_preset(name, num_classes=1000, in_channels=4, learn_sigma=True):
    C, depths, r = PRESETS[name]
    return {
        "hidden_size": C,
        "depths": list(depths),
        "mlp_ratio": r,
        "in_channels": in_channels,
        "learn_sigma": learn_sigma,
        "num_classes": num_classes,
    }


def build(config, device=None, dtype=None):
    """Build a DiCo from a config dict (keys as DiCo.__init__; extra keys ignored)."""
    kw = {k: config[k] for k in ("hidden_size", "depths", "mlp_ratio", "in_channels", "learn_sigma", "num_classes") if k in config}
    if device is None:
        model = DiCo(**kw)
    else:
        with torch.device(device):
            model = DiCo(**kw)
    if dtype is not None:
        model = model.to(dtype)
    return model


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def strip_prefixes(state_dict, prefixes=("module.", "model.", "ema.")):
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k = k[len(p):]
                    changed = True
        out[k] = v
    return out


def load_safetensors(path, config, device="cpu", dtype=torch.float32, strict=True):
    """Load a DiCo from a safetensors file. Nothing is inferred: ``config`` is a dict
    (see DiCo.__init__ / config_from_preset) or a preset name."""
    from safetensors.torch import load_file

    if isinstance(config, str):
        config = config_from_preset(config)
    sd = strip_prefixes(load_file(path, device=device))
    model = build(config, device="meta")
    model = model.to_empty(device=device)
    model.load_state_dict(sd, strict=strict)
    return model.to(dtype).eval()


@torch.no_grad()
def init_random_(model, seed=0, adaln_std=0.5, bias_std=0.05, ca_gain=2.0):
    """Seeded, non-zero random values for EVERY tensor, scaled to keep activations O(1).

    - conv / linear weights ~ N(0, gain^2 / fan_in) (gain 1; depthwise fan_in = 9);
      the channel-attention conv ``ca.1`` uses gain ``ca_gain`` (2) because its input is a
      spatial mean (small spread), so that the sigmoid gate clearly varies per channel;
    - biases ~ N(0, bias_std^2);
    - embedding rows ~ N(0, 1);
    - adaLN linears ~ N(0, adaln_std^2 / fan_in), so (1 + scale), shift and gate terms
      are O(0.3-1) rather than zero (no zero-init: every path influences the output).

    Draws are made in ``named_parameters()`` order from one CPU torch.Generator, in
    float32, then copied into each tensor (so the values do not depend on dtype/device).
    """
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            std = bias_std
        elif "embedding_table" in name:
            std = 1.0
        else:
            fan_in = p[0].numel()  # in/groups * kh * kw for convs, in for linears
            if "adaLN_modulation" in name:
                gain = adaln_std
            elif ".ca." in name:
                gain = ca_gain
            else:
                gain = 1.0
            std = gain / math.sqrt(fan_in)
        v = torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=g)
        p.copy_(v)
    return model


def _check_presets():
    ok = True
    for name in PRESETS:
        m = build(config_from_preset(name), device="meta")
        n = param_count(m)
        exp = EXPECTED_PARAMS.get(name)
        if exp is None:
            print(f"DiCo-{name}: {n:,} parameters (spec: about 1.04 B)")
        else:
            status = "OK" if n == exp else f"MISMATCH (spec {exp:,})"
            ok &= n == exp
            print(f"DiCo-{name}: {n:,} parameters {status}")
    return ok


if __name__ == "__main__":
    import sys

    good = _check_presets()
    sys.exit(0 if good else 1)
