"""Video file source and sink on real PyAV clips: pts, rate, colour, 10-bit, odd sizes, audio."""
from __future__ import annotations

import numpy as np
import pytest

from media import BT601, FULL, make_clip, probe, synth_image
from streamrestore.errors import UserError
from streamrestore.io.video import VideoFileSink, VideoFileSource


def _transcode(src_path, dst_path, **sink_options) -> int:
    source = VideoFileSource(str(src_path))
    sink = VideoFileSink(str(dst_path), source.info, copy_from=str(src_path), **sink_options)
    for frame in source:
        sink.write(frame.image, frame)
    source.close()
    return sink.close()


def _max_plane_diff(a: dict, b: dict) -> int:
    return max(int(np.abs(x.astype(int) - y).max()) for fa, fb in zip(a["planes"], b["planes"]) for x, y in zip(fa, fb))


@pytest.mark.parametrize("options", [{}, {"vfr": True}, {"colorspace": BT601, "color_range": FULL}],
                         ids=["cfr-bt709-limited", "vfr", "bt601-full"])
def test_round_trip_keeps_timing_colour_and_audio(tmp_path, options):
    src = make_clip(tmp_path / "in.mp4", **options)
    assert _transcode(src, tmp_path / "out.mp4", crf=0) == 12
    a, b = probe(src), probe(tmp_path / "out.mp4")
    for key in ("width", "height", "pix_fmt", "time_base", "rate", "colorspace", "color_range", "duration"):
        assert a[key] == b[key], key
    assert b["pts"] == a["pts"]
    assert b["audio"] == 1 and b["audio_packets"] == a["audio_packets"]
    assert _max_plane_diff(a, b) <= 2  # identity model: no sample moves more than 2 levels


def test_ten_bit_is_read_with_its_range_and_matrix(tmp_path):
    # 4:4:4 has no chroma resampling, so a correct 10-bit read gives back the source RGB.
    path = make_clip(tmp_path / "444.mp4", frames=2, audio=False, pix_fmt="yuv444p10le")
    for frame in VideoFileSource(str(path)):
        assert np.abs(frame.image.astype(int) - synth_image(64, 48, frame.index)).max() <= 1


def test_ten_bit_is_written_as_ten_bit(tmp_path):
    src = make_clip(tmp_path / "10.mp4", frames=3, audio=False, pix_fmt="yuv420p10le")
    _transcode(src, tmp_path / "out.mp4", crf=0)
    a, b = probe(src), probe(tmp_path / "out.mp4")
    assert b["pix_fmt"] == "yuv420p10le" and b["pts"] == a["pts"]
    diffs = [np.abs(x.astype(int) - y) for fa, fb in zip(a["planes"], b["planes"]) for x, y in zip(fa, fb)]
    # 8-bit RGB in between: luma within 3 8-bit levels (12 in 10-bit units); swscale's 10-bit
    # chroma filters do not invert exactly at sharp edges, so chroma is checked by its median.
    assert max(int(d.max()) for d in diffs[::3]) <= 12
    assert max(float(np.median(d)) for d in diffs) <= 8  # 2 levels of 8 bits


def test_odd_size_keeps_size_and_frames(tmp_path):
    src = make_clip(tmp_path / "odd.mkv", width=33, height=25, codec="ffv1", frames=10)
    assert _transcode(src, tmp_path / "out.mkv") == 10
    b = probe(tmp_path / "out.mkv")
    assert (b["width"], b["height"], len(b["pts"])) == (33, 25, 10)
    assert b["pts"] == probe(src)["pts"]


def test_not_a_video_is_a_user_error(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(UserError, match="notes.mp4"):
        VideoFileSource(str(bad))
    with pytest.raises(UserError, match="no such file"):
        VideoFileSource(str(tmp_path / "missing.mp4"))


def test_abort_leaves_nothing(tmp_path):
    src = VideoFileSource(str(make_clip(tmp_path / "in.mp4", frames=3)))
    sink = VideoFileSink(str(tmp_path / "out.mp4"), src.info, copy_from=src.info.name)
    frame = next(iter(src))
    sink.write(frame.image, frame)
    sink.abort()
    src.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_out_of_order_timestamps_are_put_in_order_and_good_ones_kept():
    """Some muxers store B-frame pts out of order (OpenCV's box.mp4 decodes as 0, 101, 67, 134, 34, 234 ms
    ...): the frames keep their order and take the file's own times, sorted; a good file is unchanged."""
    from types import SimpleNamespace

    from streamrestore.io.video import presentation_times

    def run(pts):
        frames = [SimpleNamespace(pts=p, name=i) for i, p in enumerate(pts)]
        return [(f.name, p) for f, p in presentation_times(iter(frames))]

    shuffled = [0, 101, 67, 134, 34, 234, 201, 267, 167, 301]
    assert run(shuffled) == list(enumerate(sorted(shuffled)))
    assert run(list(range(0, 200, 20))) == list(enumerate(range(0, 200, 20)))
    assert run([None, None, None]) == [(0, None), (1, None), (2, None)]
