"""Frame sources and sinks, picked from the INPUT and OUTPUT strings of `streamrestore run`.

`open_source(spec)` and `open_sink(spec, info, ...)` are the only places that map a string to a
class: a folder or image file -> images, rtsp:// -> the live module, anything else -> a video file.
"""
from __future__ import annotations

import os
from pathlib import Path

from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, FrameSink, FrameSource, StreamInfo
from streamrestore.io.images import IMAGE_SUFFIXES, ImageSink, ImageSource, is_image_path

LIVE_SCHEMES = ("rtsp://", "rtsps://")

__all__ = ["DecodedFrame", "FrameSink", "FrameSource", "StreamInfo", "open_source", "open_sink",
           "check_output", "is_live"]


def is_live(spec: str) -> bool:
    return spec.lower().startswith(LIVE_SCHEMES)


def open_source(spec: str, *, realtime: bool = False, **live_options) -> FrameSource:
    """The source for INPUT: a folder or image file, an RTSP URL, `sample:TASK`, or a video file.
    `realtime`: a video given at its own frame rate (streamrestore.io.realtime; a camera already is)."""
    if is_live(spec):
        return _live_module().RtspSource(spec, **live_options)
    if spec.startswith("sample:") and not os.path.exists(spec):
        from streamrestore.io.sample import SampleClip

        source = SampleClip(spec.split(":", 1)[1])
    elif os.path.isdir(spec) or is_image_path(spec):
        source = ImageSource(spec)
    else:
        from streamrestore.io.video import VideoFileSource

        source = VideoFileSource(spec)
    if realtime:
        from streamrestore.io.realtime import RealtimeSource

        return RealtimeSource(source)
    return source


def open_sink(spec: str, info: StreamInfo, *, source: str | None = None, codec: str | None = None,
              crf: int | None = None, preset: str | None = None, tune: str | None = None,
              **live_options) -> FrameSink:
    """The sink for OUTPUT; `source` (INPUT) is where audio/subtitle streams are copied from.
    `preset` / `tune`: x264/x265 speed (streamrestore.io.encoding; None: the live or file default).

    OUTPUT forms: `clip.mp4` (any container FFmpeg writes), `image.png`, `folder` or `folder/`
    (PNG files), `folder/*.jpg` (files in another format), `rtsp://...` (live).
    """
    if is_live(spec):
        return _live_module().open_sink(spec, info, codec=codec, preset=preset, tune=tune, **live_options)
    folder, suffix = image_folder_target(spec, info)
    if folder is not None:
        return ImageSink(folder, single=False, suffix=suffix)
    if is_image_path(spec):
        return ImageSink(spec, single=True)
    if info.pix_fmt == "rgb24" and info.time_base is None:
        raise UserError(f"{spec}: images are written as images; give an image file or a folder as OUTPUT")
    from streamrestore.io.video import VideoFileSink

    copy_from = source if source and not is_live(source) and os.path.isfile(source) else None
    return VideoFileSink(spec, info, codec=codec, crf=crf, copy_from=copy_from, preset=preset, tune=tune)


def image_folder_target(spec: str, info: StreamInfo) -> tuple[str | None, str]:
    """(folder, suffix) when OUTPUT names a folder of images, else (None, "")."""
    path = Path(spec)
    if path.name.startswith("*.") and path.suffix.lower() in IMAGE_SUFFIXES:
        return str(path.parent), path.suffix.lower()
    many_images = info.time_base is None and (info.frames or 0) > 1
    if spec.endswith(("/", os.sep)) or path.is_dir() or (many_images and not path.suffix):
        return spec, ".png"
    return None, ""


def check_output(output: str, input_spec: str, *, overwrite: bool) -> None:
    """Refuse to write over the input, or over an existing output without --overwrite (one OUTPUT;
    streamrestore.io.outputs.check_writes is the guard for every file a run writes)."""
    from streamrestore.io.outputs import Read, Write, check_writes

    check_writes([Write("-o", output, frames=True)], [Read("the INPUT", input_spec)], overwrite=overwrite)


def _live_module():
    try:
        from streamrestore.io import rtsp
    except ImportError:
        raise UserError("RTSP input/output is not available in this build") from None
    return rtsp
