"""A tiny RTSP server for the live-feed tests, run with the system python (`/usr/bin/python3`).

It needs Debian's GStreamer RTSP server (`.ci/apt-packages.txt`) and is not part of the package:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --serve cam=clip.mp4 --record restored

- `--serve NAME=CLIP` plays CLIP (any file GStreamer decodes) in an endless loop at
  rtsp://127.0.0.1:PORT/NAME, paced at the clip's frame rate and re-encoded live (H.264, zero
  latency), so it behaves like a camera: RTCP sender reports carry the wall-clock send time.
- `--record NAME` accepts RECORD (publishing) at rtsp://127.0.0.1:PORT/NAME and re-serves what
  arrives, unchanged, to readers at rtsp://127.0.0.1:PORT/NAME/play.

It prints "READY <port>" on stdout once it listens, and runs until killed.
"""
from __future__ import annotations

import argparse
import socket
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

CAMERA_LAUNCH = (
    "( appsrc name=src is-live=true format=time do-timestamp=true ! videoconvert "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
# RECORD re-served without Python in the data path: the published RTP goes out over a loopback
# UDP port, and the /play mount reads it back from there.
RTP_CAPS = "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96"
RECORD_LAUNCH = (
    "( rtph264depay name=depay0 ! h264parse config-interval=-1 ! rtph264pay pt=96 config-interval=1 "
    "! udpsink host=127.0.0.1 port={port} sync=false async=false )"
)
REPLAY_LAUNCH = (
    '( udpsrc address=127.0.0.1 port={port} caps="{caps}" ! rtph264depay ! h264parse config-interval=-1 '
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def decode_clip(path: str) -> tuple[list[bytes], Gst.Caps, float]:
    """All frames of `path` as raw I420 buffers, their caps, and the frame rate."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format=I420 '
        "! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames, caps = [], None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = sample.get_caps()
        frames.append(sample.get_buffer().extract_dup(0, sample.get_buffer().get_size()))
    pipeline.set_state(Gst.State.NULL)
    if not frames:
        sys.exit(f"rtsp_server: no frames decoded from {path}")
    ok, num, den = caps.get_structure(0).get_fraction("framerate")
    fps = num / den if ok and num > 0 and den > 0 else 15.0
    return frames, caps, fps


def serve_clip(factory: GstRtspServer.RTSPMediaFactory, path: str) -> None:
    """Feed the clip into each new media's appsrc on a timer, looping forever."""
    frames, caps, fps = decode_clip(path)

    def on_configure(_factory, media):
        src = media.get_element().get_by_name("src")
        src.set_property("caps", caps)
        state = {"n": 0, "gone": False}
        # get_status() would block while the media prepares, so track its end with a signal.
        media.connect("unprepared", lambda *_: state.update(gone=True))

        def push():
            if state["gone"]:
                return False  # the media is gone: stop this timer
            buf = Gst.Buffer.new_wrapped(frames[state["n"] % len(frames)])
            state["n"] += 1
            src.emit("push-buffer", buf)
            return True

        GLib.timeout_add(max(1, int(round(1000 / fps))), push)

    factory.set_launch(CAMERA_LAUNCH.format(gop=max(1, int(round(fps)))))
    factory.set_shared(True)
    factory.connect("media-configure", on_configure)


def serve_record(mounts: GstRtspServer.RTSPMountPoints, name: str) -> None:
    """RECORD at /name; readers of /name/play get what is published, not re-encoded."""
    port = free_udp_port()
    record = GstRtspServer.RTSPMediaFactory()
    record.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    record.set_launch(RECORD_LAUNCH.format(port=port))
    mounts.add_factory(f"/{name}", record)
    replay = GstRtspServer.RTSPMediaFactory()
    replay.set_launch(REPLAY_LAUNCH.format(port=port, caps=RTP_CAPS))
    replay.set_shared(True)
    mounts.add_factory(f"/{name}/play", replay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--serve", action="append", default=[], metavar="NAME=CLIP")
    parser.add_argument("--record", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    # One thread per client: the default single thread would let a reader waiting for the
    # publisher's first frame block the publisher itself.
    server.get_thread_pool().set_max_threads(-1)
    mounts = server.get_mount_points()
    for spec in args.serve:
        name, _, path = spec.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        serve_clip(factory, path)
        mounts.add_factory(f"/{name}", factory)
    for name in args.record:
        serve_record(mounts, name)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}")
    print(f"READY {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
