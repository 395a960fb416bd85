"""Bad and awkward input, as a user meets it: real files made here, the real CLI in a subprocess (issue 14).

Each refusal is exit code 2 with one line naming the file or option, no traceback, within a time
limit, and nothing left behind: every file in the folder byte-identical afterwards and nothing new
(no partial output, no temporary file). Also: a feed whose writer fails while its reader is still
decoding ends cleanly (it used to crash with a segmentation fault), and publishing to an RTSP
address that accepts TCP and never answers fails within a bounded time.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from media import make_clip, make_images
from rtsp_fixtures import silent_server  # noqa: F401 - fixture

CLI = [sys.executable, "-m", "streamrestore.cli"]
ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256 (or "folder")} of everything under `folder`, hidden files included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


def cli(folder: Path, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=folder, capture_output=True, text=True, timeout=timeout)


def refused(folder: Path, args: list, *needles: str, timeout: float = 120) -> str:
    """Run in `folder`; assert exit 2, one line holding every needle, no traceback, nothing changed."""
    before = snapshot(folder)
    proc = cli(folder, *args, timeout=timeout)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
    assert len(lines) == 1 and all(n in lines[0] for n in needles), proc.stderr
    assert snapshot(folder) == before
    return lines[0]


def faststart(src: Path, dst: Path) -> Path:
    """Remux `src` with its index (moov) at the front, as streaming MP4s are written."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream_index]
                out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> bytes:
    """An MP4 (video and audio, 60 frames) with its index at the front."""
    folder = tmp_path_factory.mktemp("whole")
    data = faststart(make_clip(folder / "src.mp4", width=160, height=120, frames=60), folder / "fs.mp4").read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat") < len(data) // 10  # the index, then the frames
    return data


@pytest.fixture
def folder(tmp_path):
    make_clip(tmp_path / "in.mp4", frames=3, audio=False)
    return tmp_path


RUN = ["run", "in.mp4", "--task", "passthrough", "--quiet"]


# -- truncated input --------------------------------------------------------------------------

@pytest.mark.parametrize("percent", [10, 50, 95])
def test_mp4_cut_after_its_index(folder, whole, percent):
    """The index promises 60 frames, the data holds fewer: refused, and no output that looks complete."""
    (folder / "cut.mp4").write_bytes(whole[: len(whole) * percent // 100])
    refused(folder, ["run", "cut.mp4", "--task", "passthrough", "--quiet", "-o", "out.mp4"],
            "cut.mp4", "truncated", "ffmpeg -i cut.mp4 -c copy")


@pytest.mark.parametrize("cut", [40, 200, 373, 600, 1200, 2000])
def test_mp4_cut_inside_its_index(folder, whole, cut):
    (folder / "cut.mp4").write_bytes(whole[:cut])
    refused(folder, ["run", "cut.mp4", "--task", "passthrough", "--quiet", "-o", "out.mp4"], "cut.mp4")


def test_every_cut_through_the_header_is_one_clear_error(tmp_path, whole):
    """In-process sweep over the header: only UserError (it was AttributeError on `colorspace` for some)."""
    from streamrestore.errors import UserError
    from streamrestore.io import open_source

    path = tmp_path / "cut.mp4"
    for cut in range(16, whole.find(b"mdat") + 400, 23):
        path.write_bytes(whole[:cut])
        try:
            source = open_source(str(path))
            try:
                list(source)
            finally:
                source.close()
        except UserError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            pytest.fail(f"a cut at byte {cut} was read as a whole file")


@pytest.fixture(scope="module")
def matroska(tmp_path_factory) -> dict[str, bytes]:
    """A Matroska (H.264 + AAC) and a WebM (VP9) file of 50 frames each, written whole (duration in the header)."""
    folder = tmp_path_factory.mktemp("matroska")
    return {suffix: make_clip(folder / f"whole{suffix}", width=96, height=64, frames=50, codec=codec,
                              audio=suffix == ".mkv").read_bytes()
            for suffix, codec in ((".mkv", "libx264"), (".webm", "libvpx-vp9"))}


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
@pytest.mark.parametrize("percent", [30, 60, 90])
def test_matroska_and_webm_cut_short(folder, matroska, suffix, percent):
    """Its header declares 2 s, the data ends before: refused (it was restored as if whole, exit 0), and the
    remux the message suggests gives a file that runs."""
    data = matroska[suffix]
    (folder / f"cut{suffix}").write_bytes(data[: len(data) * percent // 100])
    refused(folder, ["run", f"cut{suffix}", "--task", "passthrough", "--quiet", "-o", "out.mkv"],
            f"cut{suffix}", "truncated", "s of the 2.00 s its header declares", f"ffmpeg -i cut{suffix} -c copy")
    fixed = folder / f"fixed{suffix}"  # what `ffmpeg -i cut.mkv -c copy fixed.mkv` does, through PyAV
    with av.open(str(folder / f"cut{suffix}")) as inp, av.open(str(fixed), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream_index]
                out.mux(packet)
    proc = cli(folder, "run", f"fixed{suffix}", "--task", "passthrough", "--quiet", "-o", "out.mkv")
    assert proc.returncode == 0, proc.stderr


def test_whole_files_are_not_called_truncated(tmp_path, whole):
    from streamrestore.io import open_source

    (tmp_path / "fs.mp4").write_bytes(whole)
    clips = [tmp_path / "fs.mp4", make_clip(tmp_path / "vfr.mp4", frames=15, vfr=True),
             make_clip(tmp_path / "b.mkv", frames=6, audio=False),
             make_clip(tmp_path / "c.avi", frames=6, codec="mpeg4", audio=False),
             make_clip(tmp_path / "vfr.mkv", frames=15, vfr=True), make_clip(tmp_path / "d.webm", frames=6,
                                                                               codec="libvpx-vp9", audio=False)]
    for clip, frames in zip(clips, (60, 15, 6, 6, 15, 6)):
        source = open_source(str(clip))
        assert len(list(source)) == frames
        source.close()


# -- file names, codecs and containers, option ranges -----------------------------------------

LONG = "a" * 300


@pytest.mark.parametrize("args, needles", [
    ([*RUN, "-o", f"{LONG}.mp4"], [f"{LONG}.mp4", "file name too long"]),
    ([*RUN, "-o", "out.mp4", "--report", f"{LONG}.json"], [f"{LONG}.json", "file name too long"]),
    ([*RUN, "-o", f"{LONG}/"], [LONG, "file name too long"]),
    (["export", "--task", "denoise", "-o", f"{LONG}.onnx"], [f"{LONG}.onnx", "file name too long"]),
    (["train", "--task", "denoise", "--data", "photos", "--patch", "32", "--out", f"{'b' * 248}.safetensors"],
     [f"{'b' * 248}.safetensors.train.pt", "file name too long"]),
])
def test_file_name_too_long(folder, args, needles):
    make_images(folder / "photos", count=2, width=64, height=64)
    refused(folder, args, *needles)


def test_a_name_near_the_limit_still_gets_a_temporary_file(folder):
    """248 characters fit, but `.NAME.partial-PID.mp4` would not: its stem is cut, the output lands whole."""
    name = "b" * 248 + ".mp4"
    proc = cli(folder, *RUN, "-o", name)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(["in.mp4", name])


@pytest.mark.parametrize("args, needles", [
    (["-o", "raw.mp4", "--codec", "rawvideo"], ["-o raw.mp4", ".mp4 file cannot hold --codec rawvideo"]),
    (["-o", "x.webm", "--codec", "libx264"], ["-o x.webm", ".webm file cannot hold --codec libx264",
                                             "--codec libvpx-vp9"]),
    (["-o", "x.mp4", "--crf", "52"], ["--crf 52", "libx264", "0 to 51"]),
    (["-o", "x.webm", "--codec", "libvpx-vp9", "--crf", "64"], ["--crf"]),
    (["-o", "x.mkv", "--codec", "libx265", "--crf", "60"], ["--crf 60", "libx265", "0 to 51"]),
])
def test_codec_the_container_cannot_hold_or_out_of_range(folder, args, needles):
    refused(folder, [*RUN, *args], *needles)


def test_crf_range_follows_the_encoder_the_suffix_picks(folder):
    """VP9 takes 0-63: --crf 63 for a .webm is accepted (it was refused with libx264's range)."""
    proc = cli(folder, *RUN, "-o", "out.webm", "--crf", "63")
    assert proc.returncode == 0, proc.stderr
    with av.open(str(folder / "out.webm")) as out:
        assert out.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")


def streams_file(folder: Path, name: str, *feeds: dict) -> str:
    lines = ["streams:"]
    for feed in feeds:
        lines += [f"  - {k}: {v}" if i == 0 else f"    {k}: {v}" for i, (k, v) in enumerate(feed.items())]
    (folder / name).write_text("\n".join(lines) + "\n")
    return name


def test_streams_codec_is_checked_per_feed_output(folder):
    feeds = streams_file(folder, "s.yaml", {"name": "a", "input": "in.mp4", "output": "a.mp4"},
                         {"name": "b", "input": "in.mp4", "output": "b.webm"})
    refused(folder, ["run", "--streams", feeds, "--task", "passthrough", "--quiet", "--codec", "libx264"],
            "--streams s.yaml [b] output b.webm", "cannot hold --codec libx264")
    refused(folder, ["run", "--streams", feeds, "--task", "passthrough", "--quiet", "--crf", "60"],
            "--crf 60", "libx264", "a.mp4")


def test_binary_streams_file(folder):
    (folder / "s.yaml").write_bytes(bytes(range(128, 256)) * 20)
    refused(folder, ["run", "--streams", "s.yaml", "--task", "passthrough", "--quiet"], "s.yaml", "not a text file")


@pytest.mark.parametrize("args", [
    [*RUN, "-o", "out.mp4", "--task", "denoise", "--steps", "1000"],
    [*RUN, "-o", "out.mp4", "--steps", "8"],
    ["export", "--task", "denoise", "-o", "g.onnx", "--steps", "8"],
    ["eval", "--task", "denoise", "--data", ".", "--steps", "1", "9"],
])
def test_steps_beyond_the_useful_maximum(folder, args):
    """t halves from T = 100 each step (100, 50, 25, 12, 6, 3, 1): an 8th step repeats t = 1."""
    refused(folder, args, "--steps", "at most 7 steps are useful", "100, 50, 25, 12, 6, 3, 1", timeout=30)


def test_seven_steps_are_accepted(folder):
    proc = cli(folder, *RUN, "-o", "out.mp4", "--steps", "7")
    assert proc.returncode == 0, proc.stderr


# -- options checked the same way whatever the input -------------------------------------------

def refused_in_process(folder: Path, args: list, *needles: str, capsys, monkeypatch) -> str:
    """`refused` for refusals argparse makes before any work: the CLI's main() in this process (fast)."""
    from streamrestore.cli import main

    monkeypatch.chdir(folder)
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and all(n in lines[0] for n in needles), err
    assert snapshot(folder) == before
    return lines[0]


@pytest.mark.parametrize("option, value, needle", [
    ("--duration", "-5", "greater than 0"), ("--duration", "0", "greater than 0"), ("--duration", "nan", "finite"),
    ("--duration", "soon", "give a positive number"), ("--stall-timeout", "0", "greater than 0"),
    ("--stall-timeout", "-1", "greater than 0"), ("--stall-timeout", "inf", "finite"),
    ("--reconnect", "abc", "'forever'"), ("--reconnect", "-3", "0 or more"), ("--reconnect", "2.5", "'forever'"),
    ("--segment-time", "-1", "greater than 0"), ("--segment-time", "0", "greater than 0"),
])
def test_live_options_are_checked_with_a_file_input(folder, option, value, needle, capsys, monkeypatch):
    """A file INPUT does not use them, but a bad value is refused all the same (it was accepted: exit 0)."""
    refused_in_process(folder, [*RUN, "-o", "out.mp4", option, value], f"{option} ", needle,
                       capsys=capsys, monkeypatch=monkeypatch)


def test_live_options_refused_by_the_real_command(folder):
    refused(folder, [*RUN, "-o", "out.mp4", "--duration", "-5"], "--duration -5", "greater than 0", timeout=60)


def test_good_live_options_with_a_file_input_still_run(folder):
    proc = cli(folder, *RUN, "-o", "out.mp4", "--duration", "2.5", "--stall-timeout", "1", "--reconnect", "FOREVER")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("entry, needles", [
    ("reconnect: sometimes", ["reconnect 'sometimes'", "'forever'"]),
    ("reconnect: -1", ["reconnect -1", "0 or more"]),
    ("reconnect: true", ["reconnect 'True'"]),
    ("live_policy: newest", ["live_policy 'newest'", "latest, all"]),
    ("segment_time: 0", ["segment_time 0", "greater than 0"]),
    ("segment_time: soon", ["segment_time 'soon'"]),
    ("report: [a, b]", ["report ['a', 'b']", "file name"]),
])
def test_streams_entries_are_checked_like_the_options(folder, entry, needles):
    (folder / "s.yaml").write_text(f"streams:\n  - name: cam\n    input: in.mp4\n    output: s.mkv\n    {entry}\n")
    refused(folder, ["run", "--streams", "s.yaml", "--task", "passthrough", "--quiet"], "s.yaml: stream cam",
            *needles, timeout=60)


@pytest.mark.parametrize("shape, needle", [
    ((0, 0, 3), "0x0 pixels"), ((0, 16, 3), "16x0 pixels"), ((16, 0, 3), "0x16 pixels"),
    ((0, 16, 16, 3), "empty batch"), ((2, 0, 16, 3), "16x0 pixels"), ((16, 16), "(H, W, 3)"),
])
def test_python_api_says_what_is_wrong_with_the_frames(shape, needle):
    """Zero-size frames and empty batches: a ValueError naming the problem, not a PyTorch conv error."""
    from streamrestore.restorer import Restorer

    restorer = Restorer(task="denoise", device="cpu", noise="zero")
    with pytest.raises(ValueError, match=re.escape(needle)):
        restorer(np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match=re.escape(needle)):
        restorer.stream()(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "passthrough"])
def test_backends_say_what_is_wrong_with_the_batch(backend):
    from streamrestore.backends.base import PassthroughBackend
    from streamrestore.backends.registry import create_backend

    engine = PassthroughBackend() if backend == "passthrough" else create_backend("denoise", backend=backend, device="cpu")
    for shape, needle in (((0, 16, 16, 3), "empty batch"), ((1, 0, 16, 3), "16x0 pixels"), ((16, 16, 3), "(N, H, W, 3)")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            engine(np.zeros(shape, np.uint8))


# -- training ---------------------------------------------------------------------------------

TRAIN = ["train", "--task", "denoise", "--iters", "1", "--batch", "1", "--quiet", "--out", "w.safetensors"]


def test_patch_bigger_than_every_training_image(folder):
    make_images(folder / "photos", count=2, width=80, height=64)
    refused(folder, [*TRAIN, "--data", "photos", "--patch", "100000"],
            "--patch 100000", "bigger than every training image", "80x64", "--patch 64 or less")
    for sub in ("lq", "gt"):
        make_images(folder / "pairs" / sub, count=2, width=48, height=40)
    refused(folder, [*TRAIN, "--paired", "pairs", "--patch", "64"], "--patch 64", "48x40", "--patch 32 or less")


def test_clear_and_detail_share_with_a_paired_folder(folder):
    """--clear-share and --detail-share shape synthetic draws; a paired folder's inputs are what they are, so
    they are refused."""
    for sub in ("lq", "gt"):
        make_images(folder / "pairs" / sub, count=2, width=48, height=40)
    refused(folder, [*TRAIN, "--paired", "pairs", "--patch", "32", "--clear-share", "0.3"], "--clear-share", "--data")
    refused(folder, [*TRAIN, "--paired", "pairs", "--patch", "32", "--detail-share", "0.3"], "--detail-share", "--data")
    refused(folder, [*TRAIN, "--paired", "pairs", "--patch", "32", "--read-noise-only"], "--read-noise-only", "--data")


def test_read_noise_only_for_another_task(folder):
    make_images(folder / "photos", count=2, width=48, height=40)
    command = ["train", "--task", "derain", "--iters", "1", "--batch", "1", "--quiet", "--out", "w.safetensors"]
    refused(folder, [*command, "--data", "photos", "--patch", "32", "--read-noise-only"], "--read-noise-only",
            "--task derain")


def vgg_state(shapes_ok: bool = True) -> dict[str, torch.Tensor]:
    """Random tensors under torchvision's VGG16 `features.N.*` names (one of the wrong shape if not shapes_ok)."""
    from streamrestore.training.losses import VGG16Perceptual

    state, index, c = {}, 0, 3
    for v in VGG16Perceptual.LAYOUT:
        if v == "M":
            index += 1
            continue
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = torch.zeros(v, c, 3, 3), torch.zeros(v)
        index, c = index + 2, v
    if not shapes_ok:
        state["features.28.bias"] = torch.zeros(3)
    return state


@pytest.mark.parametrize("name, make, needles", [
    ("vgg.pth", lambda p: p.write_text("these are not weights\n" * 10), ["not a safetensors file"]),
    ("vgg.safetensors", lambda p: p.write_bytes(b"\x00" * 64), ["not a safetensors file"]),
    ("list.pth", lambda p: torch.save([1, 2, 3], p), ["not a safetensors file"]),
    ("other.pth", lambda p: torch.save({"conv.weight": torch.zeros(3)}, p), ["holds 0 of the 26", "features.0.weight"]),
    ("other.safetensors", lambda p: __import__("safetensors.torch").torch.save_file({"x": torch.zeros(2)}, str(p)),
     ["holds 0 of the 26"]),
    ("shape.pth", lambda p: torch.save(vgg_state(shapes_ok=False), p), ["holds 25 of the 26"]),
])
def test_perceptual_weights_that_cannot_be_used(folder, name, make, needles):
    make_images(folder / "photos", count=2, width=64, height=64)
    make(folder / name)
    refused(folder, [*TRAIN, "--data", "photos", "--patch", "32", "--perceptual-weights", name],
            f"--perceptual-weights {name}", *needles)


# -- a writer that fails while its reader decodes; RTSP that never answers ---------------------

def test_feed_whose_encoder_fails_mid_run_ends_cleanly(folder):
    """Two MPEG-TS clips back to back: the timestamps jump back, so the muxer refuses a packet after about
    40 frames while the reader is still decoding. It was a segmentation fault (the writer closed the source
    under the reader's decode); now the feed fails in one line and its broken output is removed."""
    clip = make_clip(folder / "one.ts", frames=40, audio=False).read_bytes()
    (folder / "twice.ts").write_bytes(clip + clip + clip)
    feeds = streams_file(folder, "s.yaml", {"name": "cam", "input": "twice.ts", "output": "out.mp4"})
    before = snapshot(folder)
    for _ in range(3):
        proc = cli(folder, "run", "--streams", feeds, "--task", "passthrough", "--quiet")
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("streamrestore: error: [cam] out.mp4: encoding failed"), proc.stderr
        assert snapshot(folder) == before  # no output, no temporary file


FAILING_SINK = """
import sys, threading
sys.path.insert(0, {tests!r})
from media import make_clip
from streamrestore.backends.registry import create_backend
from streamrestore.errors import UserError
from streamrestore.io import open_source
from streamrestore.runtime.pipeline import run_streams
from streamrestore.runtime.streams import StreamSpec

class FailingSink:
    def __init__(self): self.frames = 0
    def write(self, image, frame):
        self.frames += 1
        if self.frames == 5:
            raise UserError("out.mp4: disk full (a test sink)")
    def close(self, complete=True): return self.frames
    def abort(self): pass

clip = make_clip({folder!r} + "/long.mp4", frames=240, audio=False)
backend = create_backend("passthrough")
for run in range(5):
    specs = [StreamSpec(f"feed{{i}}", str(clip), f"out{{i}}.mp4") for i in range(3)]
    reports = run_streams(specs, backend, open_source=lambda s: open_source(s.input),
                          open_sink=lambda s, info: FailingSink(), batch=4)
    assert [r.facts["error"] for r in reports] == ["out.mp4: disk full (a test sink)"] * 3, reports
print("done", threading.active_count())
"""


def test_sink_failing_while_the_reader_decodes_is_not_a_crash(tmp_path):
    """The same race made certain: every feed's sink raises at its 5th frame while 240 frames are still being
    decoded, five runs of three feeds, in a subprocess (a segmentation fault must not take pytest down)."""
    script = FAILING_SINK.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_closing_a_file_source_from_another_thread(tmp_path):
    """close() from another thread waits for the packet being decoded; the reader then ends quietly."""
    script = """
import sys, threading, time
sys.path.insert(0, {tests!r})
from media import make_clip
from streamrestore.io.video import VideoFileSource
clip = str(make_clip({folder!r} + "/long.mp4", frames=200, width=160, height=120, audio=False))
for delay in [0.0, 0.001, 0.003, 0.01, 0.03] * 4:
    source, counted = VideoFileSource(clip), []
    reader = threading.Thread(target=lambda: counted.append(sum(1 for _ in source)))
    reader.start()
    time.sleep(delay)
    source.close()
    reader.join(10)
    assert not reader.is_alive() and counted, counted
    source.close()  # twice is fine
print("done")
""".format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "done" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_publishing_to_a_server_that_never_answers(folder, silent_server):  # noqa: F811 - fixture
    started = time.monotonic()
    line = refused(folder, [*RUN, "-o", silent_server], silent_server, "no answer within 5 s", timeout=60)
    assert time.monotonic() - started < 30, line


def test_a_streams_feed_publishing_to_a_server_that_never_answers(folder, silent_server):  # noqa: F811
    feeds = streams_file(folder, "s.yaml", {"name": "pub", "input": "in.mp4", "output": silent_server})
    started = time.monotonic()
    proc = cli(folder, "run", "--streams", feeds, "--task", "passthrough", "--quiet", timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"[pub] {silent_server}: cannot publish (no answer within 5 s)" in proc.stderr.splitlines()[-1]
    assert time.monotonic() - started < 30
