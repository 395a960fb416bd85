"""Restore a large frame in overlapping tiles, with bounded memory and the whole-frame result.

The network is local but for one thing: each NAFBlock's simplified channel attention takes the
mean of its features over the whole frame. So every sampling step goes over the tiles in passes:
pass k runs the network on each tile as far as the k-th NAFBlock (in the order the forward reaches
them), with the whole-frame means of the blocks before it already known, and sums that block's
features over the tile's core; the last pass, with every mean known, gives the origin estimate.
Cores partition the padded frame and start at multiples of the network's pad multiple; each
core's window reaches `receptive_radius` pixels (rounded up to the multiple) further, clipped to
the padded frame. So every core pixel sees the inputs, pixel-unshuffle and down-sampling grids,
zero-padded borders and channel means of the whole frame: the two results differ by float
summation order only.

Memory beyond the uint8 frames in and out: one window's activations, plus the origin estimate
between steps (steps > 1: 12 bytes a pixel) and the noise fields of the fixed and fresh policies
(NoisePolicy's whole-frame draw, 12 bytes a pixel a step, cropped per tile so the result is the
whole frame's); zero noise, the shipped models' default, needs none. Time: about (blocks + 1) / 2
whole-frame runs a step, since pass k stops at block k (7 blocks in the `small` network).

The blocks' `channel_mean` method is swapped per instance for the length of a pass (`_overridden`),
so the network itself stays unaware of tiles.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from streamrestore.model.network import NAFBlock
from streamrestore.model.sampler import sampling_times, step_input

TILE = 512  # side of a tile's core in pixels (its window adds the receptive radius each side)
TILE_ABOVE = 3840 * 2160  # frames with more pixels than 4K UHD are restored in tiles


def check_tile(tile: int | None) -> int:
    """`tile` as an int >= 0 (None: TILE; 0: never tile), or ValueError."""
    if tile is None:
        return TILE
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0:
        raise ValueError(f"tile={tile!r}: give the tile side in pixels (e.g. {TILE}), or 0 to restore whole frames")
    return tile


def tiled(shape: tuple[int, ...], tile: int | None) -> bool:
    """Whether frames of `shape` (N, H, W, 3) go through `restore_tiled` with this `tile` setting."""
    return bool(tile) and shape[1] * shape[2] > TILE_ABOVE


@dataclass(frozen=True)
class Window:
    """A tile in padded-frame pixels, (top, bottom, left, right): its core and the window around it."""
    core: tuple[int, int, int, int]
    box: tuple[int, int, int, int]


def windows(height: int, width: int, tile: int, halo: int) -> list[Window]:
    """Cores of side `tile` covering the padded (height, width), row by row, each with `halo` around it."""
    out = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            box = (max(top - halo, 0), min(bottom + halo, height), max(left - halo, 0), min(right + halo, width))
            out.append(Window((top, bottom, left, right), box))
    return out


class _PassDone(Exception):
    """The block being summed is reached: the rest of the network is not needed in this pass."""


class _ChannelMeans:
    """Every NAFBlock's channel_mean during a tiled step: the whole frame's mean where known; the first
    block without one adds its features' sums over the window's core and ends the pass."""

    def __init__(self) -> None:
        self.known: dict[nn.Module, torch.Tensor] = {}
        self.window: Window | None = None
        self.block: nn.Module | None = None
        self.sums: torch.Tensor | None = None
        self.scale = 1

    def __call__(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        if block in self.known:
            return self.known[block]
        top, bottom, left, right = self.window.core
        y0, y1, x0, _ = self.window.box
        self.scale = s = (y1 - y0) // y.shape[2]
        core = y[:, :, (top - y0) // s:(bottom - y0) // s, (left - x0) // s:(right - x0) // s]
        part = core.sum((2, 3), dtype=torch.float64)
        self.block, self.sums = block, part if self.sums is None else self.sums + part
        raise _PassDone

    def finish(self, height: int, width: int) -> None:
        """The summed block's mean over the padded (height, width) frame."""
        count = (height // self.scale) * (width // self.scale)
        self.known[self.block] = (self.sums / count).float()[:, :, None, None]
        self.block, self.sums = None, None


@contextlib.contextmanager
def _overridden(model: nn.Module, means: _ChannelMeans):
    blocks = [m for m in model.modules() if isinstance(m, NAFBlock)]
    for block in blocks:
        block.channel_mean = functools.partial(means, block)  # an instance attribute hides the method
    try:
        yield
    finally:
        for block in blocks:
            del block.channel_mean


def _crop(frames: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Window `box` of the normalised, replicate-padded frames (what streamrestore.model.frames.normalised feeds the sampler)."""
    h, w = frames.shape[1:3]
    y0, y1, x0, x1 = box
    part = frames[:, y0:min(y1, h), x0:min(x1, w)].permute(0, 3, 1, 2).float().div_(255)
    pad = (0, x1 - min(x1, w), 0, y1 - min(y1, h))
    return F.pad(part, pad, mode="replicate") if any(pad) else part


def _origin_estimate(model, frames, previous, noise, x0, t, window: Window) -> torch.Tensor:
    """One sampling step of Algorithm 3 on a window (sampler.step_input, then the consistency function)."""
    y0, y1, x0_, x1 = window.box
    mu = _crop(frames, window.box)
    z = torch.zeros_like(mu) if noise is None else noise[:, :, y0:y1, x0_:x1]
    x = step_input(model.schedule, mu, None if x0 is None else x0[:, :, y0:y1, x0_:x1], t, z)
    history = None if previous is None else _crop(previous, window.box)
    return model(x, mu, t, previous=history)


def _whole_frame_means(model, step, boxes: list[Window], height: int, width: int) -> _ChannelMeans:
    """The channel means of every NAFBlock over the whole padded frame, one pass over the tiles each."""
    means = _ChannelMeans()
    with _overridden(model, means):
        while True:
            for window in boxes:
                means.window = window
                try:
                    step(window)
                except _PassDone:
                    continue
                return means  # the network ran to its end: every mean is known
            means.finish(height, width)


@torch.inference_mode()
def restore_tiled(model, frames: torch.Tensor, noises: list[torch.Tensor | None],
                  previous: torch.Tensor | None = None, tile: int = TILE) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> uint8 (N, H, W, 3): streamrestore.model.frames.RestoreFrames in tiles of `tile` pixels.

    model: a ConsistencyModel; noises: one z per step, (N, 3, Hp, Wp) float32 with Hp, Wp the frame
    padded to the pad multiple, or None for zero noise; previous: a temporal model's previous restored
    frames, uint8 like frames. The result is the whole-frame one up to float rounding.
    """
    n, h, w = frames.shape[:3]
    multiple = model.network.pad_multiple
    hp, wp = h + -h % multiple, w + -w % multiple
    halo = -(-model.network.receptive_radius // multiple) * multiple
    boxes = windows(hp, wp, -(-tile // multiple) * multiple, halo)
    out = torch.empty_like(frames)
    x0 = None
    for i, (t_i, noise) in enumerate(zip(sampling_times(model.schedule.T, len(noises), model.second_time), noises)):
        t = torch.full((n,), t_i, dtype=torch.long, device=frames.device)
        step = functools.partial(_origin_estimate, model, frames, previous, noise, x0, t)
        means = _whole_frame_means(model, step, boxes, hp, wp)
        last = i == len(noises) - 1
        estimate = None if last else torch.empty((n, 3, hp, wp), device=frames.device)
        with _overridden(model, means):
            for window in boxes:
                (top, bottom, left, right), (y0, _, x0_, _) = window.core, window.box
                core = step(window)[:, :, top - y0:bottom - y0, left - x0_:right - x0_]
                if not last:
                    estimate[:, :, top:bottom, left:right] = core
                    continue
                core = core[:, :, :min(bottom, h) - top, :min(right, w) - left]
                out[:, top:min(bottom, h), left:min(right, w)] = (
                    core.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1))
        x0 = estimate
    return out
