"""A recording read at its own frame rate, as a camera would send it (`run --realtime`; FFmpeg's input
option `-re`, "read input at native frame rate", does the same for ffmpeg): to try a live set-up, its
latency and its cluster, on a file.

Frame k is given no earlier than t_0 + (pts_k - pts_0) * time_base, t_0 the time the first frame was
decoded; a frame decoded late is given at once and the next ones keep the same schedule (nothing is
dropped or skipped: every frame of the file, paced). Its `captured_at` is when it is given, so the
reported latency counts from there, as for a camera's frame."""
from __future__ import annotations

import threading
import time
from typing import Iterator

from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, FrameSource, StreamInfo


class RealtimeSource:
    """`source` (a video: frames with pts) given at its presentation times."""

    def __init__(self, source: FrameSource) -> None:
        if source.info.time_base is None:
            source.close()
            raise UserError(f"--realtime: {source.info.name} holds images, which have no frame rate; give a "
                            "video file or leave --realtime out")
        self.source = source
        self.info: StreamInfo = source.info
        self._closed = threading.Event()

    @property
    def skipped(self) -> int:
        return self.source.skipped

    @property
    def dropped(self) -> int:
        return self.source.dropped

    @property
    def i420(self) -> bool:
        return self.source.i420  # AttributeError when the source gives RGB only: hasattr() says False

    @i420.setter
    def i420(self, value: bool) -> None:
        self.source.i420 = value

    def __iter__(self) -> Iterator[DecodedFrame]:
        start = first = None
        for frame in self.source:
            if frame.pts is not None and frame.time_base is not None:
                if start is None:
                    start, first = time.monotonic(), frame.pts
                wait = start + float((frame.pts - first) * frame.time_base) - time.monotonic()
                if wait > 0 and self._closed.wait(wait):
                    return
                frame.captured_at = time.monotonic()
            yield frame

    def close(self) -> None:
        """Stops a wait for a frame's time at once (from any thread), then closes the source."""
        self._closed.set()
        self.source.close()
