"""uint8 frames in, uint8 frames out: the frame path around Algorithm 3 (DESIGN.md sections 1 and 4).

`RestoreFrames` is what every engine runs: the torch backend calls it (eagerly or through
torch.compile) and the ONNX export traces it, so the ONNX Runtime, OpenVINO and TensorRT graphs
are this code. Normalise uint8 RGB to [0, 1], replicate-pad to the network's multiple, sample
(streamrestore.model.sampler.sample, the only Algorithm 3), crop, round to uint8. The noise is an input:
one z per step, (N, 3, Hp, Wp) with Hp, Wp the padded size (`noise_shape`), so a graph needs no
random numbers and the pad amounts come from the noise's shape rather than a modulo.
uint8 is only cast, never transposed or padded (TensorRT takes uint8 into a Cast and nowhere else).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from streamrestore.model.sampler import sample


def padded(size: int, multiple: int) -> int:
    """`size` rounded up to a multiple of `multiple`."""
    return -(-size // multiple) * multiple


def noise_shape(steps: int, batch: int, height: int, width: int, multiple: int) -> tuple[int, ...]:
    """(M, N, 3, Hp, Wp): one z per step for frames of (N, height, width, 3)."""
    return (steps, batch, 3, padded(height, multiple), padded(width, multiple))


def normalised(frames: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) 0-255 -> float (N, 3, Hp, Wp) in [0, 1], replicate-padded to `like`'s last two sizes."""
    x = frames.float()  # cast first, shapes from the float tensor: no uint8 Shape node in a traced graph
    h, w = x.shape[1], x.shape[2]
    x = x.permute(0, 3, 1, 2).div(255)
    pad = (0, like.shape[-1] - w, 0, like.shape[-2] - h)
    return F.pad(x, pad, mode="replicate")


class RestoreFrames(nn.Module):
    """frames (N, H, W, 3) uint8, noise (M steps of (N, 3, Hp, Wp)) [, previous (N, H, W, 3) uint8]
    -> (N, H, W, 3) uint8 by Algorithm 3 with the ConsistencyModel `model`.

    previous: a temporal model's previous restored frame per frame (streamrestore.runtime.temporal); a one-frame
    model ignores it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # the step count is the noise's: one z per step

    def forward(self, frames: torch.Tensor, noise, previous: torch.Tensor | None = None) -> torch.Tensor:
        frames = frames.float()
        h, w = frames.shape[1], frames.shape[2]
        mu = normalised(frames, noise[0])
        history = normalised(previous, noise[0]) if previous is not None and self.model.is_temporal else None
        out = sample(self.model, self.model.schedule, mu, noise, previous=history, second_time=self.model.second_time)
        out = out[:, :, :h, :w].clamp(0, 1).mul_(255).round_()
        return out.permute(0, 2, 3, 1).to(torch.uint8).contiguous()
