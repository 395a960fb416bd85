"""`Restorer`: the Python entry point, restoring uint8 RGB frames with a shipped or given checkpoint."""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from streamrestore.backends.base import check_batch
from streamrestore.backends.registry import create_backend
from streamrestore.io.base import DecodedFrame
from streamrestore.runtime.temporal import StreamHistory, restore_with_history, stream_state

_MICROSECOND = Fraction(1, 1_000_000)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    """`frame` as an array; ValueError for anything but (H, W, 3) or (N, H, W, 3) uint8 RGB with N, H, W > 0."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim not in (3, 4) or frame.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB of shape (H, W, 3) or (N, H, W, 3), got {frame.dtype} {frame.shape}")
    check_batch(frame[None] if frame.ndim == 3 else frame)
    return frame


class Restorer:
    """r = Restorer(task="derain", steps=1, device="cpu"); out = r(frame).

    frame: (H, W, 3) or (N, H, W, 3) uint8 RGB of any size; out has the same shape and dtype.
    r(frame) restores every frame on its own (the one-frame model). For video, `r.stream()` keeps each
    stream's temporal state (streamrestore.runtime.temporal: the motion-compensated recursive fusion after the
    model, and the previous restored frame for the task's video model where one is shipped):

        with r.stream() as s:
            for frame in frames:
                out = s(frame)        # or s(frame, seconds=pts) so jumps in time reset the state

    weights: a checkpoint path, used for both (default: the task's shipped one-frame model, and for
    `stream()` its video model where one is shipped). temporal=False: `stream()` restores each frame
    alone. noise: fixed | fresh | zero (default: what the checkpoint's model card recommends).
    backend: torch | onnxruntime | tensorrt | openvino | auto. precision: fp32 | fp16 | bf16 | int8
    (overrides fp16; streamrestore.backends.registry.PRECISIONS says which backend runs which).
    second_time: where steps after the first re-noise to (default: the model card's, else T/2).
    self_ensemble: restore each frame in its 8 flips and rotations (derain: 4, kept upright) and average
    them (8x or 4x the work; streamrestore.backends.self_ensemble).
    """

    def __init__(self, task: str = "derain", steps: int = 1, device: str = "cpu", weights: str | None = None,
                 noise: str | None = None, backend: str = "torch", fp16: bool | None = None, temporal: bool = True,
                 precision: str | None = None, calibration: str | None = None, second_time: int | None = None,
                 self_ensemble: bool = False):
        self._options = dict(backend=backend, device=device, steps=steps, noise=noise, weights=weights, fp16=fp16,
                             precision=precision, calibration=calibration, second_time=second_time,
                             self_ensemble=self_ensemble)
        self.task, self.temporal = task, temporal
        self.backend = create_backend(task, **self._options)  # frames on their own: the one-frame model
        self._video_backend = None if weights is None else self.backend

    @property
    def video_backend(self):
        """What `stream()` runs: the task's video model where one is shipped (built on first use)."""
        if self._video_backend is None:
            self._video_backend = create_backend(self.task, **self._options, temporal=True)
        return self._video_backend

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = _check_frame(frame)
        batch = frame[None] if frame.ndim == 3 else frame
        out = self.backend(batch)
        return out[0] if frame.ndim == 3 else out

    def stream(self, fusion: bool | None = None) -> "RestoreStream":
        """A stream's restorer; fusion=False leaves out the fusion stage (default: on when temporal)."""
        backend = self.video_backend if self.temporal else self.backend
        return RestoreStream(backend, stream_state(backend, fusion=self.temporal if fusion is None else fusion))


class RestoreStream:
    """One video stream through a Restorer: s(frame) restores (H, W, 3) uint8 RGB frames in order,
    each after the one before (a Restorer with temporal=False restores each alone); s.reset()
    forgets the state, as cuts, size changes and jumps in `seconds` do by themselves; s.resets counts
    the resets by reason."""

    def __init__(self, backend, history: StreamHistory | None):
        self.backend, self.history = backend, history
        self._index = 0

    @property
    def resets(self) -> dict:
        return dict(self.history.resets) if self.history is not None else {}

    def reset(self) -> None:
        if self.history is not None:
            self.history.reset()

    def __call__(self, frame: np.ndarray, seconds: float | None = None) -> np.ndarray:
        frame = _check_frame(frame)
        if frame.ndim != 3:
            raise ValueError(f"a stream takes one (H, W, 3) frame at a time, got {frame.shape}")
        if self.history is None:
            return self.backend(frame[None])[0]
        pts = None if seconds is None else round(seconds * 1_000_000)
        decoded = DecodedFrame(frame, self._index, pts=pts, time_base=None if pts is None else _MICROSECOND)
        self._index += 1
        return restore_with_history(self.backend, [decoded], [self.history])[0]

    def __enter__(self) -> "RestoreStream":
        return self

    def __exit__(self, *exc) -> None:
        self.reset()
