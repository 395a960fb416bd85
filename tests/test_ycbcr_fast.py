"""The fixed-point 8-bit path of streamrestore.io.ycbcr (4:2:0, 4:2:2, 4:4:4) against a plain float64
NumPy transcription of the maths the module documents: H.273 matrices and ranges, chroma co-sited
across columns and centred across rows, bilinear upsampling, LeGall 5/3 downsampling with replicated
edges, rounding to nearest. At most 1 level apart, signed mean under 0.02 level."""
from __future__ import annotations

import numpy as np
import pytest

from media import BT601, BT709, FULL, LIMITED
from streamrestore.io import ycbcr


def _reference_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, fmt: ycbcr.YCbCrFormat) -> np.ndarray:
    height, width = y.shape
    xs = np.arange(width) / fmt.sub_x                 # co-sited columns
    ys = (np.arange(height) + 0.5) / fmt.sub_y - 0.5  # centred rows

    def up(c: np.ndarray) -> np.ndarray:
        c = c.astype(np.float64)
        x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
        fx, fy = xs - x0, ys - y0
        col = lambda i: np.clip(i, 0, c.shape[1] - 1)  # noqa: E731
        row = lambda i: np.clip(i, 0, c.shape[0] - 1)  # noqa: E731
        rows = c[row(y0)] * (1 - fy)[:, None] + c[row(y0 + 1)] * fy[:, None]
        return rows[:, col(x0)] * (1 - fx) + rows[:, col(x0 + 1)] * fx

    m = ycbcr.ycbcr_to_rgb_affine(fmt.matrix, fmt.full, 8)
    values = np.stack([y.astype(np.float64), up(cb), up(cr), np.ones(y.shape)], -1) @ m.T
    return np.clip(np.rint(values), 0, 255)


def _reference_planes(image: np.ndarray, fmt: ycbcr.YCbCrFormat) -> list[np.ndarray]:
    forward = ycbcr.rgb_to_ycbcr_affine(fmt.matrix, fmt.full, 8)
    values = np.concatenate([image.astype(np.float64), np.ones(image.shape[:2] + (1,))], -1) @ forward.T
    height, width = image.shape[:2]
    kx = {1: [1.0], 2: [-1 / 8, 2 / 8, 6 / 8, 2 / 8, -1 / 8]}[fmt.sub_x]      # centred on column 2j
    ky = {1: [1.0], 2: [-1 / 4, 3 / 4, 3 / 4, -1 / 4]}[fmt.sub_y]              # rows 2i - 1 .. 2i + 2
    rows, cols = -(-height // fmt.sub_y), -(-width // fmt.sub_x)
    planes = [values[..., 0]]
    for index in (1, 2):
        p = values[..., index]
        across = sum(k * p[:, np.clip(fmt.sub_x * np.arange(cols) + u - len(kx) // 2, 0, width - 1)]
                     for u, k in enumerate(kx))
        planes.append(sum(k * across[np.clip(fmt.sub_y * np.arange(rows) + t - (len(ky) - 1) // 2, 0, height - 1)]
                          for t, k in enumerate(ky)))
    return [np.clip(np.rint(p), 0, 255) for p in planes]


def _image(kind: str, width: int, height: int, seed: int) -> np.ndarray:
    if kind == "random":
        return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    channels = [128 + 120 * np.sin(x / 9.0 + c) * np.cos(y / 7.0 - 2 * c) + 0.3 * (x - y) for c in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def _planes(frame) -> list[np.ndarray]:
    return [ycbcr._plane_array(p, np.uint8) for p in frame.planes[:3]]


def _check(got: np.ndarray, want: np.ndarray, what: str) -> None:
    diff = got.astype(np.float64) - want
    assert np.abs(diff).max() <= 1, f"{what}: max |difference| {np.abs(diff).max()}"
    assert abs(diff.mean()) < 0.02, f"{what}: signed mean {diff.mean():+.4f}"


SIZES = [(160, 96), (161, 97), (97, 64), (64, 33)]


@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize("width, height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p", "yuv444p"])
@pytest.mark.parametrize("matrix, color_range", [(BT709, LIMITED), (BT601, FULL), (9, LIMITED), (7, FULL)],
                         ids=["bt709-limited", "bt601-full", "bt2020-limited", "smpte240-full"])
def test_fast_path_matches_the_float64_maths(pix_fmt, width, height, kind, matrix, color_range):
    fmt = ycbcr.YCbCrFormat.of(pix_fmt, matrix, color_range)
    assert ycbcr._fast(fmt, width, height, dispatched=False)
    assert ycbcr._fast(fmt, width, height) == (pix_fmt == "yuv420p")
    image = _image(kind, width, height, seed=width * height)
    frame = ycbcr._fast_rgb_to_frame(image, fmt)
    for name, got, want in zip(("Y", "Cb", "Cr"), _planes(frame), _reference_planes(image, fmt)):
        assert got.shape == want.shape
        _check(got, want, f"encode {name}")
    planes = _planes(frame)
    rng = np.random.default_rng(1)
    planes = [rng.integers(0, 256, p.shape, dtype=np.uint8) if kind == "random" else p for p in planes]
    for plane, values in zip(frame.planes, planes):
        ycbcr._plane_array(plane, np.uint8)[...] = values
    rgb = ycbcr._fast_frame_to_rgb(frame, fmt)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    _check(rgb, _reference_rgb(*planes, fmt), "decode")


@pytest.mark.parametrize("pix_fmt, width, height", [("yuv420p", 160, 96), ("yuv420p", 161, 97), ("yuv422p", 161, 97)])
def test_fast_passthrough_gives_back_the_chroma_planes(pix_fmt, width, height):
    """Smooth in-gamut chroma decoded and encoded again: the same planes, all but the last chroma row
    of an odd-height 4:2:0 picture; only R'G'B' rounding to 8 bits may move a sample by 1."""
    fmt = ycbcr.YCbCrFormat.of(pix_fmt, BT709, LIMITED)
    image = np.clip(_image("smooth", width, height, 0) * 0.7 + 40, 0, 255).astype(np.uint8)
    source = ycbcr._fast_rgb_to_frame(image, fmt)
    back = _planes(ycbcr._fast_rgb_to_frame(ycbcr._fast_frame_to_rgb(source, fmt), fmt))
    keep = slice(None, -1) if fmt.sub_y == 2 and height % 2 else slice(None)
    for name, a, b in zip(("Y", "Cb", "Cr"), _planes(source), back):
        diff = b[keep].astype(int) - a[keep]
        assert np.abs(diff).max() <= 1 and (diff == 0).mean() > 0.97 and abs(diff.mean()) < 0.01, name


def test_fast_path_agrees_with_the_general_path():
    """The fixed-point path and the float32 OpenCV path it replaces, on the same 8-bit frame."""
    fmt = ycbcr.YCbCrFormat.of("yuv420p", BT601, LIMITED)
    image = _image("smooth", 161, 97, 0)
    frame = ycbcr.rgb_to_frame(image, fmt)
    general = ycbcr.YCbCrFormat.of("yuv420p", BT601, LIMITED)
    slow = ycbcr._general_frame_to_rgb(frame, general)
    _check(ycbcr.frame_to_rgb(frame, fmt), slow.astype(np.float64), "decode")
    slow_planes = _planes(ycbcr._general_rgb_to_frame(image, general))
    for name, got, want in zip(("Y", "Cb", "Cr"), _planes(frame), slow_planes):
        _check(got, want.astype(np.float64), name)
