"""Per-stream state of the temporal model: the previous restored frame, and when to forget it.

The temporal network (network.NetworkConfig.history_channels) restores frame k from the degraded
frame k and the restored frame k-1 (causal: no future frame, no added latency). The state is that
one uint8 frame, an explicit input of every backend and of the exported graph. It is dropped
(a reset: the next frame is restored as a first frame, with previous = the frame itself) when the
picture it holds no longer describes the scene:

    size      the frame size changed;
    cut       a scene cut: the 1/16-scale luma of this degraded frame differs from the last one by
              more than CUT_LEVELS on average (noise, rain and grain average out at that scale);
    gap       the timestamps jump by more than GAP_FRAMES frame intervals, forward (lost frames) or
              back (a seek); smaller steps back are timestamp jitter (files whose muxer wrote B-frame
              timestamps out of order, e.g. OpenCV's box.mp4), not a seek;
    corrupt   the source skipped frames it could not decode just before this one;
    reconnect a live source reconnected just before this one.

Every reset is counted by reason, and the counts go into the run's report.
"""
from __future__ import annotations

import time
from collections import Counter

import cv2
import numpy as np

CUT_LEVELS = 24.0  # mean absolute difference of 1/16-scale luma, 8-bit levels
GAP_FRAMES = 4.0  # a jump in time of more than this many frame intervals is a gap (or a seek)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> 1/16-scale luma (BT.601 weights), float32: what cut detection compares."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // 16), max(1, h // 16)), interpolation=cv2.INTER_AREA).astype(np.float32)
    return small @ np.float32([0.299, 0.587, 0.114])


class StreamHistory:
    """The previous restored frame of one stream, with the reset rules of the module docstring.

    h.previous_for(image, pts_seconds, discontinuity) -> the previous restored frame, or None when this
    frame starts afresh; then h.remember(restored). h.resets counts resets by reason. With a `fusion`
    stage (streamrestore.runtime.fusion.RecursiveFusion, after the model), h.fuse(restored, fresh) runs it,
    starting it afresh where `fresh` (previous_for said None for that frame). The runtime fuses in each
    feed's writer thread, frames in order, while the engine goes on with the next frame's model call, so
    the fusion is reset through `fresh` with the frame it belongs to, never from the engine's side.
    """

    def __init__(self, fusion=None) -> None:
        self.fusion = fusion
        self.resets: Counter = Counter()
        self._previous: np.ndarray | None = None
        self._thumb: np.ndarray | None = None
        self._time: float | None = None
        self._interval: float | None = None

    def reset(self, reason: str | None = None) -> None:
        """Forget the state; count it under `reason` when there was one to forget."""
        if reason and self._previous is not None:
            self.resets[reason] += 1
        self._previous = self._thumb = self._time = None

    def previous_for(self, image: np.ndarray, seconds: float | None = None,
                     discontinuity: str | None = None) -> np.ndarray | None:
        thumb = thumbnail(image)
        reason = discontinuity or self._change(image, thumb, seconds)
        if reason:
            self.reset(reason)
        self._track_time(seconds)
        self._thumb = thumb
        return self._previous

    def remember(self, restored: np.ndarray) -> None:
        self._previous = restored

    def fuse(self, restored: np.ndarray, fresh: bool) -> np.ndarray:
        """The fusion stage's output for this frame (the restored frame itself without one); `fresh`: this
        frame starts the stream's state afresh (previous_for gave None for it)."""
        if self.fusion is None:
            return restored
        if fresh:
            self.fusion.reset()
        return self.fusion(restored)

    def _change(self, image: np.ndarray, thumb: np.ndarray, seconds: float | None) -> str | None:
        if self._previous is None:
            return None
        if self._previous.shape != image.shape:
            return "size"
        if seconds is not None and self._time is not None:
            step = seconds - self._time
            if self._interval and abs(step) > GAP_FRAMES * self._interval:
                return "gap"
        if self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > CUT_LEVELS:
            return "cut"
        return None

    def _track_time(self, seconds: float | None) -> None:
        """Keep the last time and a running frame interval (the smallest positive step seen lately)."""
        if seconds is not None and self._time is not None and seconds > self._time:
            step = seconds - self._time
            self._interval = step if self._interval is None else min(step, 0.9 * self._interval + 0.1 * step)
        self._time = seconds


def stream_state(backend, fusion: bool = False) -> StreamHistory | None:
    """A new stream's state: None when each frame is restored alone (a one-frame model, no fusion)."""
    if not (fusion or getattr(backend, "temporal", False)):
        return None
    from streamrestore.runtime.fusion import RecursiveFusion

    # a model on a GPU: the fusion's full-size warp and blend run there too, when this process sees it (a
    # cluster's feed actor restores on a remote engine's GPU but may have none itself)
    device = "cuda" if getattr(backend, "device", None) == "cuda" and _cuda_here() else None
    return StreamHistory(RecursiveFusion(device=device) if fusion else None)


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


def mark_reconnect(frame, source, seen: int) -> int:
    """Set frame.discontinuity to "reconnect" when a live `source` reconnected since the count `seen`
    taken at the frame before (files mark frames after undecodable packets themselves); returns the count now."""
    now = getattr(source, "reconnects", 0)
    if now != seen:
        frame.discontinuity = frame.discontinuity or "reconnect"
    return now


def frame_seconds(frame) -> float | None:
    """A DecodedFrame's presentation time in seconds, or None (still images)."""
    return float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None


def restore_with_history(backend, frames: list, histories: list[StreamHistory], fuse: bool = True) -> np.ndarray:
    """Restore DecodedFrames of one size, each from a different stream, keeping each stream's state:
    a temporal backend gets each frame's previous restored frame (the frame itself after a reset), and
    each frame's `state_reset` says whether its stream started afresh there. fuse: each stream's fusion
    stage, if any, runs on the result here (its milliseconds go into each frame's timings as "fusion");
    false: the caller runs it (streamrestore.runtime.pipeline: in each feed's writer, fuse_restored).
    Returns (N, H, W, 3) uint8."""
    kept = [history.previous_for(frame.image, frame_seconds(frame), frame.discontinuity)
            for frame, history in zip(frames, histories)]
    images = np.stack([frame.image for frame in frames])
    if getattr(backend, "temporal", False):  # no state: the frame itself (the reset convention)
        restored = backend(images, np.stack([f.image if k is None else k for f, k in zip(frames, kept)]))
    else:
        restored = backend(images)
    for history, image, frame, previous in zip(histories, restored, frames, kept):
        history.remember(image)
        frame.state_reset = previous is None
    if not fuse:
        return restored
    return np.stack([fuse_restored(history, image, frame) for history, image, frame in zip(histories, restored, frames)])


def fuse_restored(history: StreamHistory, restored: np.ndarray, frame) -> np.ndarray:
    """The stream's fusion stage on one restored frame (restore_with_history set frame.state_reset), timed
    into frame.timings["fusion"]; the restored frame itself when the stream has no fusion stage."""
    if history.fusion is None:
        return restored
    start = time.perf_counter()
    fused = history.fuse(restored, fresh=frame.state_reset)
    frame.timings["fusion"] = (time.perf_counter() - start) * 1e3
    return fused
