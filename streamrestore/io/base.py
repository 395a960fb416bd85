"""What flows between pipeline stages: decoded frames, stream facts, and the source/sink interface.

Sources (video file, image folder, RTSP camera) yield `DecodedFrame`s; sinks (video file, image
folder, RTSP publisher) take restored images together with the frame they came from, so the
frame's own pts and time base travel end to end (DESIGN.md section 7: never re-time from index).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator, Protocol

import numpy as np


@dataclass
class StreamInfo:
    """Facts about a video source that the sink must preserve."""

    width: int
    height: int
    time_base: Fraction | None = None
    average_rate: Fraction | None = None  # frames per second, None when unknown
    frames: int | None = None  # declared frame count, None when unknown or live
    is_live: bool = False
    colour: dict = field(default_factory=dict)  # colorspace/color_range/primaries/trc, as PyAV names them
    sample_aspect_ratio: Fraction | None = None
    name: str = ""  # file, folder or URL, for messages
    pix_fmt: str | None = None  # decoded pixel format as PyAV names it (e.g. "yuv420p10le")
    codec: str | None = None  # decoder name, for messages and the default encoder
    field_order: int = 0  # AVFieldOrder: 0 unknown, 1 progressive, 2 tt, 3 bb, 4 tb, 5 bt (interlaced)
    display_matrix: tuple[int, ...] | None = None  # how players rotate/flip it (FFmpeg's 3x3 int32 layout), if any


@dataclass
class DecodedFrame:
    """One frame: image is (H, W, 3) uint8 RGB; pts in time_base units (None for still images).

    With `ycbcr` set, image is instead the frame's decoded 8-bit 4:2:0 planes, I420 (3H/2, W) uint8 coded
    as `ycbcr` (streamrestore.io.ycbcr): a source gives frames so only when asked (its `i420` set true, by a
    run whose backend converts colour on its device: `takes_i420`); every sink takes both kinds."""

    image: np.ndarray
    index: int
    pts: int | None = None
    time_base: Fraction | None = None
    name: str | None = None  # file name, for image folders
    captured_at: float = 0.0  # time.monotonic() when the frame was decoded (or received live)
    duration: int | None = None  # in time_base units, None when unknown
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    discontinuity: str | None = None  # "corrupt" or "reconnect" when frames were lost just before this one
    ycbcr: object = None  # streamrestore.io.ycbcr.YCbCrFormat when image holds I420 planes
    state_reset: bool = False  # the runtime's: this frame's stream started its temporal state afresh here

    def rgb(self, image: np.ndarray | None = None) -> np.ndarray:
        """`image` (default: this frame's), a picture in this frame's form, as (H, W, 3) uint8 R'G'B'."""
        image = self.image if image is None else image
        if self.ycbcr is None:
            return image
        from streamrestore.io.ycbcr import i420_to_rgb

        return i420_to_rgb(image, self.ycbcr)


class FrameSource(Protocol):
    info: StreamInfo
    skipped: int  # frames lost to decode errors (counted, not fatal)
    dropped: int  # frames dropped by a latest-frame policy

    def __iter__(self) -> Iterator[DecodedFrame]: ...
    def close(self) -> None: ...


class FrameSink(Protocol):
    def write(self, image: np.ndarray, frame: DecodedFrame) -> None: ...
    # Finish (flush, rename into place); returns frames written. complete=False after an
    # interruption: what was written is finished as a valid file, copied audio cut at its end.
    def close(self, complete: bool = True) -> int: ...
    def abort(self) -> None: ...  # remove any partial output
