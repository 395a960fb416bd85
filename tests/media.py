"""Tiny synthetic media for the tests, written with PyAV: clips with audio, odd sizes, variable
frame rate and 10-bit, and folders of images. Content is smooth (gradients and a blurred moving
square) so a lossless YCbCr round trip stays within a couple of levels."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# AVColorSpace / AVColorRange codes (ITU-T H.273) for tagging test clips.
BT709, BT601 = 1, 6
LIMITED, FULL = 1, 2


def synth_image(width: int, height: int, index: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB: gradients plus a blurred square that moves with `index`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([40 + 170 * xx / max(width - 1, 1), 40 + 170 * yy / max(height - 1, 1),
                      np.full_like(xx, 60 + 5 * index)], axis=-1)
    x0 = (3 * index) % max(width - 8, 1)
    image[height // 4: height // 4 + 8, x0: x0 + 8] = (200, 60, 160)
    return cv2.GaussianBlur(image, (0, 0), 1.5).round().clip(0, 255).astype(np.uint8)


def make_clip(path: str | Path, *, width: int = 64, height: int = 48, frames: int = 12, rate: int = 25,
              audio: bool = True, vfr: bool = False, pix_fmt: str = "yuv420p", codec: str = "libx264",
              colorspace: int = BT709, color_range: int = LIMITED, qp: int = 0) -> Path:
    """Write a clip (x264 at `qp` 0 is lossless at any bit depth); VFR clips use a 1/1000 time base
    with frame gaps cycling 20/40/80 ms."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=rate, options={"qp": str(qp)} if "x26" in codec else {})
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.colorspace, video.codec_context.color_range = colorspace, color_range
        video.codec_context.color_primaries = video.codec_context.color_trc = 1 if colorspace == BT709 else 6
        if vfr:
            video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        pts = clip_pts(frames, vfr, rate)
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        swscale = {"dst_colorspace": "ITU709" if colorspace == BT709 else "ITU601",
                   "dst_color_range": "MPEG" if color_range == LIMITED else "JPEG", "interpolation": "AREA"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(synth_image(width, height, i), format="rgb24")
            frame = frame.reformat(format=pix_fmt, **swscale)
            frame.pts = pts[i]
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            seconds = (pts[-1] + (40 if vfr else 1)) * (Fraction(1, 1000) if vfr else Fraction(1, rate))
            _write_tone(out, sound, float(seconds))
    return path


def clip_pts(frames: int, vfr: bool, rate: int = 25) -> list[int]:
    """Frame pts: 0..n-1 at constant rate; cumulative 20/40/80 ms gaps (1/1000 units) for VFR."""
    if not vfr:
        return list(range(frames))
    return [int(v) for v in np.cumsum([0] + [(20, 40, 80)[i % 3] for i in range(frames - 1)])]


def _write_tone(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    """A 440 Hz tone of `seconds` in 1024-sample frames."""
    samples = int(seconds * 16000)
    t = np.arange(samples) / 16000
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, samples, 1024):
        chunk = tone[None, start:start + 1024]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def make_images(folder: str | Path, count: int = 4, width: int = 33, height: int = 25, suffix: str = ".png") -> list[Path]:
    """Write `count` images named img_000.png ... ; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:03d}{suffix}" for i in range(count)]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), cv2.cvtColor(synth_image(width, height, i), cv2.COLOR_RGB2BGR))
    return paths


def probe(path: str | Path) -> dict:
    """What a test checks in a clip: video facts, frame pts, decoded planes and audio packets."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        cc = video.codec_context
        facts = {"width": cc.width, "height": cc.height, "pix_fmt": cc.pix_fmt, "time_base": video.time_base,
                 "rate": video.average_rate, "colorspace": cc.colorspace, "color_range": cc.color_range,
                 "sar": cc.sample_aspect_ratio, "audio": len(container.streams.audio),
                 "duration": float(container.duration / av.time_base) if container.duration else None}
        frames = list(container.decode(video))
    facts["pts"] = [f.pts for f in frames]
    facts["planes"] = [[_plane(p, f.format.components[0].bits > 8) for p in f.planes] for f in frames]
    with av.open(str(path)) as container:
        facts["audio_packets"] = sum(1 for p in container.demux(audio=0) if p.size) if facts["audio"] else 0
    return facts


def _plane(plane: av.video.plane.VideoPlane, wide: bool) -> np.ndarray:
    """One plane as an (h, w) array of its samples (uint16 for formats above 8 bits)."""
    rows = np.frombuffer(plane, np.uint16 if wide else np.uint8).reshape(plane.height, -1)
    return rows[:, : plane.width]
