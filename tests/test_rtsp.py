"""Live feeds against a real RTSP server on 127.0.0.1 (tests/rtsp_server.py, GStreamer)."""
from __future__ import annotations

import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from rtsp_fixtures import rtsp_clip, rtsp_server, rtsp_server_factory, silent_server  # noqa: F401
from streamrestore.errors import UserError
from streamrestore.io.base import DecodedFrame, StreamInfo
from streamrestore.io.rtsp import H264Sink, ReconnectPolicy, RtspSource, SegmentedSink, rtsp_sink

FAST_RETRY = ReconnectPolicy(attempts=6, first_delay=0.2, max_delay=1.0)


def read_video(path) -> list[tuple[int, tuple[int, int]]]:
    with av.open(str(path)) as container:
        return [(f.pts, (f.width, f.height)) for f in container.decode(video=0)]


def test_reconnect_policy_backoff_and_parse():
    policy = ReconnectPolicy(attempts=3, first_delay=0.5, max_delay=2.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]
    assert not policy.gives_up_after(3) and policy.gives_up_after(4)
    default = ReconnectPolicy()  # a lost feed: quick probes for 30 s, then the backoff attempts
    assert default.quick(0.0, ever_connected=True) and default.quick(29.9, ever_connected=True)
    assert not default.quick(30.0, ever_connected=True)
    assert not default.quick(1.0, ever_connected=False)  # a camera never reached: attempts from the start
    assert not ReconnectPolicy(attempts=0).quick(1.0, ever_connected=True)  # --reconnect 0: never
    assert ReconnectPolicy.parse("forever").attempts is None
    assert ReconnectPolicy.parse("2").attempts == 2
    with pytest.raises(UserError, match="forever"):
        ReconnectPolicy.parse("often")


def test_segmented_sink_rolls_over_complete_files(tmp_path):
    info = StreamInfo(width=64, height=48, time_base=Fraction(1, 15), average_rate=Fraction(15))
    sink = SegmentedSink(str(tmp_path / "out.mp4"), info, segment_time=1.0)
    for i in range(40):  # 2.7 s at 15 fps -> 3 segments
        sink.write(np.full((48, 64, 3), i * 6, np.uint8), DecodedFrame(np.empty(0), i, pts=i, time_base=Fraction(1, 15)))
    assert sink.close() == 40
    assert [p.rsplit("/", 1)[1] for p in sink.paths] == ["out_00000.mp4", "out_00001.mp4", "out_00002.mp4"]
    assert [len(read_video(p)) for p in sink.paths] == [15, 15, 10]


@pytest.mark.rtsp
def test_live_feed_restored_for_n_seconds(rtsp_server, tmp_path):
    source = RtspSource(rtsp_server.url("cam"), duration=2.5)
    assert (source.info.width, source.info.height, source.info.is_live) == (64, 48, True)
    sink = H264Sink(str(tmp_path / "out.mp4"), source.info)
    for frame in source:
        sink.write(255 - frame.image, frame)  # a stand-in restoration
    written = sink.close()
    source.close()
    frames = read_video(tmp_path / "out.mp4")
    assert 25 <= written == len(frames) <= 45  # 15 fps for 2.5 s
    pts = [p for p, _ in frames]
    assert pts == sorted(set(pts)) and frames[0][1] == (64, 48)


@pytest.mark.rtsp
def test_server_restart_mid_run_reconnects(rtsp_server):
    source = RtspSource(rtsp_server.url("cam"), stall_timeout=1.0, reconnect=FAST_RETRY)
    seen: list[tuple[float, int]] = []
    restarted = threading.Event()

    def kill_and_restart():
        time.sleep(1.0)
        rtsp_server.stop()
        time.sleep(0.5)
        rtsp_server.start()
        restarted.set()

    threading.Thread(target=kill_and_restart, daemon=True).start()
    deadline = time.monotonic() + 15
    for frame in source:
        seen.append((time.monotonic(), frame.pts))
        if (restarted.is_set() and source.reconnects >= 1 and len(seen) > 5) or time.monotonic() > deadline:
            if sum(1 for t, _ in seen if t > seen[-1][0] - 0.5) >= 5:  # flowing again
                break
    source.close()
    assert source.reconnects == 1 and source.events
    pts = [p for _, p in seen]
    assert all(b > a for a, b in zip(pts, pts[1:])), "output pts must stay monotonic across the reconnect"
    gap = max(b[0] - a[0] for a, b in zip(seen, seen[1:]))
    assert gap < 8.0


def resume_delays(source: RtspSource, server, outages: list[float], settle: float = 1.5) -> list[float]:
    """Kill `server` for each of `outages` seconds (after `settle` s of frames) and restart it; returns, per
    outage, the seconds from the restarted server listening again to the next frame out of `source`."""
    arrivals: list[float] = []
    reader = threading.Thread(target=lambda: [arrivals.append(time.monotonic()) for _ in source], daemon=True)
    reader.start()
    delays = []
    for outage in outages:
        time.sleep(settle)
        assert arrivals and time.monotonic() - arrivals[-1] < 0.5, "frames flow before the outage"
        server.stop()
        time.sleep(outage)
        server.start()
        back = time.monotonic()
        deadline = back + 15
        while time.monotonic() < deadline and not (arrivals and arrivals[-1] > back):
            time.sleep(0.02)
        delays.append(min((t for t in arrivals if t > back), default=float("inf")) - back)
    source.close()
    reader.join(timeout=5)
    return delays


@pytest.mark.rtsp
def test_frames_again_soon_after_the_camera_is_back(rtsp_server):
    """The default policy: probe quickly while an outage is short, so frames flow again within about a
    second of the camera being back (the old 0.5, 1, 2, 4, 8 s backoff waited up to 4 s more after a 4 s outage)."""
    source = RtspSource(rtsp_server.url("cam"))
    delays = resume_delays(source, rtsp_server, outages=[1.5, 5.0])
    assert max(delays) < 1.5, delays
    assert source.reconnects == 2


@pytest.mark.rtsp
def test_duration_ends_a_feed_that_is_down(rtsp_server):
    """--duration S stops the feed S seconds after its first frame even while it is reconnecting."""
    source = RtspSource(rtsp_server.url("cam"), duration=2.0)
    threading.Timer(0.8, rtsp_server.stop).start()
    started = time.monotonic()
    frames = sum(1 for _ in source)  # ends without an error: the policy had not given up
    source.close()
    assert 3 <= frames <= 20 and time.monotonic() - started < 3.0


@pytest.mark.rtsp
def test_url_that_never_answers_fails_clearly(silent_server):
    started = time.monotonic()
    with pytest.raises(UserError, match=r"cannot connect after 2 attempt\(s\).*--reconnect forever"):
        RtspSource(silent_server, open_timeout=1.0, stall_timeout=1.0,
                   reconnect=ReconnectPolicy(attempts=1, first_delay=0.2))
    assert time.monotonic() - started < 8.0


@pytest.mark.rtsp
@pytest.mark.parametrize("policy", ["latest", "all"])
def test_live_policy_when_restore_is_slower_than_the_feed(rtsp_server, policy):
    source = RtspSource(rtsp_server.url("cam"), policy=policy, duration=2.0)
    ages = []
    for frame in source:
        time.sleep(0.15)  # restore at ~6 fps, feed at 15 fps
        ages.append(time.monotonic() - frame.captured_at)
    source.close()
    if policy == "latest":
        assert source.dropped >= 8 and max(ages) < 0.6  # stale frames dropped: latency stays bounded
    else:
        assert source.dropped == 0 and ages[-1] > ages[0] + 0.5  # every frame kept: latency grows


@pytest.mark.rtsp
def test_publish_and_read_back(rtsp_server):
    source = RtspSource(rtsp_server.url("cam"), duration=6.0)
    sink = rtsp_sink(rtsp_server.url("pub"), source.info)
    stop = threading.Event()

    def publish():
        for frame in source:
            sink.write(frame.image, frame)
            if stop.is_set():
                break
        sink.close()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    time.sleep(1.0)
    sizes = []
    with av.open(rtsp_server.url("pub/play"), options={"rtsp_transport": "tcp"}, timeout=(5, 5)) as player:
        for frame in player.decode(video=0):
            sizes.append((frame.width, frame.height))
            if len(sizes) >= 10:
                break
    stop.set()
    publisher.join(timeout=10)
    source.close()
    assert sizes == [(64, 48)] * 10 and sink.frames >= 10


@pytest.mark.rtsp
def test_two_feeds_on_one_engine_one_dies(rtsp_server_factory, tmp_path):
    from streamrestore.backends.base import PassthroughBackend
    from streamrestore.runtime.pipeline import run_streams
    from streamrestore.runtime.streams import StreamSpec

    servers = [rtsp_server_factory(), rtsp_server_factory()]
    specs = [StreamSpec(name=f"s{i}", input=s.url("cam"), output=str(tmp_path / f"s{i}.mp4")) for i, s in enumerate(servers)]
    open_source = lambda spec: RtspSource(spec.input, duration=4.0, stall_timeout=1.0,  # noqa: E731
                                          reconnect=ReconnectPolicy(attempts=1, first_delay=0.2, quick_for=0))
    open_sink = lambda spec, info: H264Sink(spec.output, info)  # noqa: E731
    threading.Timer(2.0, servers[1].stop).start()
    reports = run_streams(specs, PassthroughBackend(), open_source=open_source, open_sink=open_sink,
                          batch=2, batch_wait_ms=40)
    alive, dead = (r.summary() for r in reports)
    assert alive["error"] is None and 45 <= alive["frames"] <= 70
    assert "feed lost" in dead["error"] and 3 <= dead["frames"] < alive["frames"]
    assert len(read_video(tmp_path / "s0.mp4")) == alive["frames"]
    assert len(read_video(tmp_path / "s1.mp4")) == dead["frames"]  # what arrived before it died is kept
    assert max(r["batch"] for r in reports[0].records) == 2  # frames of both feeds shared engine calls


@pytest.mark.rtsp
def test_cli_streams_yaml_and_live_options(rtsp_server, tmp_path):
    from streamrestore.cli import main

    (tmp_path / "streams.yaml").write_text(
        f"streams:\n"
        f"  - {{name: a, input: '{rtsp_server.url('cam')}', output: '{tmp_path / 'a.mp4'}', report: '{tmp_path / 'a.json'}'}}\n"
        f"  - {{name: b, input: '{rtsp_server.url('cam2')}', output: '{tmp_path / 'b.mp4'}', segment_time: 1}}\n")
    assert main(["run", "--streams", str(tmp_path / "streams.yaml"), "--task", "passthrough",
                 "--profile", "surveillance", "--duration", "2", "--quiet"]) == 0
    assert 20 <= len(read_video(tmp_path / "a.mp4")) <= 40
    assert (tmp_path / "a.json").exists() and (tmp_path / "b_00001.mp4").exists()
    assert main(["run", rtsp_server.url("cam"), "--task", "passthrough", "-o", str(tmp_path / "c.mp4"),
                 "--profile", "driving", "--duration", "1.5", "--quiet"]) == 0
    assert 15 <= len(read_video(tmp_path / "c.mp4")) <= 30


@pytest.mark.rtsp
def test_temporal_state_resets_when_the_camera_reconnects(rtsp_server, temporal_weights):
    from streamrestore.backends.registry import create_backend
    from streamrestore.runtime.pipeline import run_pipeline
    from streamrestore.runtime.report import LatencyReport

    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(temporal_weights), noise="zero")
    source = RtspSource(rtsp_server.url("cam"), duration=7.0, stall_timeout=1.0, reconnect=FAST_RETRY)

    class Sink:
        written: list = []

        def write(self, image, frame):
            self.written.append((image, frame))

        def close(self, complete=True):
            return len(self.written)

        def abort(self):
            pass

    def kill_and_restart():
        time.sleep(1.5)
        rtsp_server.stop()
        time.sleep(0.5)
        rtsp_server.start()

    threading.Thread(target=kill_and_restart, daemon=True).start()
    sink, report = Sink(), LatencyReport()
    run_pipeline(source, engine, sink, report=report)
    assert source.reconnects >= 1 and report.resets.get("reconnect", 0) >= 1
    after = [(image, frame) for image, frame in sink.written if frame.discontinuity == "reconnect"]
    assert after, "the first frame after the reconnect is marked"
    for image, frame in after:  # restored from itself: nothing of the frames before the drop reaches it
        alone = engine(frame.image[None], frame.image[None])[0]
        assert np.abs(image.astype(np.int16) - alone).max() <= 1
    assert len(sink.written) > len(after) + 10  # frames kept flowing after the reconnect
