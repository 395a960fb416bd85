"""Fixed-value tests of the runtime pieces (issue 18): profile precedence, streams.yaml and which sink
an OUTPUT gets. Each asserts the exact settings, specs or sink a user would get."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from streamrestore.cli import build_parser
from streamrestore.cli.live import apply_profile, live_source_options, open_output
from streamrestore.errors import UserError
from streamrestore.io import open_sink
from streamrestore.io.base import DecodedFrame, StreamInfo
from streamrestore.io.images import ImageSink
from streamrestore.io.rtsp import ReconnectPolicy, SegmentedSink
from streamrestore.io.video import VideoFileSink
from streamrestore.runtime.profiles import profile_settings
from streamrestore.runtime.streams import StreamSpec, load_streams

# ---------------------------------------------------------------------------------------------
# profiles: the command line wins over the profile, the profile over the defaults
# ---------------------------------------------------------------------------------------------

LIVE = {"preset": "veryfast", "tune": "zerolatency"}  # both profiles encode for latency


def test_profile_settings_are_the_documented_tables():
    assert profile_settings(None) == {"batch": 1, "live_policy": "latest", "stall_timeout": 3.0, "batch_wait_ms": 0.0,
                                      "preset": None, "tune": None}
    assert profile_settings("driving") == {"batch": 1, "live_policy": "latest", "stall_timeout": 2.0,
                                           "batch_wait_ms": 0.0, **LIVE}
    assert profile_settings("surveillance") == {"batch": 8, "live_policy": "all", "stall_timeout": 5.0,
                                                "batch_wait_ms": 30.0, **LIVE}
    with pytest.raises(UserError, match="'parking' is not known; use one of driving, surveillance"):
        profile_settings("parking")


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def settled(parser, *options):
    """The `run` options after the profile is applied, as `streamrestore run` sees them."""
    args = parser.parse_args(["run", "in.mp4", "--task", "denoise", "-o", "out.mp4", *options])
    apply_profile(args)
    return {k: getattr(args, k) for k in ("batch", "live_policy", "stall_timeout", "batch_wait_ms", "preset", "tune")}


def test_no_profile_gives_the_defaults(parser):
    assert settled(parser) == profile_settings(None)


@pytest.mark.parametrize("name", ["driving", "surveillance"])
def test_profile_fills_what_the_command_line_left_unset(parser, name):
    assert settled(parser, "--profile", name) == profile_settings(name)


def test_command_line_wins_over_the_profile(parser):
    got = settled(parser, "--profile", "surveillance", "--batch", "2", "--live-policy", "latest",
                  "--stall-timeout", "1.5", "--preset", "fast")
    # given: batch, live policy, stall timeout, preset; from the profile: the batch wait and the tune
    assert got == {"batch": 2, "live_policy": "latest", "stall_timeout": 1.5, "batch_wait_ms": 30.0,
                   "preset": "fast", "tune": "zerolatency"}
    got = settled(parser, "--profile", "driving", "--batch", "4", "--live-policy", "all", "--tune", "film")
    assert got == {"batch": 4, "live_policy": "all", "stall_timeout": 2.0, "batch_wait_ms": 0.0,
                   "preset": "veryfast", "tune": "film"}
    # and over the plain defaults
    assert settled(parser, "--batch", "3", "--stall-timeout", "7")["batch"] == 3
    assert settled(parser, "--batch", "3", "--stall-timeout", "7")["stall_timeout"] == 7.0


def test_a_feed_policy_wins_over_the_run_options(parser):
    args = parser.parse_args(["run", "--task", "denoise", "--streams", "s.yaml", "--profile", "surveillance",
                              "--reconnect", "2"])
    apply_profile(args)
    url = "rtsp://cam/live"
    assert live_source_options(args, url) == {"policy": "all", "transport": "tcp", "reconnect": ReconnectPolicy(attempts=2),
                                              "stall_timeout": 5.0, "duration": None}
    own = live_source_options(args, url, policy="latest", reconnect="forever")
    assert own["policy"] == "latest" and own["reconnect"] == ReconnectPolicy(attempts=None)
    assert live_source_options(args, "clip.mp4", policy="latest") == {}  # a file takes no live options


# ---------------------------------------------------------------------------------------------
# load_streams: streams.yaml -> the exact StreamSpec list
# ---------------------------------------------------------------------------------------------

def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "streams.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_streams_yaml_gives_the_exact_specs(tmp_path):
    path = _yaml(tmp_path, """
streams:
  - name: front
    input: rtsp://cam1:8554/live
    output: front.mp4
    live_policy: all
    reconnect: forever
    segment_time: 60
    report: front.json
  - input: rtsp://cam2/live
    output: rtsp://server/restored
  - input: 7
    output: 8
    reconnect: 3
    segment_time: "2.5"
  - name: 42
    input: back.mp4
    output: out/
    reconnect: FOREVER
""")
    assert load_streams(path) == [
        StreamSpec(name="front", input="rtsp://cam1:8554/live", output="front.mp4", live_policy="all",
                   reconnect="forever", segment_time=60.0, report="front.json"),
        StreamSpec(name="stream2", input="rtsp://cam2/live", output="rtsp://server/restored"),  # default name: its place
        StreamSpec(name="stream3", input="7", output="8", reconnect="3", segment_time=2.5),  # numbers -> text
        StreamSpec(name="42", input="back.mp4", output="out/", reconnect="forever"),
    ]


@pytest.mark.parametrize("text,message", [
    ("streams: []", "needs a non-empty 'streams:' list"),
    ("cameras: [1]", "needs a non-empty 'streams:' list"),
    ("streams:\n  - input: a.mp4\n", "stream 1 needs 'input' and 'output'"),
    ("streams:\n  - {input: a.mp4, output: b.mp4, fps: 5}\n", "stream 1 needs 'input' and 'output' and only the keys"),
    ("streams:\n  - {input: a.mp4, output: b.mp4}\n  - {name: stream1, input: c.mp4, output: d.mp4}\n",
     "stream names must be unique (got stream1, stream1)"),
    ("streams:\n  - {input: a.mp4, output: b.mp4, live_policy: newest}\n", "stream stream1: live_policy 'newest'"),
    ("streams:\n  - {input: a.mp4, output: b.mp4, reconnect: -1}\n", "stream stream1: reconnect -1"),
    ("streams:\n  - {input: a.mp4, output: b.mp4, segment_time: 0}\n", "stream stream1: segment_time 0.0"),
    ("streams:\n  - {input: [a.mp4], output: b.mp4}\n", "stream stream1: input ['a.mp4']: give a file name or URL"),
    ("streams: [", "not valid YAML"),
])
def test_bad_streams_yaml_names_the_entry(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_streams(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_missing_streams_file(tmp_path):
    with pytest.raises(UserError, match="cannot read .*check the --streams path"):
        load_streams(str(tmp_path / "nowhere.yaml"))


# ---------------------------------------------------------------------------------------------
# output dispatch: which sink an OUTPUT string gets
# ---------------------------------------------------------------------------------------------

VIDEO = StreamInfo(width=32, height=24, time_base=Fraction(1, 25), average_rate=Fraction(25), frames=3,
                   pix_fmt="yuv420p", name="in.mp4")
IMAGES = StreamInfo(width=32, height=24, frames=3, pix_fmt="rgb24", name="photos")  # an image folder: no time base
ONE_IMAGE = StreamInfo(width=32, height=24, frames=1, pix_fmt="rgb24", name="photo.png")


@pytest.mark.parametrize("name,codec", [("clip.mp4", "libx264"), ("clip.mkv", "libx264"), ("clip.MOV", "libx264"),
                                        ("clip.webm", "libvpx-vp9")])
def test_video_file_outputs(tmp_path, name, codec):
    sink = open_sink(str(tmp_path / name), VIDEO)
    try:
        assert type(sink) is VideoFileSink
        assert sink.dest == tmp_path / name and sink.stream.codec_context.name == codec
    finally:
        sink.abort()
    assert list(tmp_path.iterdir()) == []  # aborted: nothing left behind


@pytest.mark.parametrize("output,info,folder,suffix", [
    ("frames/", VIDEO, "frames", ".png"),  # a trailing slash: a folder of PNGs, even for a video
    ("frames/*.jpg", VIDEO, "frames", ".jpg"),  # another format by pattern
    ("frames/*.TIF", IMAGES, "frames", ".tif"),
    ("restored", IMAGES, "restored", ".png"),  # many images and no suffix: a folder
])
def test_image_folder_outputs(tmp_path, output, info, folder, suffix):
    sink = open_sink(f"{tmp_path}/{output}", info)  # as typed: a Path would drop the trailing slash
    assert type(sink) is ImageSink and not sink.single
    assert sink.dest == tmp_path / folder and sink.suffix == suffix and sink.dest.is_dir()


def test_an_existing_folder_is_a_folder_output(tmp_path):
    (tmp_path / "out").mkdir()
    sink = open_sink(str(tmp_path / "out"), VIDEO)
    assert type(sink) is ImageSink and not sink.single and sink.suffix == ".png"


@pytest.mark.parametrize("name", ["restored.png", "restored.JPG"])
def test_one_image_output(tmp_path, name):
    sink = open_sink(str(tmp_path / name), ONE_IMAGE)
    assert type(sink) is ImageSink and sink.single and sink.dest == tmp_path / name


def test_images_are_not_written_as_video(tmp_path):
    with pytest.raises(UserError, match="images are written as images; give an image file or a folder"):
        open_sink(str(tmp_path / "clip.mp4"), IMAGES)


def test_rtsp_outputs_publish(tmp_path):
    # rtsp:// (any case) goes to the RTSP publisher: it refuses another codec, and connects at once (port 1: refused)
    for url in ("rtsp://127.0.0.1:1/live", "RTSP://127.0.0.1:1/live"):
        with pytest.raises(UserError, match="--codec libx265: publishing to RTSP uses libx264"):
            open_sink(url, VIDEO, codec="libx265")
        with pytest.raises(UserError, match=f"^{url}: cannot publish"):
            open_sink(url, VIDEO, timeout=2.0)
    assert list(tmp_path.iterdir()) == []


class _Recorder:
    """A stand-in sink: remembers its path and what it was given."""

    def __init__(self, path, info):
        self.path, self.info, self.frames = path, info, 0

    def write(self, image, frame):
        self.frames += 1

    def close(self, complete=True):
        return self.frames


def test_open_output_segments_only_file_outputs():
    opened = []

    def open_one(path, info):
        opened.append(_Recorder(path, info))
        return opened[-1]

    assert open_output(open_one, "out.mp4", VIDEO, None) is opened[-1]  # no --segment-time: the sink itself
    assert open_output(open_one, "rtsp://server/live", VIDEO, 10.0) is opened[-1]  # a live OUTPUT is never segmented
    assert [r.path for r in opened] == ["out.mp4", "rtsp://server/live"]
    opened.clear()
    sink = open_output(open_one, "rec/out.mp4", VIDEO, 10.0)
    assert type(sink) is SegmentedSink and opened == []  # the first segment opens at the first frame
    image = np.zeros((24, 32, 3), np.uint8)
    for seconds in (0, 4, 9.96, 10, 12, 25, 30):  # frame times; a segment starts at its first frame
        sink.write(image, DecodedFrame(image, 0, pts=round(seconds * 25), time_base=Fraction(1, 25)))
    assert sink.close() == 7
    # segments start at 0, 10 and 25 s (10 - 0 >= 10, 25 - 10 >= 10; 30 - 25 < 10): 3 + 2 + 2 frames
    assert [r.path for r in opened] == [str(Path("rec/out_00000.mp4")), str(Path("rec/out_00001.mp4")),
                                        str(Path("rec/out_00002.mp4"))]
    assert [r.frames for r in opened] == [3, 2, 2]
    assert all(r.info is VIDEO for r in opened)
