"""Y'CbCr <-> R'G'B' for planar YUV frames, with explicit matrices instead of libswscale.

Matrix: Y' = Kr R' + (1 - Kr - Kb) G' + Kb B', PB = (B' - Y') / (2 (1 - Kb)), PR = (R' - Y') / (2 (1 - Kr)),
with Kr, Kb of ITU-T H.273 table 4 (MatrixCoefficients): ITU-R BT.709 (1), FCC (4), ITU-R BT.601 /
BT.470BG / SMPTE 170M (5, 6), SMPTE 240M (7), ITU-R BT.2020 non-constant luminance (9; 10 is read
the same way).
Quantisation (ITU-T H.273, VideoFullRangeFlag), n bits: limited ("MPEG") Y = (219 Y' + 16) 2^(n-8),
C = (224 P + 128) 2^(n-8); full ("JPEG") Y = (2^n - 1) Y', C = (2^n - 1) P + 2^(n-1).
Chroma siting of 4:2:0 / 4:2:2: horizontally co-sited with the even luma columns, vertically midway
between two rows (H.273 Chroma420SampleLocType 0, the H.264 / H.265 / MPEG-2 default). Decoding
upsamples chroma bilinearly at those sites; encoding filters with the matching LeGall 5/3 low-pass
before dropping samples, so a passthrough gives back the chroma planes it read (all but the last
chroma row of an odd-height 4:2:0 picture, which has only one luma row to come from).

Why not libswscale: measured on a 334x250 passthrough (issue 13), its yuv420p -> rgb24 fast path
darkens by about 1 level, full-range chroma moves by -0.5 level and 10-bit full-range luma by +0.3,
whatever the interpolation or ACCURATE_RND / FULL_CHR_H_INT flags. Formats this module does not
handle (packed, semi-planar, RGB, grey, palette) still go through libswscale.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import av
import cv2
import numpy as np

# H.273 MatrixCoefficients -> (Kr, Kb).
KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114),
         7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
BT601, BT709 = 6, 1
LIMITED, FULL = 1, 2  # H.273 / AVColorRange codes


def matrix_code(colorspace: int, height: int) -> int:
    """The H.273 matrix of a stream tag; untagged or unknown: BT.709 from 720 lines up, else BT.601
    (FFmpeg's convention for untagged video)."""
    code = int(colorspace)
    return code if code in KR_KB else (BT709 if height >= 720 else BT601)


def range_code(color_range: int, pix_fmt: str | None) -> int:
    """LIMITED or FULL from an AVColorRange tag; untagged: FULL for "yuvj" formats, else LIMITED."""
    if int(color_range) in (LIMITED, FULL):
        return int(color_range)
    return FULL if (pix_fmt or "").startswith("yuvj") else LIMITED


def is_planar_yuv(pix_fmt: str) -> bool:
    """True for 3-plane Y'CbCr formats in native byte order (yuv420p, yuv422p10le, yuvj444p, ...)."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return False
    comps = fmt.components
    return (pix_fmt.startswith("yuv") and len(comps) == 3 and fmt.is_planar and not fmt.is_big_endian
            and not fmt.is_rgb and len({c.plane for c in comps}) == 3 and comps[0].bits <= 16)


def rgb_to_ycbcr_affine(matrix: int, full: bool, bits: int) -> np.ndarray:
    """(3, 4) float64: [Y, Cb, Cr] code values = A @ [R, G, B, 1] for 8-bit R'G'B' (0-255)."""
    kr, kb = KR_KB[matrix]
    kg = 1.0 - kr - kb
    rows = np.array([[kr, kg, kb],
                     [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                     [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]]) / 255.0
    if full:
        scale, offset = np.full(3, 2.0 ** bits - 1), np.array([0.0, 2.0 ** (bits - 1), 2.0 ** (bits - 1)])
    else:
        step = 2.0 ** (bits - 8)
        scale, offset = np.array([219.0, 224.0, 224.0]) * step, np.array([16.0, 128.0, 128.0]) * step
    return np.hstack([rows * scale[:, None], offset[:, None]])


def ycbcr_to_rgb_affine(matrix: int, full: bool, bits: int) -> np.ndarray:
    """(3, 4) float64: [R, G, B] (0-255) = A @ [Y, Cb, Cr, 1]; the inverse of rgb_to_ycbcr_affine."""
    forward = rgb_to_ycbcr_affine(matrix, full, bits)
    inverse = np.linalg.inv(forward[:, :3])
    return np.hstack([inverse, -inverse @ forward[:, 3:]])


@dataclass(frozen=True)
class YCbCrFormat:
    """How one planar Y'CbCr pixel format is coded: matrix, range, bit depth, chroma subsampling."""

    pix_fmt: str
    matrix: int
    full: bool
    bits: int
    sub_x: int  # luma columns per chroma column: 1 or 2 (or 4 for 4:1:1)
    sub_y: int  # luma rows per chroma row

    @classmethod
    def of(cls, pix_fmt: str, matrix: int, color_range: int) -> "YCbCrFormat":
        fmt = av.VideoFormat(pix_fmt, 64, 64)
        luma, chroma = fmt.components[0], fmt.components[1]
        return cls(pix_fmt, matrix, color_range == FULL, luma.bits, 64 // chroma.width, 64 // chroma.height)

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bits <= 8 else np.uint16


def _plane_array(plane: av.video.plane.VideoPlane, dtype: type) -> np.ndarray:
    """A (height, width) view of one plane's samples (the line padding left out)."""
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // np.dtype(dtype).itemsize)
    return rows[:, : plane.width]


def _upsample(chroma: np.ndarray, fmt: YCbCrFormat, width: int, height: int) -> np.ndarray:
    """Bilinear chroma at every luma site: columns co-sited (x / sub_x), rows centred ((y + 0.5) / sub_y - 0.5)."""
    if fmt.sub_x == fmt.sub_y == 1:
        return chroma.astype(np.float32)
    to_source = np.float32([[1 / fmt.sub_x, 0, 0], [0, 1 / fmt.sub_y, (1 / fmt.sub_y - 1) / 2]])
    return cv2.warpAffine(chroma.astype(np.float32), to_source, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


# Chroma downsampling filters (kernel, anchor tap) by subsampling factor. Factor 2 pairs with the
# bilinear upsampling above as the LeGall 5/3 biorthogonal pair (the reversible wavelet of JPEG 2000,
# ITU-T T.800): across columns its analysis low-pass [-1 2 6 2 -1]/8 centred on the co-sited column,
# across rows the inverse of the centred interpolation, [-1 3 3 -1]/4 over rows 2i-1..2i+2. So
# down(up(c)) == c: a passthrough gives back the chroma planes it read. Factor 4 (4:1:1, 4:1:0):
# a triangle across columns, a box across rows.
_DOWN_X = {1: ([1.0], 0), 2: ([-1 / 8, 2 / 8, 6 / 8, 2 / 8, -1 / 8], 2), 4: ([v / 16 for v in (1, 2, 3, 4, 3, 2, 1)], 3)}
_DOWN_Y = {1: ([1.0], 0), 2: ([-1 / 4, 3 / 4, 3 / 4, -1 / 4], 1), 4: ([1 / 4] * 4, 0)}


def _downsample(chroma: np.ndarray, fmt: YCbCrFormat) -> np.ndarray:
    """Chroma at the subsampled sites (see _DOWN_X, _DOWN_Y); may overshoot the coded range at edges."""
    if fmt.sub_x == fmt.sub_y == 1:
        return chroma
    (kx, ax), (ky, ay) = _DOWN_X[fmt.sub_x], _DOWN_Y[fmt.sub_y]
    smooth = cv2.sepFilter2D(chroma, -1, np.float32(kx), np.float32(ky), anchor=(ax, ay),
                             borderType=cv2.BORDER_REPLICATE)
    return smooth[:: fmt.sub_y, :: fmt.sub_x]


def _samples(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 code values clipped to 0..2^bits - 1 and rounded to the nearest integer sample."""
    if bits <= 8:
        return cv2.convertScaleAbs(cv2.max(values, 0.0))  # rounds to nearest and saturates at 255
    np.clip(values, 0, 2 ** bits - 1, out=values)
    return np.add(values, 0.5, out=values).astype(np.uint16)


def frame_to_rgb(frame: av.VideoFrame, fmt: YCbCrFormat) -> np.ndarray:
    """(H, W, 3) uint8 R'G'B' of a planar Y'CbCr frame coded as `fmt`, clipped and rounded to nearest.

    Each channel is one weighted sum (R' has no Cb term and B' no Cr term in any of these matrices),
    which OpenCV rounds and saturates to 8 bits as it writes. 8-bit 4:2:0 / 4:2:2 / 4:4:4 take the
    fixed-point path below (_fast_frame_to_rgb), the same maths."""
    if _fast(fmt, frame.width, frame.height):
        return _fast_frame_to_rgb(frame, fmt)
    return _general_frame_to_rgb(frame, fmt)


def _general_frame_to_rgb(frame: av.VideoFrame, fmt: YCbCrFormat) -> np.ndarray:
    """frame_to_rgb for every format, in float32."""
    width, height = frame.width, frame.height
    y, cb, cr = (_plane_array(p, fmt.dtype) for p in frame.planes[:3])
    y, cb, cr = y.astype(np.float32), _upsample(cb, fmt, width, height), _upsample(cr, fmt, width, height)
    m = ycbcr_to_rgb_affine(fmt.matrix, fmt.full, fmt.bits)
    red = cv2.addWeighted(y, m[0, 0], cr, m[0, 2], m[0, 3], dtype=cv2.CV_8U)
    green = cv2.addWeighted(y, m[1, 0], cv2.addWeighted(cb, m[1, 1], cr, m[1, 2], 0.0), 1.0, m[1, 3], dtype=cv2.CV_8U)
    blue = cv2.addWeighted(y, m[2, 0], cb, m[2, 1], m[2, 3], dtype=cv2.CV_8U)
    return cv2.merge([red, green, blue])


def rgb_to_frame(image: np.ndarray, fmt: YCbCrFormat) -> av.VideoFrame:
    """A planar Y'CbCr frame coded as `fmt` from an (H, W, 3) uint8 R'G'B' image, rounded to nearest.

    8-bit 4:2:0 / 4:2:2 / 4:4:4 take the fixed-point path below (_fast_rgb_to_frame), the same maths."""
    if _fast(fmt, image.shape[1], image.shape[0]):
        return _fast_rgb_to_frame(image, fmt)
    return _general_rgb_to_frame(image, fmt)


def _general_rgb_to_frame(image: np.ndarray, fmt: YCbCrFormat) -> av.VideoFrame:
    """rgb_to_frame for every format, in float32."""
    height, width = image.shape[:2]
    forward = rgb_to_ycbcr_affine(fmt.matrix, fmt.full, fmt.bits)
    rgb = image.astype(np.float32)
    luma = cv2.transform(rgb, forward[0:1])
    chroma = [_downsample(cv2.transform(rgb, forward[row: row + 1]), fmt) for row in (1, 2)]
    frame = av.VideoFrame(width, height, fmt.pix_fmt)
    for plane, values in zip(frame.planes, (luma, *chroma)):
        _plane_array(plane, fmt.dtype)[...] = _samples(values, fmt.bits)
    return frame  # untagged: the encoder's stream carries the matrix and range tags


# ---- fast path: 8-bit 4:2:0, 4:2:2 and 4:4:4 -------------------------------------------------
# The same maths as frame_to_rgb / rgb_to_frame above, in integer fixed point, with the chroma work
# done at chroma resolution. Both resamplers are linear with weights in 1/8 (up) and 1/32 (down),
# and the colour transforms are affine, so they commute:
#   decoding: up(m Cb + n Cr + k) == m up(Cb) + n up(Cr) + k. Each channel's chroma term is looked
#   up per chroma sample (a uint16 table at scale K/8, offset so it stays positive), interpolated
#   with exact integer weights (2 | 1+1 across columns, 3+1 across rows) and subtracted with
#   saturation from K (a Y' + o); convertScaleAbs(1/K) then rounds to nearest and saturates at 255.
#   The only approximation is the table's rounding, at most 1/(2 S) of a level with S = K / 8 > 14.
#   encoding: down(A RGB + k) == A down(RGB) + k. R'G'B' is low-passed and subsampled once, exactly
#   in int16 (x32), and the two chroma rows are applied at chroma resolution in float32.

# The fixed-point functions handle 8-bit 4:2:0, 4:2:2 and 4:4:4 (tests/test_ycbcr_fast.py checks all
# three); frame_to_rgb / rgb_to_frame send them 4:2:0 only, the one measured faster than the general
# path at 1080p (4:4:4 was not; 4:2:2 was not measured reliably).
_FAST_SUBSAMPLING = {(1, 1), (2, 1), (2, 2)}
_DISPATCHED = {(2, 2)}
_buffers = threading.local()


def _fast(fmt: YCbCrFormat, width: int, height: int, dispatched: bool = True) -> bool:
    """Whether the fixed-point path takes this frame: 8-bit, from 16x16 up (OpenCV's Python binding
    reads arrays of up to four elements as scalars)."""
    subsampling = _DISPATCHED if dispatched else _FAST_SUBSAMPLING
    return fmt.bits == 8 and (fmt.sub_x, fmt.sub_y) in subsampling and min(width, height) >= 16


def _buffer(name: str, shape: tuple, dtype: type) -> np.ndarray:
    """A per-thread scratch array, reused from call to call (a fresh 1080p array costs page faults)."""
    key = (name, shape, np.dtype(dtype).str)
    store = getattr(_buffers, "arrays", None)
    if store is None:
        store = _buffers.arrays = {}
    array = store.get(key)
    if array is None:
        array = store[key] = np.empty(shape, dtype)
    return array


@functools.lru_cache(maxsize=64)
def _decode_tables(matrix: int, full: bool, gain: int) -> tuple[int, int, float, tuple]:
    """(Ka, Ko, K, per channel (Cb table or None, Cr table or None)) for K (a Y' + o) - K (o - P) with
    P = m_c1 Cb + m_c2 Cr + m_c3; tables are uint16 at scale K / gain."""
    m = ycbcr_to_rgb_affine(matrix, full, 8)
    a = float(m[0, 0])
    assert np.allclose(m[:, 0], a)
    codes = np.arange(256.0)
    lows = [m[c, 3] + min(0.0, 255 * m[c, 1]) + min(0.0, 255 * m[c, 2]) for c in range(3)]
    highs = [m[c, 3] + max(0.0, 255 * m[c, 1]) + max(0.0, 255 * m[c, 2]) for c in range(3)]
    o = max(0.0, max(highs))
    k = 0.998 * 65535.0 / max(255 * a + o + 1, o - min(lows) + 1)
    ka = int(np.floor(k * a))
    k = ka / a
    ko = int(np.ceil(k * o))
    o = ko / k
    s = k / gain
    tables = []
    for c in range(3):
        cb = -s * m[c, 1] * codes if abs(m[c, 1]) > 1e-9 else None
        cr = s * (o - m[c, 3]) - s * m[c, 2] * codes
        if cb is not None:
            shift = cb.min()
            cb, cr = cb - shift, cr + shift
            cb = np.rint(cb).astype(np.uint16)
        assert cr.min() > -0.5 and (cr.max() + (0 if cb is None else cb.max())) * gain < 65535
        tables.append((cb, np.rint(np.maximum(cr, 0)).astype(np.uint16)))
    return ka, ko, k, tuple(tables)


def _upsampled_subtract(base: np.ndarray, q: np.ndarray, fmt: YCbCrFormat, out: np.ndarray) -> None:
    """out = max(base - up(q), 0) in uint16, up() the bilinear chroma upsampling times its gain."""
    height, width = base.shape
    if fmt.sub_x == 2:
        rows, cols = q.shape
        odd = _buffer("odd", q.shape, np.uint16)
        if cols > 1:
            cv2.add(q[:, :-1], q[:, 1:], dst=odd[:, :-1])
        odd[:, -1] = q[:, -1]
        odd[:, -1] += q[:, -1]
        even = cv2.add(q, q)
        q = cv2.merge([even, odd]).reshape(rows, 2 * cols)[:, :width]
    if fmt.sub_y == 1:
        cv2.subtract(base, q, dst=out)
        return
    rows = q.shape[0]
    triple = np.multiply(q, np.uint16(3), out=_buffer("triple", q.shape, np.uint16))
    # even luma row 2i: 3 q[i] + q[i - 1]; odd row 2i + 1: 3 q[i] + q[i + 1] (edges replicated)
    even, odd = out[0::2], out[1::2]
    n_odd = odd.shape[0]
    cv2.subtract(base[0::2], triple, dst=even)
    cv2.subtract(even[:1], q[:1], dst=even[:1])
    if rows > 1:
        cv2.subtract(even[1:], q[:-1], dst=even[1:])
    if n_odd:
        cv2.subtract(base[1::2], triple[:n_odd], dst=odd)
        inner = min(n_odd, rows - 1)
        if inner:
            cv2.subtract(odd[:inner], q[1:inner + 1], dst=odd[:inner])
        if n_odd == rows:
            cv2.subtract(odd[-1:], q[-1:], dst=odd[-1:])


def _fast_frame_to_rgb(frame: av.VideoFrame, fmt: YCbCrFormat) -> np.ndarray:
    width, height = frame.width, frame.height
    y, cb, cr = (_plane_array(p, np.uint8) for p in frame.planes[:3])
    gain = (2 if fmt.sub_x == 2 else 1) * (4 if fmt.sub_y == 2 else 1)
    ka, ko, k, tables = _decode_tables(fmt.matrix, fmt.full, gain)
    base = np.multiply(y, np.uint16(ka), out=_buffer("base", (height, width), np.uint16))
    np.add(base, np.uint16(ko), out=base)
    channels = []
    work = _buffer("work", (height, width), np.uint16)
    for cb_table, cr_table in tables:
        q = cv2.LUT(cr, cr_table)
        if cb_table is not None:
            q = cv2.add(q, cv2.LUT(cb, cb_table))
        _upsampled_subtract(base, q, fmt, work)
        channels.append(cv2.convertScaleAbs(work, alpha=1.0 / k))
    return cv2.merge(channels)


def _lowpassed_rgb(image: np.ndarray, fmt: YCbCrFormat) -> np.ndarray:
    """R'G'B' filtered with _DOWN_X, _DOWN_Y at the chroma sites, int16 times 32 (4:2:0), 8 (4:2:2)."""
    height, width = image.shape[:2]
    cols = -(-width // 2)
    # rows filtered (4:2:0) into a buffer with two replicated columns left and enough right for
    # the decimation: column 2 + x holds luma column x
    if fmt.sub_y == 2:
        rows = -(-height // 2)
        padded = _buffer("padded", (rows, 2 * cols + 4, 3), np.int16)
        inner = padded[:, 2:2 + width]
        wide = _buffer("wide", image.shape, np.int16)
        np.copyto(wide, image)
        even, odd = wide[0::2], wide[1::2]
        n_odd = odd.shape[0]
        # [-1 3 3 -1] / 4 over rows 2i - 1 .. 2i + 2, rows past the edges replicated
        np.add(even[:n_odd], odd, out=inner[:n_odd])
        if n_odd < rows:
            np.add(even[-1], even[-1], out=inner[-1])
        np.multiply(inner, np.int16(3), out=inner)
        np.subtract(inner[0], even[0], out=inner[0])
        np.subtract(inner[1:], odd[:rows - 1], out=inner[1:])
        np.subtract(inner[:-1], even[1:], out=inner[:-1])
        np.subtract(inner[-1], odd[-1] if n_odd == rows else even[-1], out=inner[-1])
        padded[:, :2] = padded[:, 2:3]
        padded[:, 2 + width:] = padded[:, 1 + width: 2 + width]
    else:
        rows = height
        padded = cv2.copyMakeBorder(image, 0, 0, 2, 2 * cols + 2 - width, cv2.BORDER_REPLICATE)
    # [-1 2 6 2 -1] / 8 across columns 2j - 2 .. 2j + 2: even columns -2, 0, .., 2 cols; odd -1, .., 2 cols - 1
    even = cv2.resize(padded[:, : 2 * cols + 4], (cols + 2, rows), interpolation=cv2.INTER_NEAREST)
    odd = cv2.resize(padded[:, 1: 2 * cols + 3], (cols + 1, rows), interpolation=cv2.INTER_NEAREST)
    if even.dtype != np.int16:
        even, odd = even.astype(np.int16), odd.astype(np.int16)
    out = np.multiply(even[:, 1:-1], np.int16(3))
    out += odd[:, :-1]
    out += odd[:, 1:]
    out += out
    out -= even[:, :-2]
    out -= even[:, 2:]
    return out


@functools.lru_cache(maxsize=64)
def _encode_tables(matrix: int, full: bool, gain: int) -> tuple[np.ndarray, np.ndarray]:
    """(1, 4) float32 luma row for 8-bit R'G'B'; (3, 4) float32 Cb, Cr, Cb rows for R'G'B' x gain."""
    forward = rgb_to_ycbcr_affine(matrix, full, 8)
    chroma = forward[[1, 2, 1]].copy()
    chroma[:, :3] /= gain
    return np.float32(forward[0:1]), np.float32(chroma)


def _fast_rgb_to_frame(image: np.ndarray, fmt: YCbCrFormat) -> av.VideoFrame:
    height, width = image.shape[:2]
    image = np.ascontiguousarray(image)
    gain = (8 if fmt.sub_x == 2 else 1) * (4 if fmt.sub_y == 2 else 1)
    luma_row, chroma_rows = _encode_tables(fmt.matrix, fmt.full, gain)
    frame = av.VideoFrame(width, height, fmt.pix_fmt)
    y_plane, cb_plane, cr_plane = (_plane_array(p, np.uint8) for p in frame.planes[:3])
    cv2.transform(image, luma_row, dst=y_plane)  # float32 sums, rounded to nearest, saturated
    if gain == 1:
        low = image.astype(np.int16)
    else:
        low = _lowpassed_rgb(image, fmt)
    chroma = cv2.transform(low, chroma_rows)  # int16, rounded to nearest
    chroma = cv2.convertScaleAbs(np.maximum(chroma, 0, out=chroma))  # saturates at 255
    cb, cr, _ = cv2.split(chroma)
    cb_plane[...] = cb
    cr_plane[...] = cr
    return frame


# ---- I420: 8-bit 4:2:0 planes kept as they were decoded --------------------------------------
# A backend that converts colour on its own device (streamrestore.io.ycbcr_torch) takes frames as
# their decoded planes, packed as FFmpeg's yuv420p / yuvj420p are in memory: Y (H rows of W), then
# Cb and Cr (H/2 x W/2 each), as one (3H/2, W) uint8 array; half the bytes of R'G'B' to move, and
# no colour conversion on the host.


def is_i420(fmt: YCbCrFormat, width: int, height: int) -> bool:
    """Whether frames coded as `fmt` at this size can travel as I420: 8-bit 4:2:0, even width and height."""
    return fmt.bits == 8 and (fmt.sub_x, fmt.sub_y) == (2, 2) and width % 2 == 0 and height % 2 == 0 and min(width, height) >= 2


def frame_to_i420(frame: av.VideoFrame) -> np.ndarray:
    """(3H/2, W) uint8: the planes of an 8-bit 4:2:0 frame (see is_i420), line padding left out."""
    return frame.to_ndarray()


def i420_to_frame(planes: np.ndarray, fmt: YCbCrFormat) -> av.VideoFrame:
    """The frame in `fmt.pix_fmt` (yuv420p or yuvj420p) holding these I420 planes."""
    return av.VideoFrame.from_ndarray(planes, format=fmt.pix_fmt)


def i420_to_rgb(planes: np.ndarray, fmt: YCbCrFormat) -> np.ndarray:
    """(H, W, 3) uint8 R'G'B' of I420 planes coded as `fmt` (frame_to_rgb's maths), for a sink that takes R'G'B'."""
    return frame_to_rgb(i420_to_frame(planes, fmt), fmt)
