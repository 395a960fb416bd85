"""The one small interface every inference backend implements (DESIGN.md section 4).

A backend is a callable from a batch of frames to a batch of frames:

    frames: np.ndarray, shape (N, H, W, 3), dtype uint8, RGB  ->  same shape and dtype.

Any H and W are accepted (the backend pads to its multiple and crops back). After each call,
`last_timings` holds the milliseconds that call spent in "upload", "restore" and "download"
(host<->device copies are 0.0 on the CPU; CUDA stages are timed with CUDA events).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from streamrestore.errors import UserError


class Backend(Protocol):
    name: str  # "torch", "onnxruntime", "tensorrt", "passthrough"
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32" or "fp16"
    model: str  # what runs: e.g. "derain small irc m 1-step" or "identity"
    last_timings: dict[str, float]

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...

    # Optional, for overlap (CUDA double buffering): `submit` queues a batch and returns at once;
    # `Pending.result()` waits for it. A pipeline keeps two batches in flight only when the backend
    # says `asynchronous = True` (its submit really returns before the work is done).
    # def submit(self, frames: np.ndarray) -> Pending: ...
    # asynchronous: bool

    # Temporal models (`temporal = True`) also take `previous`, each frame's previous restored frame
    # (N, H, W, 3) uint8, the stream state of streamrestore.runtime.temporal: backend(frames, previous).


class BackendUnavailable(UserError):
    """The runtime a backend needs is not installed or has no such device: the message says what to install."""


@dataclass(frozen=True)
class LoadedModel:
    """What a backend runs, loaded once by the registry (streamrestore.backends.registry) for every
    backend it tries: the checkpoint, the noise policy (given, or the model card's) and the step count."""

    task: str
    path: Path
    model: object  # the ConsistencyModel, float32 on the CPU; a backend copies it where it runs
    steps: int
    noise: str  # fixed | fresh | zero (streamrestore.model.sampler.NoisePolicy)
    card: dict
    seed: int = 0

    @property
    def temporal(self) -> bool:
        return self.model.is_temporal

    @property
    def multiple(self) -> int:
        return self.model.network.pad_multiple

    @property
    def description(self) -> str:
        """What runs, as the run summary and the report say it."""
        from streamrestore.model.sampler import sampling_times

        size = self.card.get("architecture", {}).get("size", "?")
        steps = f"{self.steps}-step"
        if self.steps > 1:
            steps += f" (t = {', '.join(map(str, sampling_times(self.model.schedule.T, self.steps, self.model.second_time)))})"
        return f"{self.task} {size} {self.card.get('kind', 'ir-cm')} {steps}, {self.noise} noise ({self.path.name})"


class BackendBase:
    """What the model backends share: `submit` runs a batch with `run` and times the whole call as
    "restore" (a backend with real overlap, the torch one on CUDA, overrides it); calling the backend is
    submit(...).result() with the call's timings kept in `last_timings`."""

    asynchronous = False

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model, self.temporal = loaded.description, loaded.temporal
        self.last_timings = {"upload": 0.0, "restore": 0.0, "download": 0.0}

    def run(self, frames: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def submit(self, frames: np.ndarray, previous: np.ndarray | None = None) -> "Done":
        """Run one batch (N, H, W, 3) uint8 RGB (a temporal model also takes each frame's previous restored
        frame, same shape; the frames themselves when None)."""
        return self.timed_run(check_batch(frames, previous), previous)

    def timed_run(self, *args) -> "Done":
        """`run(*args)` done now, its whole time counted as "restore"."""
        start = time.perf_counter()
        out = self.run(*args)
        return Done(out, {"upload": 0.0, "restore": (time.perf_counter() - start) * 1e3, "download": 0.0})

    def __call__(self, frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        pending = self.submit(frames, previous)
        out = pending.result()
        self.last_timings = dict(pending.timings)
        return out


def check_batch(frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """`frames` as an array, or ValueError saying what is wrong: not (N, H, W, 3) uint8 RGB, an empty
    batch (N = 0) or frames with no pixels (H or W = 0), or `previous` not of the same shape."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected a batch of uint8 RGB frames of shape (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError(f"empty batch {frames.shape}: give at least one frame")
    if 0 in frames.shape[1:3]:
        raise ValueError(f"frames of {frames.shape[2]}x{frames.shape[1]} pixels (width x height): "
                         "each frame needs a height and width of at least 1")
    if previous is not None and np.shape(previous) != frames.shape:
        raise ValueError(f"previous frames of shape {np.shape(previous)} for frames of shape {frames.shape}: "
                         "give one previous frame per frame, of the same size")
    return frames


class Pending(Protocol):
    timings: dict[str, float]  # filled when result() returns

    def result(self) -> np.ndarray: ...


class Done:
    """A Pending whose result is already there (synchronous backends)."""

    def __init__(self, frames: np.ndarray, timings: dict[str, float]):
        self._frames, self.timings = frames, timings

    def result(self) -> np.ndarray:
        return self._frames


class PassthroughBackend:
    """The identity model (`--task passthrough`): measures the pipeline alone. It takes frames in the form they
    were decoded (`takes_i420`: 8-bit 4:2:0 as I420 planes, see io.base.DecodedFrame), so a passthrough
    converts no colour: the planes it read are the planes it encodes."""

    name = "passthrough"
    device = "cpu"
    precision = "uint8"
    model = "identity"
    temporal = False
    asynchronous = False
    takes_i420 = True

    def __init__(self) -> None:
        self.last_timings = {"upload": 0.0, "restore": 0.0, "download": 0.0}

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return check_batch(frames)

    def submit(self, frames: np.ndarray, ycbcr=None) -> Done:
        """The batch as it came: (N, H, W, 3) R'G'B', or I420 planes (N, 3H/2, W) when `ycbcr` is given."""
        if ycbcr is None:
            frames = self(frames)
        return Done(frames, dict(self.last_timings))
