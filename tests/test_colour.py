"""Colour fidelity: YCbCr <-> RGB matrices against fixed ITU values, and a passthrough that keeps
every sample (issue 13: it darkened luma by 1.07 levels). Differences are signed means and p99.9 of
|difference| in 8-bit levels, on frames decoded by FFmpeg (PyAV planes, or the ffmpeg CLI), never
by our own conversion."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media import BT601, BT709, FULL, LIMITED, make_clip, probe
from streamrestore.io import ycbcr
from streamrestore.io.video import VideoFileSink, VideoFileSource

ROOT = Path(__file__).resolve().parents[1]
MEAN_LIMIT, P999_LIMIT = 0.25, 2.0  # 8-bit levels


def _stats(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> tuple[float, float]:
    """(signed mean, p99.9 of |b - a|) in 8-bit levels; `scale` divides wider samples down."""
    diff = (b.astype(np.float64) - a.astype(np.float64)) / scale
    return float(diff.mean()), float(np.percentile(np.abs(diff), 99.9))


# ---- the matrices: fixed values from the standards -------------------------------------------

@pytest.mark.parametrize("matrix, full, bits, rgb, expected", [
    (BT601, False, 8, (255, 255, 255), (235, 128, 128)),   # BT.601: white is Y 235, chroma at 128
    (BT601, False, 8, (0, 0, 0), (16, 128, 128)),
    (BT601, False, 8, (255, 0, 0), (81.481, 90.203, 240)),  # 16 + 219 * 0.299; Cr reaches 240
    (BT709, False, 8, (0, 0, 255), (31.8118, 240, 117.7302)),  # 16 + 219 * 0.0722; Cb reaches 240
    (BT709, True, 8, (255, 255, 255), (255, 128, 128)),     # full range: H.273, (2^n - 1) Y'
    (BT709, False, 10, (255, 255, 255), (940, 512, 512)),   # 10-bit limited: 235 * 4
    (BT709, True, 10, (255, 255, 255), (1023, 512, 512)),   # 10-bit full: 2^10 - 1, not 255 * 4
])
def test_matrices_give_the_standard_code_values(matrix, full, bits, rgb, expected):
    affine = ycbcr.rgb_to_ycbcr_affine(matrix, full, bits)
    got = affine @ np.array([*rgb, 1.0])
    np.testing.assert_allclose(got, expected, atol=2e-3)
    back = ycbcr.ycbcr_to_rgb_affine(matrix, full, bits) @ np.array([*got, 1.0])
    np.testing.assert_allclose(back, rgb, atol=1e-9)


@pytest.mark.parametrize("pix_fmt, width, height", [("yuv420p", 40, 30), ("yuv420p", 41, 30), ("yuv422p", 41, 31)])
def test_chroma_resampling_gives_back_the_planes_it_read(pix_fmt, width, height):
    fmt = ycbcr.YCbCrFormat.of(pix_fmt, BT709, LIMITED)
    shape = (-(-height // fmt.sub_y), -(-width // fmt.sub_x))
    chroma = np.random.default_rng(0).uniform(16, 240, shape).astype(np.float32)
    up = ycbcr._upsample(chroma, fmt, width, height)
    np.testing.assert_allclose(ycbcr._downsample(up, fmt), chroma, atol=1e-3)


def test_chroma_is_sited_like_h264():
    """H.273 Chroma420SampleLocType 0: a chroma sample at luma (2j, 2i + 0.5); a ramp stays a ramp."""
    fmt = ycbcr.YCbCrFormat.of("yuv420p", BT709, LIMITED)
    j, i = np.arange(20), np.arange(15)
    chroma = (100 + 1.0 * (2 * j)[None, :] + 2.0 * (2 * i + 0.5)[:, None]).astype(np.float32)
    x, y = np.arange(40), np.arange(30)
    want = 100 + 1.0 * x[None, :] + 2.0 * y[:, None]
    np.testing.assert_allclose(ycbcr._upsample(chroma, fmt, 40, 30)[1:-1, :-2], want[1:-1, :-2], atol=1e-3)


# ---- the passthrough: file in, file out, compared on FFmpeg's decoded planes ------------------

def _passthrough(src: Path, dst: Path, **sink_options) -> None:
    """What `streamrestore run --task passthrough` does to a file: decode to RGB, encode back."""
    source = VideoFileSource(str(src))
    sink = VideoFileSink(str(dst), source.info, **sink_options)
    for frame in source:
        sink.write(frame.image, frame)
    source.close()
    sink.close()


SIZES = {"334x250-h264": (334, 250, "libx264", ".mp4"), "67x49-ffv1": (67, 49, "ffv1", ".mkv")}


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("color_range", [LIMITED, FULL], ids=["limited", "full"])
@pytest.mark.parametrize("matrix", [BT601, BT709], ids=["bt601", "bt709"])
@pytest.mark.parametrize("size", SIZES)
def test_passthrough_keeps_every_plane(tmp_path, size, matrix, color_range, bits):
    width, height, codec, suffix = SIZES[size]
    pix_fmt = "yuv420p" if bits == 8 else "yuv420p10le"
    src = make_clip(tmp_path / f"in{suffix}", width=width, height=height, frames=3, audio=False, codec=codec,
                    pix_fmt=pix_fmt, colorspace=matrix, color_range=color_range)
    _passthrough(src, tmp_path / f"out{suffix}", codec=codec, crf=0 if codec == "libx264" else None)
    a, b = probe(src), probe(tmp_path / f"out{suffix}")
    assert (b["pix_fmt"], b["colorspace"], b["color_range"]) == (a["pix_fmt"], a["colorspace"], a["color_range"])
    for index, name in enumerate("Y Cb Cr".split()):
        before = np.stack([planes[index] for planes in a["planes"]])
        after = np.stack([planes[index] for planes in b["planes"]])
        mean, p999 = _stats(before, after, scale=2 ** (bits - 8))
        assert abs(mean) <= MEAN_LIMIT and p999 <= P999_LIMIT, f"{name}: signed mean {mean:+.3f}, p99.9 {p999:.2f}"


def _ffmpeg_decode(path: Path, pix_fmt: str) -> bytes:
    """Frames as raw `pix_fmt` through the ffmpeg CLI (its own decoder and swscale, not our code)."""
    command = ["ffmpeg", "-v", "error", "-i", str(path), "-sws_flags", "bicubic+accurate_rnd+full_chroma_int",
               "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    return subprocess.run(command, capture_output=True, check=True).stdout


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command-line tool")
def test_the_issue_command_does_not_darken(tmp_path):
    """Issue 13 as reported: 334x250 H.264 yuv420p, `run --task passthrough --crf 0`."""
    src = make_clip(tmp_path / "in.mp4", width=334, height=250, frames=4, audio=False, colorspace=BT601)
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-m", "streamrestore.cli", "run", str(src), "--task", "passthrough",
                           "--crf", "0", "-o", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    luma = [np.frombuffer(_ffmpeg_decode(p, "yuv420p"), np.uint8).reshape(-1, 250 * 3 // 2, 334)[:, :250]
            for p in (src, out)]
    mean, p999 = _stats(*luma)
    assert abs(mean) <= MEAN_LIMIT and p999 <= P999_LIMIT, f"luma: signed mean {mean:+.3f}, p99.9 {p999:.2f}"
    rgb = [np.frombuffer(_ffmpeg_decode(p, "rgb24"), np.uint8).reshape(-1, 250, 334, 3) for p in (src, out)]
    for channel, name in enumerate("RGB"):
        mean, p999 = _stats(rgb[0][..., channel], rgb[1][..., channel])
        assert abs(mean) <= MEAN_LIMIT and p999 <= P999_LIMIT, f"{name}: signed mean {mean:+.3f}, p99.9 {p999:.2f}"


@pytest.mark.parametrize("matrix, color_range", [(BT601, LIMITED), (BT709, FULL)], ids=["bt601-limited", "bt709-full"])
def test_live_h264_output_keeps_every_plane(tmp_path, matrix, color_range):
    """The live encoder (RTSP publishing, segments) converts the same way; here it writes a file."""
    from streamrestore.io.rtsp import H264Sink

    src = make_clip(tmp_path / "in.mp4", width=334, height=250, frames=3, audio=False, colorspace=matrix,
                    color_range=color_range)
    source = VideoFileSource(str(src))
    sink = H264Sink(str(tmp_path / "out.mp4"), source.info, crf=0)
    for frame in source:
        sink.write(frame.image, frame)
    source.close()
    sink.close()
    a, b = probe(src), probe(tmp_path / "out.mp4")
    assert (b["colorspace"], b["color_range"]) == (matrix, color_range)
    for index, name in enumerate("Y Cb Cr".split()):
        mean, p999 = _stats(np.stack([p[index] for p in a["planes"]]), np.stack([p[index] for p in b["planes"]]))
        assert abs(mean) <= MEAN_LIMIT and p999 <= P999_LIMIT, f"{name}: signed mean {mean:+.3f}, p99.9 {p999:.2f}"
