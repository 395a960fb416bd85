"""A light conditional U-Net of NAFNet blocks (Chen et al., ECCV 2022) with a scale/shift time embedding.

The network is F(x, cond, t): it knows nothing of the SDE. Input x is (N, 3, H, W) and cond is
(N, 3 + history_channels, H, W) float images (the degraded frame, then for a temporal network the
previous restored frame), t is (N,) float time in [0, 1]; output is (N, 3, H, W). H and W must be multiples of
`pad_multiple` (callers pad and crop). The full-resolution work is one pixel-unshuffle, so the
cost per pixel stays small (`macs_per_pixel`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from streamrestore.choices import SIZE_NAMES


@dataclass(frozen=True)
class NetworkConfig:
    width: int = 16
    enc_blocks: tuple[int, ...] = (1, 1, 1)
    mid_blocks: int = 1
    dec_blocks: tuple[int, ...] = (1, 1, 1)
    time_dim: int = 64
    history_channels: int = 0  # extra condition channels after mu: 3 for the previous restored frame (temporal)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# Explicit registry of sizes: `small` for CPU real time (< 8 k MACs/pixel), `base` for the GPU.
SIZES = {
    "small": NetworkConfig(width=16, enc_blocks=(1, 1, 1), mid_blocks=1, dec_blocks=(1, 1, 1)),
    "base": NetworkConfig(width=32, enc_blocks=(1, 2, 2), mid_blocks=4, dec_blocks=(1, 1, 1)),
}
assert tuple(SIZES) == SIZE_NAMES, "streamrestore.choices.SIZE_NAMES names every size"


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels, computed in float32 (FP16 overflow guard, DESIGN.md s.7).

    Written channels-first (mean and biased variance over dim 1), not as layer_norm over a
    channels-last view: that view exported as transpose, LayerNormalization, transpose, 32
    transposes per graph that took 18-21 % of OpenVINO's time. Measured at 480p, 1 thread, same run
    (issue 16): OpenVINO bf16 p50 70.8 -> 44.3 ms, fp32 110 -> 84; onnxruntime 117 -> 99; torch
    eager 194 -> 169; outputs within 1 level.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels  # a Python int, so the exported graph gets a constant shape
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        centred = x32 - x32.mean(1, keepdim=True)
        variance = (centred * centred).mean(1, keepdim=True)
        y = centred / torch.sqrt(variance + 1e-6)  # the pattern OpenVINO fuses into one MVN
        return (y * self.weight.float() + self.bias.float()).to(x.dtype)


class SimpleGate(nn.Module):
    """NAFNet's SimpleGate: split channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block (Chen et al. 2022, Fig. 3c) with scale/shift from the time embedding after norm1."""

    def __init__(self, c: int, time_dim: int):
        super().__init__()
        self.norm1, self.norm2 = LayerNorm2d(c), LayerNorm2d(c)
        self.time = nn.Linear(time_dim, 2 * c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.dwconv = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.gate = SimpleGate()
        self.sca = nn.Conv2d(c, c, 1)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.ffn_in = nn.Conv2d(c, 2 * c, 1)
        self.ffn_out = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def channel_mean(self, y: torch.Tensor) -> torch.Tensor:
        """(N, C, 1, 1) mean of y over every position, in float32 (FP16 bodies). The block's one look at
        the whole frame: streamrestore.model.tiles swaps in the whole frame's means when it runs a tile."""
        return y.float().mean((2, 3), keepdim=True)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)
        y = self.norm1(x) * (1 + scale) + shift
        y = self.gate(self.dwconv(self.conv1(y)))
        y = y * self.sca(self.channel_mean(y).to(y.dtype))  # simplified channel attention
        x = x + self.conv3(y) * self.beta
        y = self.ffn_out(self.gate(self.ffn_in(self.norm2(x))))
        return x + y * self.gamma


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (Vaswani et al. 2017, section 3.5), shape (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ConditionalNAFUNet(nn.Module):
    """F(x, cond, t): concat(x, cond) -> pixel-unshuffle(2) -> NAF U-Net -> pixel-shuffle(2) -> 3 channels."""

    def __init__(self, config: NetworkConfig = SIZES["small"]):
        super().__init__()
        self.config = config
        w, td = config.width, config.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.intro = nn.Conv2d(6 * 4, w, 3, padding=1)
        # the previous restored frame enters through its own convolution of (previous - cond), added to
        # the intro's output: zero at the start (add_history_input), trainable at its own rate, and
        # silent whatever its weights when previous = cond (a stream's first frame, a reset)
        self.history_intro = nn.Conv2d(config.history_channels * 4, w, 3, padding=1, bias=False) if config.history_channels else None
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        for n in config.enc_blocks:
            self.encoders.append(nn.ModuleList([NAFBlock(w, td) for _ in range(n)]))
            self.downs.append(nn.Conv2d(w, 2 * w, 2, stride=2))
            w *= 2
        self.middle = nn.ModuleList([NAFBlock(w, td) for _ in range(config.mid_blocks)])
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in config.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(w, 2 * w, 1, bias=False), nn.PixelShuffle(2)))
            w //= 2
            self.decoders.append(nn.ModuleList([NAFBlock(w, td) for _ in range(n)]))
        self.ending = nn.Conv2d(w, 3 * 4, 3, padding=1)
        nn.init.zeros_(self.ending.weight)  # start as F = 0: the origin estimate begins at mu
        nn.init.zeros_(self.ending.bias)

    @property
    def is_temporal(self) -> bool:
        return self.config.history_channels > 0

    @property
    def pad_multiple(self) -> int:
        return 2 ** (len(self.config.enc_blocks) + 1)

    @property
    def receptive_radius(self) -> int:
        """Input pixels each side that an output pixel depends on, with the channel means held fixed:
        the scale of every 3x3 convolution and 2x2 down-convolution on the longest path (intro,
        encoder, middle, decoder, ending), plus 1 for the pixel-(un)shuffle (tests/test_tiles.py
        measures it by gradients)."""
        c = self.config
        scales = [2 ** (i + 1) for i in range(len(c.enc_blocks))]
        blocks = sum(s * (e + d) for s, e, d in zip(scales, c.enc_blocks, reversed(c.dec_blocks)))
        return 2 + blocks + sum(scales) + 2 * scales[-1] * c.mid_blocks + 2 + 1

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.config.time_dim).to(self.intro.weight.dtype))
        h = self.intro(F.pixel_unshuffle(torch.cat([x, cond[:, :3]], dim=1), 2))
        if self.history_intro is not None:
            h = h + self.history_intro(F.pixel_unshuffle(cond[:, 3:] - cond[:, :3], 2))
        skips = []
        for blocks, down in zip(self.encoders, self.downs):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = down(h)
        for block in self.middle:
            h = block(h, emb)
        for up, blocks, skip in zip(self.ups, self.decoders, reversed(skips)):
            h = up(h) + skip
            for block in blocks:
                h = block(h, emb)
        return F.pixel_shuffle(self.ending(h), 2)


def add_history_input(network: ConditionalNAFUNet, channels: int = 3) -> ConditionalNAFUNet:
    """A temporal copy of a one-frame network: `channels` more condition inputs whose convolution
    starts at zero, so it computes exactly what the one-frame network did until training moves it."""
    config = NetworkConfig.from_dict({**network.config.to_dict(), "history_channels": channels})
    temporal = ConditionalNAFUNet(config)
    state = {**network.state_dict(), "history_intro.weight": torch.zeros_like(temporal.history_intro.weight)}
    temporal.load_state_dict(state)
    return temporal


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_pixel(model: ConditionalNAFUNet, size: int = 256) -> float:
    """Multiply-accumulates of convolutions and linear layers per input pixel, counted with hooks."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        total += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, size, size)
            model(x, torch.zeros(1, 3 + model.config.history_channels, size, size), torch.zeros(1))
    finally:
        for h in hooks:
            h.remove()
    return total / (size * size)
