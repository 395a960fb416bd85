"""Live feeds: an RTSP camera source that survives drops and stalls, an RTSP publisher, and
segmented file output (DESIGN.md sections 3 and 7).

`RtspSource` reads with PyAV over TCP (UDP on request) inside a session thread. A supervisor thread
is our own watchdog: no frame for `stall_timeout` seconds (PyAV open/read can hang when a server
accepts but sends nothing), or a session that ends, means reopen after an exponential backoff.
One `ReconnectPolicy` covers the first connection and every later drop. Output pts stay
monotonic across reconnects (the new session continues after the real gap). With the "latest"
policy a 1-slot buffer keeps only the newest frame and counts the ones it replaced.

Capture time: when the sender's RTCP reports have arrived, FFmpeg's `start_time_realtime` (wall
clock of pts 0, microseconds) dates each frame on the sender's clock; `captured_at` is then the
sender's capture instant on our monotonic clock and timings["network"] the sender-to-decoded
milliseconds. Before the first report (about the first 2 s) it is the decode instant.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, FrameSink, StreamInfo
from streamrestore.io.encoding import speed_options
from streamrestore.io.video import ColourConverter

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)  # RTP video clock; every frame we emit uses it
LIVE_POLICIES = ("latest", "all")
TRANSPORTS = ("tcp", "udp")
STALL_TIMEOUT = 3.0  # seconds without a frame before a feed is reconnected (`--stall-timeout`; profiles may set their own)
RECONNECT_ATTEMPTS = 5  # attempts after the quick probes (`--reconnect`)


@dataclass(frozen=True)
class ReconnectPolicy:
    """When to try again after a feed drops, stalls or cannot be reached.

    A feed that was delivering frames is probed every `quick_delay` seconds for the first `quick_for`
    seconds of an outage (a refused connection costs a few milliseconds), so frames flow again within
    about `quick_delay` plus the connection time of the camera being back; a longer outage, and a
    first connection that never succeeded, get `attempts` attempts with exponential backoff
    (`first_delay` * 2**(n-1), capped at `max_delay`). The quick probes do not count as attempts;
    attempts=0 reconnects never, attempts=None forever. Defaults: a feed lost gives up about 46 s
    into the outage (30 s of probes, then 0.5 + 1 + 2 + 4 + 8 s), a camera never reached after 15 s.
    """

    attempts: int | None = RECONNECT_ATTEMPTS
    first_delay: float = 0.5
    max_delay: float = 8.0
    quick_for: float = 30.0
    quick_delay: float = 0.25

    @classmethod
    def parse(cls, text: str | int) -> "ReconnectPolicy":
        """`--reconnect N|forever`."""
        if str(text).lower() == "forever":
            return cls(attempts=None)
        try:
            attempts = int(text)
        except ValueError:
            raise UserError(f"--reconnect {text!r}: give a number of attempts or 'forever'") from None
        if attempts < 0:
            raise UserError(f"--reconnect {text!r}: the number of attempts must be 0 or more")
        return cls(attempts=attempts)

    def delay(self, attempt: int) -> float:
        """The wait before backoff attempt `attempt` (1, 2, ...)."""
        return min(self.max_delay, self.first_delay * 2 ** max(0, attempt - 1))

    def quick(self, outage: float, ever_connected: bool) -> bool:
        """Whether an outage `outage` seconds old is still probed quickly (and the probe is not an attempt)."""
        return ever_connected and self.attempts != 0 and outage < self.quick_for

    def gives_up_after(self, failures: int) -> bool:
        return self.attempts is not None and failures > self.attempts


class _Session:
    """One connection: opens the URL and decodes until it ends, fails or is cancelled."""

    def __init__(self, source: "RtspSource") -> None:
        self.source = source
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.last_activity = time.monotonic()
        self.frames = 0
        self.blocked = False  # waiting for the consumer ("all" policy): not a stall
        self.reason = "stream ended"
        self.offset: float | None = None  # seconds added to this session's pts
        self.colour: ColourConverter | None = None  # from the first frame's stream tags
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"rtsp-session {source.url}")
        self.thread.start()

    def _run(self) -> None:
        src = self.source
        try:
            container = av.open(src.url, "r", options=src.av_options(),
                                timeout=(src.open_timeout, src.stall_timeout))
        except Exception as exc:  # noqa: BLE001 - every open failure is a reason to retry
            self.reason = f"cannot open ({_describe(exc)})"
            self.finished.set()
            return
        try:
            if not container.streams.video:
                self.reason = "no video stream"
                return
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if self.cancelled.is_set():
                    return
                self.last_activity = time.monotonic()
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    src.skipped += 1
                    continue
                for frame in frames:
                    src._deliver(frame, stream, container, self)
        except Exception as exc:  # noqa: BLE001 - a read error is a dropped connection
            self.reason = f"read failed ({_describe(exc)})"
        finally:
            container.close()
            self.finished.set()


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".splitlines()[0][:200]


class RtspSource:
    """Frames of a live RTSP feed, (H, W, 3) uint8 RGB, pts in 1/90000 s, monotonic across reconnects.

    The constructor connects (under the reconnect policy) and waits for the first frame, so
    `info` is complete; it raises UserError when the policy gives up first.
    """

    def __init__(self, url: str, *, policy: str = "latest", transport: str = "tcp",
                 reconnect: ReconnectPolicy = ReconnectPolicy(), open_timeout: float = 5.0,
                 stall_timeout: float = STALL_TIMEOUT, duration: float | None = None, queue_size: int = 64) -> None:
        if policy not in LIVE_POLICIES:
            raise UserError(f"--live-policy {policy!r} is not known; use one of {', '.join(LIVE_POLICIES)}")
        if transport not in TRANSPORTS:
            raise UserError(f"--rtsp-transport {transport!r} is not known; use one of {', '.join(TRANSPORTS)}")
        self.url, self.policy, self.transport = url, policy, transport
        self.reconnect, self.open_timeout, self.stall_timeout = reconnect, open_timeout, stall_timeout
        self.duration = duration
        self.info = StreamInfo(width=0, height=0, time_base=TIME_BASE, is_live=True, name=url)
        self.skipped = 0
        self.dropped = 0
        self.i420 = False  # True: 8-bit 4:2:0 frames of even size come as I420 planes (DecodedFrame.ycbcr)
        self.reconnects = 0  # sessions that delivered frames after the first one
        self.events: collections.deque[str] = collections.deque(maxlen=100)  # latest drops/attempts, for the report
        self._capacity = 1 if policy == "latest" else max(1, queue_size)
        self._buffer: collections.deque[DecodedFrame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._done = False
        self._error: UserError | None = None
        self._received = 0
        self._last_out: float | None = None  # seconds, last emitted pts
        self._last_seen = 0.0  # monotonic time of the last frame received
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name=f"rtsp-watchdog {url}")
        self._supervisor.start()
        with self._cond:
            while not self._buffer and not self._done:
                self._cond.wait(0.1)
        if not self._buffer and self._error is not None:
            raise self._error

    def av_options(self) -> dict[str, str]:
        """FFmpeg's options for each connection. The stream analysis at open is kept short (0.25 s) and its
        packets are kept (no `fflags nobuffer`): they hold the key frame the camera sent first, without
        which decoding waits a whole GOP (1-4 s on cameras) after every reconnect."""
        return {"rtsp_transport": self.transport, "timeout": str(int(self.stall_timeout * 1e6)),
                "flags": "low_delay", "analyzeduration": "250000", "probesize": "65536"}

    # -- watchdog -------------------------------------------------------------------------------

    def _supervise(self) -> None:
        failures, ever_connected, outage_start = 0, False, None
        while not self._closed.is_set():
            session = _Session(self)
            self._watch(session)
            if self._closed.is_set():
                break
            if session.frames:
                failures, ever_connected, outage_start = 0, True, None
            if outage_start is None:
                outage_start = self._last_seen if session.frames else time.monotonic()
            if self.reconnect.quick(time.monotonic() - outage_start, ever_connected):
                if session.frames:  # the outage begins: say so once, not at every probe
                    self._event(f"{self.url}: {session.reason}; reconnecting (probing every "
                                f"{self.reconnect.quick_delay:g} s for {self.reconnect.quick_for:g} s, then with backoff)")
                self._closed.wait(self.reconnect.quick_delay)
                continue
            failures += 1
            if self.reconnect.gives_up_after(failures):
                outage = time.monotonic() - outage_start
                self._finish(UserError(self._give_up_message(session.reason, failures, ever_connected, outage)))
                return
            delay = self.reconnect.delay(failures)
            limit = "" if self.reconnect.attempts is None else f"/{self.reconnect.attempts}"
            self._event(f"{self.url}: {session.reason}; reconnect attempt {failures}{limit} in {delay:.1f} s")
            self._closed.wait(delay)
        self._finish(None)

    def _event(self, line: str) -> None:
        self.events.append(line)
        log.warning(line)

    def _watch(self, session: _Session) -> None:
        """Wait for the session to end; cancel it when it stalls (no frame within the timeout)."""
        while not session.finished.wait(0.1):
            if self._closed.is_set():
                session.cancelled.set()
                return
            idle = time.monotonic() - session.last_activity
            limit = self.stall_timeout + (self.open_timeout if session.frames == 0 else 0.0)
            if idle > limit and not session.blocked:
                session.reason = f"no frame for {idle:.1f} s (stalled)"
                session.cancelled.set()  # the thread exits when PyAV returns; we do not wait
                return

    def _give_up_message(self, reason: str, failures: int, ever_connected: bool, outage: float) -> str:
        what = f"feed lost for {outage:.0f} s" if ever_connected else "cannot connect"
        return (f"{self.url}: {what} after {failures} attempt(s) ({reason}); check the camera and the "
                "URL, or use --reconnect forever")

    def _finish(self, error: UserError | None) -> None:
        with self._cond:
            self._error, self._done = error, True
            self._cond.notify_all()

    # -- frames ---------------------------------------------------------------------------------

    def _deliver(self, frame: av.VideoFrame, stream, container, session: _Session) -> None:
        now, wall = time.monotonic(), time.time()
        if session.colour is None:
            cc = stream.codec_context
            session.colour = ColourConverter(cc.colorspace, cc.color_range, cc.pix_fmt, frame.height)
        if self.info.width == 0:
            rate = stream.average_rate or stream.guessed_rate
            self.info.width, self.info.height = frame.width, frame.height
            self.info.average_rate = Fraction(rate) if rate else None
            self.info.codec = stream.codec_context.name
        same_size = (frame.height, frame.width) == (self.info.height, self.info.width)
        planes = session.colour.i420_of(frame) if self.i420 and same_size else None
        image = planes[0] if planes else session.colour.to_rgb(frame)
        if not same_size:  # camera reconfigured
            image = cv2.resize(image, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)
        seconds = float(frame.pts * frame.time_base) if frame.pts is not None else None
        out = self._output_seconds(seconds, now, session)
        timings, captured = {}, now
        realtime = container.start_time_realtime
        if seconds is not None and realtime:
            network = wall - (realtime / 1e6 + seconds)
            if 0.0 <= network < 60.0:  # same-clock sanity check
                captured, timings = now - network, {"network": network * 1e3}
        item = DecodedFrame(image=image, index=self._received, pts=round(out / TIME_BASE),
                            time_base=TIME_BASE, captured_at=captured, timings=timings,
                            ycbcr=planes[1] if planes else None)
        self._received += 1
        session.frames += 1
        if session.frames == 1 and self._received > 1:
            self.reconnects += 1
            log.warning("%s: reconnected, frames flowing again", self.url)
        self._push(item, session)

    def _output_seconds(self, seconds: float | None, now: float, session: _Session) -> float:
        """This frame's output time: continues after the last one, keeping the real gap."""
        step = 1.0 / float(self.info.average_rate) if self.info.average_rate else 1.0 / 30
        if self._last_out is None:
            out = 0.0
            session.offset = -(seconds or 0.0)
        elif session.offset is None or seconds is None:
            out = self._last_out + max(step, now - self._last_seen)
            if seconds is not None:
                session.offset = out - seconds
        else:
            out = seconds + session.offset
        if self._last_out is not None:
            out = max(out, self._last_out + float(TIME_BASE))
        self._last_out, self._last_seen = out, now
        return out

    def _push(self, item: DecodedFrame, session: _Session) -> None:
        with self._cond:
            if self.policy == "latest":
                while len(self._buffer) >= self._capacity:
                    self._buffer.popleft()
                    self.dropped += 1
            else:
                while len(self._buffer) >= self._capacity and not (session.cancelled.is_set() or self._closed.is_set()):
                    session.blocked = True
                    self._cond.wait(0.1)
                session.blocked = False
                session.last_activity = time.monotonic()
            self._buffer.append(item)
            self._cond.notify_all()

    def __iter__(self) -> Iterator[DecodedFrame]:
        """Frames until the feed ends, or `duration` seconds after the first one (also while it is down)."""
        started = None
        while True:
            with self._cond:
                while not self._buffer and not self._done and not self._expired(started):
                    self._cond.wait(0.1)
                if not self._buffer:
                    break
                item = self._buffer.popleft()
                self._cond.notify_all()
            started = started if started is not None else time.monotonic()
            if self._expired(started):
                break
            yield item
        if self._error is not None and started is not None:
            raise self._error

    def _expired(self, started: float | None) -> bool:
        return self.duration is not None and started is not None and time.monotonic() - started >= self.duration

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._done = True
            self._cond.notify_all()
        self._supervisor.join(timeout=2.0)


class H264Sink:
    """Encodes restored frames to H.264 (libx264; by default veryfast, zero latency) into a file or an
    RTSP publisher.

    pts come from each frame (rescaled to 1/90000); a non-increasing one is nudged forward by one
    tick so the encoder and muxer accept it. `realtime=True` paces writes by pts (publishing a file).
    """

    def __init__(self, target: str, info: StreamInfo, *, format: str | None = None,
                 options: dict[str, str] | None = None, gop_seconds: float = 1.0, crf: int = 23,
                 realtime: bool = False, open_timeout: float = 5.0, preset: str | None = None,
                 tune: str | None = None) -> None:
        self.target, self.info, self.realtime = target, info, realtime
        try:
            self.container = av.open(target, "w", format=format, options=options or {}, timeout=open_timeout)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{target}: cannot open the output ({_describe(exc)})") from None
        rate = info.average_rate or Fraction(30)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = info.width - info.width % 2, info.height - info.height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = TIME_BASE
        self.stream.codec_context.time_base = TIME_BASE
        self.stream.codec_context.gop_size = max(1, round(float(rate) * gop_seconds))
        self.stream.codec_context.options = {**speed_options("libx264", preset, tune, live=True), "crf": str(crf)}
        self._colour = ColourConverter(info.colour.get("colorspace", 2), info.colour.get("color_range", 0),
                                       "yuv420p", self.stream.height)
        for key in ("colorspace", "color_range", "color_primaries", "color_trc"):
            if info.colour.get(key):
                setattr(self.stream.codec_context, key, info.colour[key])
        self.frames = 0
        self._last_pts: int | None = None
        self._clock: tuple[float, float] | None = None  # (monotonic, seconds) of the first frame
        if format == "rtsp":  # connect (ANNOUNCE, SETUP, RECORD) now, not at the first frame
            self._connect(open_timeout)

    def _connect(self, timeout: float) -> None:
        """Write the header; a server that accepts TCP and never answers fails within the socket `timeout`."""
        started = time.monotonic()
        try:
            self.container.start_encoding()
        except Exception as exc:  # noqa: BLE001 - refused, no answer, not an RTSP server: one line
            self.abort()
            waited = time.monotonic() - started
            why = f"no answer within {timeout:g} s" if waited >= 0.9 * timeout else _describe(exc)
            raise UserError(f"{self.target}: cannot publish ({why}); check the URL and that the server takes "
                            "RTSP publishing (RECORD)") from None

    def write(self, image: np.ndarray, frame: DecodedFrame) -> None:
        pts = round(frame.pts * frame.time_base / TIME_BASE) if frame.pts is not None and frame.time_base else None
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + 1
        self._last_pts = pts
        if self.realtime:
            self._pace(pts * float(TIME_BASE))
        video = (self._colour.from_image(image, frame, "yuv420p") if frame.ycbcr is not None  # even sizes only
                 else self._colour.from_rgb(image[: self.stream.height, : self.stream.width], "yuv420p"))
        video.pts, video.time_base = pts, TIME_BASE
        self._mux(self.stream.encode(video))
        self.frames += 1

    def _pace(self, seconds: float) -> None:
        if self._clock is None:
            self._clock = (time.monotonic(), seconds)
        wait = self._clock[0] + (seconds - self._clock[1]) - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 1.0))

    def _mux(self, packets) -> None:
        try:
            self.container.mux(packets)
        except Exception as exc:  # noqa: BLE001 - e.g. the RTSP server went away
            raise UserError(f"{self.target}: writing the output failed ({_describe(exc)})") from None

    def close(self, complete: bool = True) -> int:
        try:
            self._mux(self.stream.encode(None))
        finally:
            self.container.close()
        return self.frames

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - best effort on the error path
            pass


def rtsp_sink(url: str, info: StreamInfo, *, transport: str = "tcp", realtime: bool = False,
              preset: str | None = None, tune: str | None = None, timeout: float = 5.0) -> H264Sink:
    """Publish restored frames to an RTSP server (RECORD) so any player can watch them. `timeout`: seconds
    any socket read or write may wait (FFmpeg's `timeout`, in microseconds), connecting included."""
    options = {"rtsp_transport": transport, "timeout": str(int(timeout * 1e6))}
    return H264Sink(url, info, format="rtsp", options=options, realtime=realtime, open_timeout=timeout,
                    preset=preset, tune=tune)


class SegmentedSink:
    """Output split into `stem_00000.ext`, `stem_00001.ext`, ... of about `segment_time` seconds.

    Each segment is closed (complete and playable) before the next starts, so a crash loses at
    most the segment being written. `open_segment(path, info)` makes each segment's sink.
    """

    def __init__(self, path: str, info: StreamInfo, segment_time: float,
                 open_segment: Callable[[str, StreamInfo], FrameSink] | None = None) -> None:
        if segment_time <= 0:
            raise UserError(f"--segment-time {segment_time}: give a positive number of seconds")
        self.path, self.info, self.segment_time = Path(path), info, segment_time
        self.open_segment = open_segment or (lambda p, i: H264Sink(p, i))
        self.paths: list[str] = []
        self.frames = 0
        self._sink: FrameSink | None = None
        self._start = 0.0

    def segment_path(self, number: int) -> str:
        return str(self.path.with_name(f"{self.path.stem}_{number:05d}{self.path.suffix}"))

    def write(self, image: np.ndarray, frame: DecodedFrame) -> None:
        seconds = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else frame.captured_at
        if self._sink is None or seconds - self._start >= self.segment_time:
            self._roll(seconds)
        self._sink.write(image, frame)

    def _roll(self, seconds: float) -> None:
        if self._sink is not None:
            self.frames += self._sink.close()
        self.paths.append(self.segment_path(len(self.paths)))
        self._sink = self.open_segment(self.paths[-1], self.info)
        self._start = seconds

    def close(self, complete: bool = True) -> int:
        if self._sink is not None:
            self.frames += self._sink.close()
            self._sink = None
        return self.frames

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None


def open_sink(url: str, info: StreamInfo, *, codec: str | None = None, **live_options) -> H264Sink:
    """`streamrestore.io.open_sink` for rtsp:// OUTPUTs: H.264 (libx264) is what RTSP players expect."""
    if codec not in (None, "libx264"):
        raise UserError(f"--codec {codec}: publishing to RTSP uses libx264; leave --codec out")
    return rtsp_sink(url, info, **live_options)
