"""pytest fixtures for live-feed tests: tiny generated clips and a real RTSP server on 127.0.0.1.

The server is tests/rtsp_server.py under the system python (GStreamer RTSP server through
python3-gi, see .ci/apt-packages.txt); tests that need it skip cleanly when it is missing.
"""
from __future__ import annotations

import functools
import os
import socket
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
_GI_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'h264parse', 'avdec_h264'))")


@functools.cache
def gst_rtsp_missing() -> str | None:
    """Why the test server cannot run here, or None when it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    result = subprocess.run([SYSTEM_PYTHON, "-c", _GI_CHECK], capture_output=True, text=True, timeout=30)
    if result.returncode:
        return "GStreamer RTSP server not installed (apt-get install $(cat .ci/apt-packages.txt))"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_clip(path: Path, frames: int = 30, fps: int = 15, size: tuple[int, int] = (64, 48)) -> Path:
    """A small H.264 clip: a bright column sweeping right over a green ramp."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 1] = (i * 255) // max(1, frames - 1)
            image[:, (i * 2) % width] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


class RtspServer:
    """tests/rtsp_server.py on a fixed port: start, stop (kill) and restart like a real camera."""

    def __init__(self, args: list[str], port: int | None = None) -> None:
        self.args, self.port = args, port or free_port()
        self.process: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 10.0) -> "RtspServer":
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline()  # "READY <port>", or "" when it died
        if not line.startswith("READY") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"test RTSP server did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process.stdout.close()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def rtsp_clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


@pytest.fixture
def rtsp_server(tmp_path: Path, rtsp_clip: Path):
    """A server with two camera mounts (cam, cam2) and a publishing mount (pub, read at pub/play)."""
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)
    server = RtspServer(["--serve", f"cam={rtsp_clip}", "--serve", f"cam2={rtsp_clip}", "--record", "pub"])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def rtsp_server_factory(rtsp_clip: Path):
    """Makes extra single-camera servers (one per feed, so one can die alone)."""
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)
    servers: list[RtspServer] = []

    def make() -> RtspServer:
        servers.append(RtspServer(["--serve", f"cam={rtsp_clip}"]).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"rtsp://127.0.0.1:{sock.getsockname()[1]}/cam"
