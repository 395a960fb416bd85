"""`run --preset/--tune` (issue 13 item 5): the x264 settings that reach the encoder, read back from
the options string x264 writes into every H.264 stream it makes, and one-line errors for bad values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from media import make_clip
from streamrestore.errors import UserError
from streamrestore.io.encoding import check_speed, speed_options
from streamrestore.io.rtsp import H264Sink
from streamrestore.io.video import VideoFileSource

ROOT = Path(__file__).resolve().parents[1]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrestore.cli", "run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def x264_settings(path: Path) -> dict[str, str]:
    """The `options: cabac=1 ref=3 ... subme=7 ...` string of x264's SEI message, as a dict."""
    data = path.read_bytes()
    start = data.index(b"options: ") + len(b"options: ")
    text = data[start: data.index(b"\x00", start)].decode()
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


# x264 preset and tune fingerprints (x264 --fullhelp): medium subme=7 ref=3 bframes=3 rc_lookahead=40;
# veryfast subme=2 ref=1; zerolatency bframes=0, no look-ahead.
MEDIUM = {"subme": "7", "ref": "3", "bframes": "3", "rc_lookahead": "40"}
VERYFAST_ZEROLATENCY = {"subme": "2", "ref": "1", "bframes": "0"}


@pytest.mark.parametrize("args, wanted", [
    ([], MEDIUM),  # a file: x264's quality default
    (["--preset", "veryfast", "--tune", "zerolatency"], VERYFAST_ZEROLATENCY),
    (["--profile", "driving"], VERYFAST_ZEROLATENCY),  # live profile: fast and zero latency
    (["--profile", "surveillance", "--preset", "medium"], {"subme": "7", "ref": "3", "bframes": "0"}),  # option wins
], ids=["file-default", "given", "driving-profile", "surveillance-with-preset"])
def test_preset_and_tune_reach_x264(tmp_path, args, wanted):
    src = make_clip(tmp_path / "in.mp4", width=320, height=240, frames=3, audio=False)
    out = tmp_path / "out.mp4"
    proc = run(src, "--task", "passthrough", "-o", out, "--quiet", *args)
    assert proc.returncode == 0, proc.stderr
    settings = x264_settings(out)
    assert all(settings.get(k) == v for k, v in wanted.items()), {k: settings.get(k) for k in wanted}
    if wanted["bframes"] == "0":  # zerolatency: no look-ahead either
        assert settings.get("rc_lookahead", "0") == "0"


@pytest.mark.parametrize("args, words", [
    (["--preset", "fastest"], ["--preset 'fastest'", "ultrafast", "veryslow"]),
    (["--tune", "speed"], ["--tune 'speed'", "zerolatency", "film"]),
    (["--preset", "fast", "--codec", "mpeg4"], ["--preset", "mpeg4", "libx264"]),
    (["--tune", "stillimage", "--codec", "libx265"], ["--tune 'stillimage'", "libx265", "zerolatency"]),
])
def test_bad_preset_or_tune_is_one_line(tmp_path, args, words):
    src = make_clip(tmp_path / "in.mp4", frames=2, audio=False)
    proc = run(src, "--task", "passthrough", "-o", tmp_path / "out.mp4", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_streams_apply_the_preset_to_every_feed(tmp_path):
    src = make_clip(tmp_path / "in.mp4", width=320, height=240, frames=3, audio=False)
    streams = tmp_path / "streams.yaml"
    streams.write_text(f"streams:\n  - {{input: '{src}', output: '{tmp_path / 'a.mp4'}'}}\n"
                       f"  - {{input: '{src}', output: '{tmp_path / 'b.mp4'}'}}\n")
    proc = run("--streams", streams, "--task", "passthrough", "--preset", "veryfast", "--tune", "zerolatency", "--quiet")
    assert proc.returncode == 0, proc.stderr
    for out in ("a.mp4", "b.mp4"):
        settings = x264_settings(tmp_path / out)
        assert all(settings.get(k) == v for k, v in VERYFAST_ZEROLATENCY.items()), settings


def test_live_sink_defaults_to_veryfast_zero_latency(tmp_path):
    """The RTSP publisher's encoder (here writing a file) and the live default of a file sink."""
    src = make_clip(tmp_path / "in.mp4", width=320, height=240, frames=3, audio=False)
    source = VideoFileSource(str(src))
    sink = H264Sink(str(tmp_path / "live.mp4"), source.info)
    for frame in source:
        sink.write(frame.image, frame)
    source.close()
    sink.close()
    settings = x264_settings(tmp_path / "live.mp4")
    assert all(settings.get(k) == v for k, v in VERYFAST_ZEROLATENCY.items()), settings


def test_speed_options_by_codec_and_liveness():
    assert speed_options("libx264", None, None, live=True) == {"preset": "veryfast", "tune": "zerolatency"}
    assert speed_options("libx264", None, None, live=False) == {"preset": "medium"}
    assert speed_options("libx265", "slow", None, live=True) == {"preset": "slow", "tune": "zerolatency"}
    assert speed_options("libvpx-vp9", "fast", "film", live=False) == {}
    check_speed("libx264", "placebo", "grain")
    with pytest.raises(UserError, match="libvpx-vp9 has no presets"):
        check_speed("libvpx-vp9", "fast", None)
