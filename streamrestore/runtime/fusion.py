"""Motion-compensated recursive fusion after the one-frame restore (design (c) of issue 12).

Each restored frame is blended with the previous fused output, warped onto it by optical flow:

    fused_k = w * warp(fused_{k-1}) + (1 - w) * restored_k,     0 <= w <= max_weight

a per-pixel recursive (Kalman-style) temporal filter with motion compensation, as in the classic
motion-compensated recursive video denoisers (Dubois & Sabri 1984; Brailean et al. 1995, "Noise
reduction filters for dynamic image sequences: a review"). Per pixel, w is the scalar Kalman gain
for a static signal seen through white noise: with n the effective number of frames already
averaged there, w = n / (n + 1), capped at max_weight (so memory is bounded: at 0.8 the filter
settles at an average of 9 frames), and after the blend n <- 1 / (w^2 / n + (1 - w)^2).
w is multiplied by a gate that falls to 0 where the warped history cannot be trusted, so moving
objects do not ghost:

- disagreement: the luma of the warped history and of the current frame differ by more than
  the residual noise explains (a ramp from `agree` to 2 * `agree` times the frame's robust noise
  scale, 1.4826 * median |difference|, kept within [noise_floor, noise_ceiling] levels);
- occlusion: the forward-backward flow check of Sundaram, Brox & Keutzer (ECCV 2010),
  |f(x) + b(x + f(x))|^2 > 0.01 (|f|^2 + |b|^2) + 0.5, and flow that points out of the frame.

Flow is OpenCV's DIS (Kroeger, Timofte, Dai & Van Gool, "Fast Optical Flow using Dense Inverse
Search", ECCV 2016) on 8-bit luma at `flow_scale` of the frame size, from the current restored
frame to the previous fused output, set to 0 where no motion explains the two frames as well
(within `still_margin` levels): on still content noise makes DIS wander by fractions of a pixel,
and warping by that frame after frame blurs the history. The gate and n live at flow scale too,
so the full-size work is one warp (bicubic: bilinear blurs the history a little at each
step) and one blend. Causal: nothing waits for a later frame. A new frame size starts afresh; every
other reason to forget the state (cuts, gaps, seeks, corrupt frames, reconnects) is decided,
counted and applied by streamrestore.runtime.temporal.StreamHistory, which holds this stage for its stream.

With `device` (a torch device, "cuda" where the model runs on a GPU), the full-size work, the warp
(torch.nn.functional.grid_sample, bicubic with the same a = -0.75 as OpenCV, edges replicated) and the
blend, runs there and the fused history stays there; flow, gate and weights stay on the host at
flow scale. The result is the host path's up to interpolation rounding (OpenCV quantises the map to
1/32 pixel): tests/test_fusion.py.

The defaults were chosen on the built-in sample clip (streamrestore.io.sample, still camera) and
on a hand-held variant of it (a random camera path), restored by the shipped one-frame models;
never on the clips benchmarks/temporal.py scores.
"""
from __future__ import annotations

import cv2
import numpy as np

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def _luma(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) RGB -> BT.601 luma resized (area) to size = (width, height), float32."""
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if image.shape[1::-1] != size else image
    return cv2.cvtColor(small.astype(np.float32, copy=False), cv2.COLOR_RGB2GRAY)


def _grid(width: int, height: int) -> np.ndarray:
    """(H, W, 2) float32 pixel coordinates (x, y): the identity map of cv2.remap."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.dstack([xs, ys])


def _squared_norm(vectors: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 -> (H, W) x^2 + y^2 (cv2.transform sums the channels, faster than numpy's sum(-1))."""
    return cv2.transform(vectors * vectors, np.ones((1, 2), np.float32))


class RecursiveFusion:
    """f = RecursiveFusion(); fused = f(restored) frame after frame; f.reset() forgets the state.

    restored: (H, W, 3) uint8 RGB, the one-frame (or temporal) model's output for this frame.
    Returns (H, W, 3) uint8 RGB.
    """

    def __init__(self, max_weight: float = 0.8, agree: float = 1.5, noise_floor: float = 1.0,
                 noise_ceiling: float = 8.0, flow_scale: float = 0.5, preset: str = "ultrafast",
                 occlusion_check: bool = True, still_margin: float = 0.5, cubic: bool = True,
                 device: str | None = None):
        if not 0.0 <= max_weight < 1.0:
            raise ValueError(f"max_weight {max_weight}: must be in [0, 1)")
        if not 0.0 < flow_scale <= 1.0:
            raise ValueError(f"flow_scale {flow_scale}: must be in (0, 1]")
        if preset not in PRESETS:
            raise ValueError(f"preset {preset!r}: use one of {', '.join(PRESETS)}")
        self.max_weight, self.agree, self.flow_scale = max_weight, agree, flow_scale
        self.noise_range = (noise_floor, noise_ceiling)
        self.occlusion_check, self.still_margin = occlusion_check, still_margin
        self.interpolation = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
        self.flow = cv2.DISOpticalFlow_create(PRESETS[preset])
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next frame is passed through and starts a new average."""
        self._fused = self._luma = self._count = None

    def __call__(self, restored: np.ndarray) -> np.ndarray:
        if restored.dtype != np.uint8 or restored.ndim != 3 or restored.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {restored.dtype} {restored.shape}")
        if self._fused is None or self._fused.shape != restored.shape:
            self._start(restored)
            return restored
        return self._fuse(restored)

    def _start(self, restored: np.ndarray) -> None:
        h, w = restored.shape[:2]
        self._small = (max(8, round(w * self.flow_scale)), max(8, round(h * self.flow_scale)))
        self._grid_small, self._grid = _grid(*self._small), _grid(w, h)
        self._fused = (restored.astype(np.float32) if self.device is None
                       else _DeviceBlend(restored, self._small, self.device, self.interpolation))
        self._luma = _luma(restored, self._small)
        self._count = np.ones(self._small[::-1], np.float32)

    def _fuse(self, restored: np.ndarray) -> np.ndarray:
        """One step: flow, gate, Kalman-style weight at flow scale; warp and blend at full size."""
        luma = _luma(restored, self._small)
        now, before = luma.astype(np.uint8), self._luma.astype(np.uint8)
        flow = self._still(self.flow.calc(now, before, None), luma)  # where each pixel was in the previous output
        where = self._grid_small + flow
        warped_luma = cv2.remap(self._luma, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = self._gate(luma, warped_luma) * self._trusted(flow, where, now, before)
        count = cv2.remap(self._count, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight *= np.minimum(self.max_weight, count / (count + 1.0))
        self._count = 1.0 / (weight * weight / count + (1.0 - weight) ** 2)
        self._luma = luma + weight * (warped_luma - luma)

        if self.device is not None:
            return self._fused.step(restored, flow, weight)
        h, w = restored.shape[:2]
        scale = (w / self._small[0], h / self._small[1], 0.0, 0.0)
        full_where = cv2.add(self._grid, cv2.multiply(cv2.resize(flow, (w, h)), scale))
        warped = cv2.remap(self._fused, full_where, None, self.interpolation, borderMode=cv2.BORDER_REPLICATE)
        full_weight = cv2.resize(weight, (w, h))
        # restored + w (warped - restored): exact where it should be (cv2.blendLinear divides by w1 + w2 + 1e-5,
        # which put x.5 just below and rounded every tie down, -0.2 level on the first blended frame)
        current = restored.astype(np.float32)
        change = cv2.subtract(warped, current)
        cv2.multiply(change, cv2.merge([full_weight] * 3), dst=change)
        self._fused = cv2.add(current, change)
        return cv2.convertScaleAbs(self._fused)  # rounds to nearest (ties to even) and saturates to uint8

    def _still(self, flow: np.ndarray, luma: np.ndarray) -> np.ndarray:
        """The flow, set to 0 where no motion explains the frames as well (3x3 mean |difference|):
        noise makes flow wander by fractions of a pixel on still content, and warping by it
        frame after frame would blur the history."""
        warped = cv2.remap(self._luma, self._grid_small + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        moved = cv2.blur(cv2.absdiff(luma, warped), (3, 3))
        still = cv2.blur(cv2.absdiff(luma, self._luma), (3, 3))
        return flow * (still > moved + self.still_margin)[..., None]

    def _gate(self, luma: np.ndarray, warped_luma: np.ndarray) -> np.ndarray:
        """1 where |luma difference| (3x3 mean) is within `agree` x the robust noise scale, 0 beyond twice that."""
        difference = cv2.blur(cv2.absdiff(luma, warped_luma), (3, 3))
        noise = 1.4826 * float(np.median(difference[::2, ::2]))
        noise = min(max(noise, self.noise_range[0]), self.noise_range[1])
        low = self.agree * noise
        gate = np.clip((2.0 * low - difference) / low, 0.0, 1.0)
        return cv2.erode(gate, None)  # a pixel next to a rejected one is rejected too: no halo at moving edges

    def _trusted(self, flow: np.ndarray, where: np.ndarray, now: np.ndarray, before: np.ndarray) -> np.ndarray:
        """1 where the flow points inside the frame and passes the forward-backward check, else 0."""
        width, height = self._small
        x, y = where[..., 0], where[..., 1]
        trusted = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        if self.occlusion_check:
            backward = cv2.remap(self.flow.calc(before, now, None), where, None, cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            error = flow + backward
            bound = 0.01 * (_squared_norm(flow) + _squared_norm(backward)) + 0.5
            trusted &= _squared_norm(error) <= bound
        return trusted.astype(np.float32)


class _DeviceBlend:
    """The fused history on a torch device, and RecursiveFusion's full-size step there: warp the history by
    the flow (scaled up from flow scale as cv2.resize does: bilinear, pixel centres aligned), blend with
    the restored frame by the weight (scaled up the same way); uint8 back to the host."""

    def __init__(self, restored: np.ndarray, small: tuple[int, int], device: str, interpolation: int):
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.mode = "bicubic" if interpolation == cv2.INTER_CUBIC else "bilinear"
        self.shape = restored.shape
        h, w = restored.shape[:2]
        self.fused = self._upload(restored)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=self.device),
                                torch.arange(w, dtype=torch.float32, device=self.device), indexing="ij")
        self.grid = torch.stack([xs, ys], dim=-1)[None]  # (1, H, W, 2) pixel coordinates (x, y)
        self.to_unit = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=self.device)
        self.flow_scale = torch.tensor([w / small[0], h / small[1]], device=self.device)  # flow scale -> full size

    def _upload(self, image: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()

    def _full_size(self, small: np.ndarray):
        """(h, w, C) or (h, w) float32 at flow scale -> (1, C, H, W) on the device, resized as cv2.resize does."""
        t = self.torch.from_numpy(np.ascontiguousarray(small)).to(self.device)
        t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
        return self.torch.nn.functional.interpolate(t, size=self.shape[:2], mode="bilinear", align_corners=False)

    def step(self, restored: np.ndarray, flow: np.ndarray, weight: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            motion = self._full_size(flow)[0].permute(1, 2, 0)[None] * self.flow_scale  # (1, H, W, 2)
            where = (self.grid + motion) * self.to_unit - 1.0  # grid_sample's [-1, 1], pixel centres at the ends
            warped = torch.nn.functional.grid_sample(self.fused, where, mode=self.mode, padding_mode="border",
                                                     align_corners=True)
            current = self._upload(restored)
            self.fused = current + self._full_size(weight) * (warped - current)  # as the host's blend
            out = self.fused.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
            return out.cpu().numpy()
