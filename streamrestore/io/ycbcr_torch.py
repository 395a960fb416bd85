"""Y'CbCr 4:2:0 <-> R'G'B' as tensor operations, so that frames cross PCIe as their decoded planes
(I420, streamrestore.io.ycbcr) and the colour conversion runs where the model does.

The maths is streamrestore.io.ycbcr's, the host path (ITU-T H.273 matrices and quantisation, chroma
co-sited with the even luma columns and midway between two luma rows):

  decoding  chroma upsampled bilinearly at the luma sites: column 2j takes C[j], column 2j+1 the mean
            of C[j] and C[j+1]; row 2i takes (3 C[i] + C[i-1]) / 4, row 2i+1 (3 C[i] + C[i+1]) / 4, edges
            replicated; then R'G'B' = A [Y, Cb, Cr, 1] (ycbcr.ycbcr_to_rgb_affine), rounded to nearest
            and saturated to 0..255;
  encoding  Y = the luma row of ycbcr.rgb_to_ycbcr_affine at every pixel; Cb, Cr of R'G'B' low-passed
            by the LeGall 5/3 analysis pair (across columns [-1 2 6 2 -1] / 8 centred on column 2j,
            across rows [-1 3 3 -1] / 4 over rows 2i-1 .. 2i+2, edges replicated) at the chroma sites.

Everything is float32 elementwise arithmetic (no convolution or matrix product, which a GPU may run
in TF32), so the result is the host path's up to float rounding: at most 1 level apart
(tests/test_ycbcr_torch.py).
"""
from __future__ import annotations

import functools

import torch

from streamrestore.io.ycbcr import YCbCrFormat, rgb_to_ycbcr_affine, ycbcr_to_rgb_affine


@functools.lru_cache(maxsize=32)
def _rows(fmt: YCbCrFormat, decode: bool) -> tuple[tuple[float, ...], ...]:
    """The affine rows as Python floats (constants of the kernels, nothing to upload)."""
    affine = ycbcr_to_rgb_affine if decode else rgb_to_ycbcr_affine
    return tuple(tuple(float(v) for v in row) for row in affine(fmt.matrix, fmt.full, 8))


def _affine(row: tuple[float, ...], channels: tuple[torch.Tensor, ...]) -> torch.Tensor:
    out = channels[0] * row[0] + row[3]
    for weight, channel in zip(row[1:3], channels[1:]):
        if weight != 0.0:
            out = out + channel * weight
    return out


def _samples(values: torch.Tensor) -> torch.Tensor:
    """uint8 code values: rounded to nearest (half to even, as OpenCV's saturate_cast) and saturated."""
    return values.round_().clamp_(0, 255).to(torch.uint8)


def split_i420(planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3H/2, W) uint8 I420 -> Y (N, H, W) and chroma (N, 2, H/2, W/2) views (Cb, Cr)."""
    n, rows, width = planes.shape
    height = rows * 2 // 3
    flat = planes.reshape(n, rows * width)
    luma = flat[:, : height * width].reshape(n, height, width)
    chroma = flat[:, height * width:].reshape(n, 2, height // 2, width // 2)
    return luma, chroma


def i420_to_rgb(planes: torch.Tensor, fmt: YCbCrFormat) -> torch.Tensor:
    """(N, 3H/2, W) uint8 I420 coded as `fmt` -> (N, H, W, 3) uint8 R'G'B' (module docstring)."""
    luma, chroma = split_i420(planes)
    n, height, width = luma.shape
    c = chroma.float()
    # rows: even luma row 2i from C[i-1], odd 2i+1 from C[i+1], each with 3 C[i]; edges replicated
    above = torch.cat([c[:, :, :1], c[:, :, :-1]], dim=2)
    below = torch.cat([c[:, :, 1:], c[:, :, -1:]], dim=2)
    c3 = c * 3.0
    rows = torch.stack([(c3 + above) * 0.25, (c3 + below) * 0.25], dim=3).reshape(n, 2, height, width // 2)
    # columns: even luma column 2j is C[j], odd 2j+1 the mean of C[j] and C[j+1]; the right edge replicated
    right = torch.cat([rows[..., 1:], rows[..., -1:]], dim=-1)
    full = torch.stack([rows, (rows + right) * 0.5], dim=-1).reshape(n, 2, height, width)
    y, cb, cr = luma.float(), full[:, 0], full[:, 1]
    rgb = [_affine(row, (y, cb, cr)) for row in _rows(fmt, decode=True)]
    return _samples(torch.stack(rgb, dim=-1))


def rgb_to_i420(rgb: torch.Tensor, fmt: YCbCrFormat) -> torch.Tensor:
    """(N, H, W, 3) uint8 R'G'B' -> (N, 3H/2, W) uint8 I420 coded as `fmt` (module docstring)."""
    n, height, width, _ = rgb.shape
    x = rgb.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    luma_row, cb_row, cr_row = _rows(fmt, decode=False)
    luma = _samples(_affine(luma_row, (x[:, 0], x[:, 1], x[:, 2])))
    # rows: [-1 3 3 -1] / 4 over rows 2i-1 .. 2i+2 (row r of `p` is row r - 1, edges replicated)
    p = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    half = height // 2
    low = (p[:, :, 1::2][:, :, :half] + p[:, :, 2::2][:, :, :half]) * 3.0
    low = (low - p[:, :, 0::2][:, :, :half] - p[:, :, 3::2][:, :, :half]) * 0.25
    # columns: [-1 2 6 2 -1] / 8 over columns 2j-2 .. 2j+2 (column c of `q` is column c - 2)
    q = torch.cat([low[..., :1], low[..., :1], low, low[..., -1:], low[..., -1:]], dim=-1)
    cols = width // 2
    low = ((q[..., 1::2][..., :cols] + q[..., 3::2][..., :cols]) * 2.0 + q[..., 2::2][..., :cols] * 6.0
           - q[..., 0::2][..., :cols] - q[..., 4::2][..., :cols]) * 0.125
    channels = (low[:, 0], low[:, 1], low[:, 2])
    chroma = _samples(torch.stack([_affine(cb_row, channels), _affine(cr_row, channels)], dim=1))
    return torch.cat([luma.reshape(n, -1), chroma.reshape(n, -1)], dim=1).reshape(n, height * 3 // 2, width)
