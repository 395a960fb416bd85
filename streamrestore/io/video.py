"""Video files through PyAV: a decoding source and an encoding sink that keep each frame's pts and
time base, the frame rate, sample aspect ratio, colour tags and the audio/subtitle streams.

Colour: YCbCr <-> RGB uses the matrix (ITU-R BT.601 / BT.709 / BT.2020 non-constant luminance)
and range (limited "MPEG" 16-235/240 or full "JPEG" 0-255, scaled for 10-bit) the stream is
tagged with; untagged streams follow FFmpeg's convention (BT.709 from 720 lines up, BT.601 below;
limited range unless the format is a full-range "yuvj" one). Planar YUV formats (yuv420p,
yuv422p10le, yuvj444p, ...) are converted by `streamrestore.io.ycbcr` with explicit matrices,
since libswscale's conversions are biased by up to a level; other formats go through libswscale.
Restored frames are 8-bit RGB; a 10-bit input is written back in its own 10-bit format.

What players need to show the output as they showed the input is kept: the display matrix (a phone
video's rotation), the field order of interlaced video (x264 then codes it interlaced) and every
colour tag given, a range tag alone included (MP4/MOV write it in a `colr` box, else x264 drops it).
"""
from __future__ import annotations

import collections
import heapq
import os
import shlex
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.codec.context import Flags
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import Interpolation

from streamrestore.atomic import temporary_path
from streamrestore.errors import UserError
from streamrestore.io import ycbcr
from streamrestore.io.base import DecodedFrame, StreamInfo
from streamrestore.io.encoding import speed_options

# H.273 MatrixCoefficients -> swscale matrix name, for the formats ycbcr does not convert.
_SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_SWS_RANGE = {ycbcr.LIMITED: "MPEG", ycbcr.FULL: "JPEG"}
# swscale for the other formats: accurate rounding and full chroma interpolation avoid the
# fast paths' truncation (about -1 level on yuv420p -> rgb24).
_DECODE_SCALER = "BILINEAR"
_ENCODE_SCALER = "AREA"
_SWS_FLAGS = ("ACCURATE_RND", "FULL_CHR_H_INT")
DEFAULT_CODEC = {".webm": "libvpx-vp9"}  # by output suffix; everything else gets libx264
MAX_ERRORS_IN_A_ROW = 50  # corrupt packets in a row before decoding gives up
MOV_MUXERS = {"mov", "mp4", "3gp", "3g2", "psp", "ipod", "ismv", "f4v"}  # FFmpeg's movenc: takes movflags
INTERLACED = {2: "tff", 3: "bff", 4: "tff", 5: "bff"}  # AVFieldOrder -> x264's field order (coded = display)


def _sws_interpolation(name: str) -> int:
    """swscale flags: the scaler `name` plus accurate rounding and full chroma interpolation."""
    flags = Interpolation[name]
    for flag in _SWS_FLAGS:
        flags |= Interpolation[flag]
    return flags


class ColourConverter:
    """RGB <-> one stream's YCbCr: explicit matrices for planar YUV (streamrestore.io.ycbcr),
    libswscale for every other pixel format. Matrix and range come from the stream's tags."""

    def __init__(self, colorspace: int, color_range: int, pix_fmt: str | None, height: int) -> None:
        self.matrix = ycbcr.matrix_code(colorspace, height)
        self.range = ycbcr.range_code(color_range, pix_fmt)
        self._formats: dict[str, ycbcr.YCbCrFormat | None] = {}
        self._sws = {"colorspace": _SWS_MATRIX[self.matrix], "color_range": _SWS_RANGE[self.range]}

    def _planar(self, pix_fmt: str) -> ycbcr.YCbCrFormat | None:
        if pix_fmt not in self._formats:
            planar = ycbcr.is_planar_yuv(pix_fmt)
            self._formats[pix_fmt] = ycbcr.YCbCrFormat.of(pix_fmt, self.matrix, self.range) if planar else None
        return self._formats[pix_fmt]

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """(H, W, 3) uint8 RGB of a decoded frame."""
        fmt = self._planar(frame.format.name)
        if fmt is not None:
            return ycbcr.frame_to_rgb(frame, fmt)
        return frame.to_ndarray(format="rgb24", interpolation=_sws_interpolation(_DECODE_SCALER),
                                src_colorspace=self._sws["colorspace"], src_color_range=self._sws["color_range"])

    def i420_of(self, frame: av.VideoFrame) -> tuple[np.ndarray, ycbcr.YCbCrFormat] | None:
        """(I420 planes, their format) of a decoded 8-bit 4:2:0 frame of even size; None for any other."""
        fmt = self._planar(frame.format.name)
        if fmt is None or not ycbcr.is_i420(fmt, frame.width, frame.height):
            return None
        return ycbcr.frame_to_i420(frame), fmt

    def from_image(self, image: np.ndarray, frame: DecodedFrame, pix_fmt: str) -> av.VideoFrame:
        """A frame in `pix_fmt` from a restored picture in the form of `frame` (R'G'B' or I420): I420 planes in
        this stream's own format go in as they are; anything else through R'G'B'."""
        if frame.ycbcr is not None and frame.ycbcr == self._planar(pix_fmt):
            return ycbcr.i420_to_frame(image, frame.ycbcr)
        return self.from_rgb(frame.rgb(image), pix_fmt)

    def from_rgb(self, image: np.ndarray, pix_fmt: str) -> av.VideoFrame:
        """A frame in `pix_fmt` from an (H, W, 3) uint8 RGB image."""
        fmt = self._planar(pix_fmt)
        if fmt is not None:
            return ycbcr.rgb_to_frame(image, fmt)
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(
            format=pix_fmt, interpolation=_sws_interpolation(_ENCODE_SCALER),
            dst_colorspace=self._sws["colorspace"], dst_color_range=self._sws["color_range"])


def _open_input(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file; check the INPUT path")
    try:
        return av.open(path, "r")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a video or image file FFmpeg can read ({exc.__class__.__name__}); "
                        "give a video file, an image or a folder of images") from None


REORDER_FRAMES = 4  # timestamps are put in order within this many frames


def presentation_times(frames: Iterator[av.VideoFrame]) -> Iterator[tuple[av.VideoFrame, int | None]]:
    """(frame, pts) with the pts sorted within a window of REORDER_FRAMES + 1 frames.

    Decoders hand frames out in display order, but some muxers store B-frame timestamps out of
    order (OpenCV's box.mp4: 0, 0.101, 0.067, 0.134, 0.034 s ...), and an encoder given those
    refuses them. The oldest frame takes the smallest pending pts: the display times stay the
    file's own, now increasing, and a well-formed file's pts come out unchanged.
    """
    pending: collections.deque = collections.deque()
    times: list[int] = []
    for frame in frames:
        pending.append(frame)
        if frame.pts is not None:
            heapq.heappush(times, frame.pts)
        if len(pending) > REORDER_FRAMES:
            yield _oldest(pending, times)
    while pending:
        yield _oldest(pending, times)


def _oldest(pending: collections.deque, times: list[int]) -> tuple[av.VideoFrame, int | None]:
    frame = pending.popleft()
    return frame, heapq.heappop(times) if frame.pts is not None and times else frame.pts


class VideoFileSource:
    """Decodes the first video stream of a file to RGB `DecodedFrame`s, keeping pts and time base."""

    def __init__(self, path: str) -> None:
        self.container = _open_input(path)
        if not self.container.streams.video:
            self.container.close()
            raise UserError(f"{path}: has no video stream; give a video file")
        self.stream = self.container.streams.video[0]
        if self.stream.codec_context is None:  # no decoder for its codec id: e.g. a cut-off or damaged header
            self.container.close()
            raise UserError(f"{path}: FFmpeg has no decoder for its video stream; the file may be truncated or "
                            "damaged, or convert it with ffmpeg first")
        self.stream.thread_type = "AUTO"
        self.info = _stream_info(self.stream, path)
        self.info.display_matrix = _display_matrix(path, self.stream.index)
        if self.info.pix_fmt is None or self.info.width <= 0:
            self.container.close()
            raise UserError(f"{path}: unsupported or unknown pixel format; convert it with ffmpeg first")
        self.skipped = 0
        self.dropped = 0
        self.i420 = False  # True: 8-bit 4:2:0 frames of even size come as I420 planes (DecodedFrame.ycbcr)
        cc = self.stream.codec_context
        self._colour = ColourConverter(cc.colorspace, cc.color_range, self.info.pix_fmt, self.info.height)
        self._lock = threading.Lock()  # held while FFmpeg reads or decodes, so close() never frees under it
        self._closed = False
        self._after_loss: set[int] = set()  # id() of frames decoded right after an undecodable packet

    def __iter__(self) -> Iterator[DecodedFrame]:
        for index, (frame, pts) in enumerate(presentation_times(self._decoded())):
            planes = self._colour.i420_of(frame) if self.i420 else None
            try:
                image = planes[0] if planes else self._colour.to_rgb(frame)
            except (ValueError, av.FFmpegError) as exc:
                raise UserError(f"{self.info.name}: pixel format {frame.format.name} cannot be converted "
                                f"to RGB ({exc}); convert it with ffmpeg first") from None
            lost = id(frame) in self._after_loss
            self._after_loss.discard(id(frame))
            yield DecodedFrame(image, index, pts, frame.time_base, captured_at=time.monotonic(),
                               duration=frame.duration or None, discontinuity="corrupt" if lost else None,
                               ycbcr=planes[1] if planes else None)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Frames in presentation order; packets that fail to decode are skipped and counted.
        Ends quietly when close() was called (from any thread); UserError when the file ends early."""
        in_a_row, lost, seen = 0, False, _Extent()
        packets = self.container.demux(self.stream)
        while True:
            with self._lock:  # one packet read and decoded; close() waits for it
                packet = None if self._closed else _next_packet(packets, self.info.name, seen.packets)
                if packet is None:
                    break
                seen.add(packet)
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    frames = None
            if frames is None:
                self.skipped += 1
                in_a_row, lost = in_a_row + 1, True
                if in_a_row > MAX_ERRORS_IN_A_ROW:
                    raise UserError(f"{self.info.name}: stopped after {in_a_row} undecodable packets in a "
                                    "row; the file is corrupt") from None
                continue
            if lost and frames:  # the first frame after lost ones (a temporal model starts afresh there)
                self._after_loss.add(id(frames[0]))
                lost = False
            in_a_row = 0
            yield from frames
        if not self._closed:
            seen.check_complete(self.container, self.stream, self.info)

    def close(self) -> None:
        """Safe from any thread: waits for the packet being decoded, then frees the file."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.container.close()


def _next_packet(packets: Iterator[av.Packet], name: str, read: int) -> av.Packet | None:
    """The next packet, None at the end; UserError when the file cannot be read on."""
    try:
        return next(packets, None)
    except av.FFmpegError as exc:
        raise UserError(f"{name}: cannot read on after {read} frames ({exc.__class__.__name__}); the file is "
                        "damaged") from None


class _Extent:
    """How far demuxing got: packets read and the end time (pts + duration) of the latest one."""

    def __init__(self) -> None:
        self.packets, self.end = 0, None

    def add(self, packet: av.Packet) -> None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None and packet.size:
            self.packets += 1
            end = ts + (packet.duration or 0)
            self.end = end if self.end is None else max(self.end, end)

    def check_complete(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                       info: StreamInfo) -> None:
        """UserError when the file ended well before the end its header declares (a file cut off: an MP4 with
        its index at the front, a Matroska/WebM file whose duration was written when it was finished): the
        output would look complete but not be."""
        declared = _declared_end(container, stream)
        if declared is None or self.end is None or (stream.frames and self.packets >= stream.frames):
            return
        missing = declared - float(self.end * stream.time_base)
        if missing > 2.0 / float(info.average_rate or 25):
            held = (f"{self.packets} of the {stream.frames} frames its index declares" if stream.frames else
                    f"{float(self.end * stream.time_base):.2f} s of the {declared:.2f} s its header declares")
            fixed = shlex.quote(f"fixed{Path(info.name).suffix}")
            raise UserError(f"{info.name}: the file ends early ({held}): it is truncated; to restore what it "
                            f"holds, remux it first: ffmpeg -i {shlex.quote(info.name)} -c copy {fixed}")


def _declared_end(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Seconds (on the stream's clock) where the header says the video ends, None when it does not say.
    MP4: the index's duration and frame count. Matroska/WebM: the track's DURATION tag (FFmpeg and
    most muxers write it), else the segment duration when the video is the only stream."""
    tb = stream.time_base
    if stream.duration and stream.frames:
        return float((stream.duration + (stream.start_time or 0)) * tb)
    if "matroska" not in container.format.name:
        return None
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    if container.duration and len(container.streams) == 1:
        return (container.duration + (container.start_time or 0)) / av.time_base
    return None


def _stream_info(stream: av.video.stream.VideoStream, path: str) -> StreamInfo:
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    colour = {"colorspace": cc.colorspace, "color_range": cc.color_range,
              "color_primaries": cc.color_primaries, "color_trc": cc.color_trc}
    return StreamInfo(width=cc.width, height=cc.height, time_base=stream.time_base,
                      average_rate=Fraction(rate) if rate else None, frames=stream.frames or None,
                      colour=colour, sample_aspect_ratio=cc.sample_aspect_ratio, name=path,
                      pix_fmt=cc.pix_fmt, codec=cc.name, field_order=cc.field_order or 0)


def _display_matrix(path: str, index: int, packets: int = 64) -> tuple[int, ...] | None:
    """The display matrix of video stream `index` (rotation, flips), None when it has none. FFmpeg hands it
    to each decoded frame (PyAV has no reader for the stream's own copy), so this decodes the first frame of
    a second opening; a file that cannot give one within `packets` packets has none as far as we know."""
    try:
        with av.open(path, "r") as container:
            stream = container.streams[index]
            for count, packet in enumerate(container.demux(stream)):
                for frame in packet.decode():
                    data = frame.side_data.get(SideDataType.DISPLAYMATRIX)
                    return tuple(np.frombuffer(bytes(data), "<i4").tolist()) if data is not None else None
                if count >= packets:
                    return None
    except (av.FFmpegError, ValueError, OSError):
        return None
    return None


def default_codec(path: str) -> str:
    """The encoder used when --codec is not given: by the output suffix, else libx264."""
    return DEFAULT_CODEC.get(Path(path).suffix.lower(), "libx264")


def output_pix_fmt(codec: av.Codec, info: StreamInfo) -> str:
    """The input's pixel format if the encoder takes it (4:4:4 when x264/x265 refuse an odd size)."""
    formats = [f.name for f in codec.video_formats or ()] or [info.pix_fmt or "yuv420p"]  # none listed: any (rawvideo)
    wanted = info.pix_fmt if info.pix_fmt in formats else ("yuv420p" if "yuv420p" in formats else formats[0])
    odd = info.width % 2 or info.height % 2
    if odd and codec.name in ("libx264", "libx265") and ("420" in wanted or "422" in wanted):
        wanted = wanted.replace("420", "444").replace("422", "444")
    return wanted


class VideoFileSink:
    """Encodes RGB frames at their own pts into a temporary file, renamed into place on close.

    Audio and subtitle streams of `copy_from` are copied packet by packet (no re-encoding),
    interleaved with the video by time.
    """

    def __init__(self, path: str, info: StreamInfo, *, codec: str | None = None, crf: int | None = None,
                 copy_from: str | None = None, preset: str | None = None, tune: str | None = None) -> None:
        self.dest = Path(path)
        self.tmp = temporary_path(self.dest)
        self.info = info
        self.frames = 0
        self._end_time = 0.0
        self._durations: dict[int, int | None] = {}
        try:
            self.container = av.open(str(self.tmp), "w")
        except (av.FFmpegError, ValueError) as exc:
            raise UserError(f"{path}: cannot write this kind of file ({exc}); use e.g. .mp4 or .mkv") from None
        try:
            self.stream = self._add_video(codec or default_codec(path), crf, preset, tune)
            self._copy = _StreamCopier(copy_from, self.container) if copy_from else None
        except BaseException:
            self.abort()
            raise

    def _add_video(self, codec_name: str, crf: int | None, preset: str | None,
                   tune: str | None) -> av.video.stream.VideoStream:
        info = self.info
        stream = self.container.add_stream(codec_name, rate=info.average_rate or Fraction(25))
        stream.width, stream.height = info.width, info.height
        stream.pix_fmt = output_pix_fmt(stream.codec_context.codec, info)
        if info.time_base:
            stream.time_base = stream.codec_context.time_base = info.time_base
        cc = stream.codec_context
        for key in ("colorspace", "color_range", "color_primaries", "color_trc"):
            if info.colour.get(key):
                setattr(cc, key, info.colour[key])
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        self._keep_display(stream)
        options = speed_options(codec_name, preset, tune, live=info.is_live)
        options.update(self._keep_fields(cc, codec_name))
        if crf is not None:  # x264's crf 0 is lossy above 8 bits; qp 0 is lossless at any depth
            options.update({"qp": "0"} if crf == 0 and codec_name == "libx264" else {"crf": str(crf)})
        if options:
            stream.options = options
        self._colour = ColourConverter(info.colour.get("colorspace", 2), info.colour.get("color_range", 0),
                                       stream.pix_fmt, info.height)
        return stream

    def _keep_display(self, stream: av.video.stream.VideoStream) -> None:
        """The input's display matrix (rotation, flips), and its colour tags even when only the range is
        given: MP4/MOV write them in a `colr` box only when asked (x264 signals a range alone nowhere)."""
        if self.info.display_matrix:
            stream.set_display_matrix(self.info.display_matrix)
        tagged = any(self.info.colour.get(key) not in (None, 0, 2) for key in ("color_range", "colorspace"))
        if tagged and self.container.format.name in MOV_MUXERS:
            self.container.options["movflags"] = "+write_colr"

    def _keep_fields(self, cc: av.video.codeccontext.VideoCodecContext, codec_name: str) -> dict[str, str]:
        """Interlaced input stays flagged interlaced: its field order on the stream (what the container
        records), and x264 coding the frames as fields in that order (what an H.264 decoder reports).
        Returns the encoder options this needs."""
        order = self.info.field_order
        if order not in INTERLACED:
            return {}
        cc.field_order = order
        if codec_name != "libx264":
            return {}
        cc.flags |= Flags.interlaced_dct | Flags.interlaced_me
        return {"x264-params": f"{INTERLACED[order]}=1"}

    def write(self, image: np.ndarray, frame: DecodedFrame) -> None:
        """Encode one restored picture (R'G'B' (H, W, 3) uint8, or I420 planes: see DecodedFrame) at the pts of
        `frame` (its index if it has none)."""
        out = self._colour.from_image(image, frame, self.stream.pix_fmt)
        tb = self.stream.codec_context.time_base
        out.pts = frame.index if frame.pts is None else int(frame.pts * (frame.time_base or tb) / tb)
        if frame.duration:
            out.duration = frame.duration
        self._end_time = float((out.pts + (frame.duration or 1)) * tb)
        self._durations[out.pts] = frame.duration
        try:
            if self._copy:
                self._copy.mux_until(self._end_time)
            self._mux(self.stream.encode(out))
        except av.FFmpegError as exc:
            raise self._failed(exc) from None
        self.frames += 1

    def _failed(self, exc: av.FFmpegError) -> UserError:
        """One line naming OUTPUT (FFmpeg names the temporary file)."""
        return UserError(f"{self.dest}: encoding failed after {self.frames} frames ({exc.strerror}); try another "
                         "--codec or OUTPUT format")

    def _mux(self, packets: list[av.Packet]) -> None:
        """Mux encoded packets with their frame's own duration (x264 drops it; the last frame needs it)."""
        for packet in packets:
            duration = self._durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
        self.container.mux(packets)

    def close(self, complete: bool = True) -> int:
        """Flush the encoder, copy the rest of the audio (up to the last frame if not complete), rename.
        If that fails the temporary file is removed: nothing half-written is left behind."""
        try:
            self._mux(self.stream.encode(None))
            if self._copy:
                self._copy.mux_until(None if complete else self._end_time)
                self._copy.close()
            self.container.close()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, av.FFmpegError):
                raise self._failed(exc) from None
            raise
        os.replace(self.tmp, self.dest)
        return self.frames

    def abort(self) -> None:
        """Close without finishing and remove the temporary file."""
        for closable in (getattr(self, "_copy", None), self.container):
            try:
                if closable:
                    closable.close()
            except Exception:  # noqa: BLE001 - best effort: the file is deleted next
                pass
        self.tmp.unlink(missing_ok=True)


class _StreamCopier:
    """Copies the audio and subtitle packets of an input file into an output container, by time."""

    def __init__(self, path: str, output: av.container.OutputContainer) -> None:
        self.input = av.open(path, "r")
        self.output = output
        self.streams = {}
        for stream in self.input.streams:
            if stream.type not in ("audio", "subtitle"):
                continue
            try:
                self.streams[stream.index] = output.add_stream_from_template(stream)
            except (ValueError, av.FFmpegError) as exc:
                print(f"streamrestore: warning: {path}: {stream.type} stream {stream.index} "
                      f"({stream.codec_context.name}) not copied: {exc}", file=sys.stderr)
        self._packets = self.input.demux([self.input.streams[i] for i in self.streams]) if self.streams else iter(())
        self._pending: av.Packet | None = None

    def mux_until(self, seconds: float | None) -> None:
        """Mux the packets that start before `seconds` (all of them when None)."""
        while self.streams:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            ts = packet.dts if packet.dts is not None else packet.pts
            if ts is None:  # demuxer flush packet
                continue
            if seconds is not None and float(ts * packet.time_base) >= seconds:
                self._pending = packet
                return
            packet.stream = self.streams[packet.stream_index]
            self.output.mux(packet)

    def close(self) -> None:
        self.input.close()
