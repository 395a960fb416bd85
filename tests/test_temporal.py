"""The temporal model: a one-frame network grown into a recurrent one, its state and when it resets,
its export, and the one-feed and several-feed runs that carry one state per feed."""
from __future__ import annotations

from fractions import Fraction

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from conftest import perturbed_model, temporal_model
from media import make_clip, synth_image
from streamrestore import Restorer
from streamrestore.backends.registry import create_backend
from streamrestore.io import open_sink, open_source
from streamrestore.io.base import DecodedFrame, StreamInfo
from streamrestore.model.checkpoint import save_model
from streamrestore.model.consistency import ConsistencyModel
from streamrestore.model.network import add_history_input
from streamrestore.runtime.pipeline import run_pipeline
from streamrestore.runtime.report import LatencyReport
from streamrestore.runtime.temporal import StreamHistory
from streamrestore.training.loop import build_model, load_initial_network, recurrent_history


def test_grown_network_starts_as_the_one_frame_network():
    one = perturbed_model()
    grown = ConsistencyModel(add_history_input(one.network), one.schedule).eval()
    x, mu = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    t = torch.tensor([100, 50])
    with torch.no_grad():
        expected = one(x, mu, t)
        assert torch.equal(grown(x, mu, t, previous=torch.rand(2, 3, 16, 16)), expected)
        assert torch.equal(grown(x, mu, t), expected)  # no previous: mu stands in


def test_first_frame_is_the_one_frame_model_whatever_the_history_weights():
    """The history enters as (previous - mu): with previous = mu (a stream's start, a reset) a trained
    temporal network restores exactly as the one-frame network it grew from."""
    one, temporal = perturbed_model(), temporal_model()  # same base weights, random history weights
    x, mu = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    t = torch.tensor([100, 50])
    with torch.no_grad():
        assert torch.allclose(temporal(x, mu, t, previous=mu), one(x, mu, t), atol=1e-6)
        assert not torch.allclose(temporal(x, mu, t, previous=mu.flip(3)), one(x, mu, t), atol=1e-3)


def test_init_from_one_frame_checkpoint(tmp_path, tiny_weights):
    model = build_model("small", temporal=True)
    load_initial_network(model, str(tiny_weights))
    one = perturbed_model()
    x, mu = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    t = torch.tensor([100])
    with torch.no_grad():
        assert torch.allclose(model.eval()(x, mu, t, previous=torch.rand_like(mu)), one(x, mu, t), atol=1e-6)


def test_previous_changes_the_output_and_none_means_mu():
    model = temporal_model()
    x, mu, prev = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    t = torch.tensor([100])
    with torch.no_grad():
        assert not torch.allclose(model(x, mu, t, previous=prev), model(x, mu, t))
        assert torch.equal(model(x, mu, t, previous=mu), model(x, mu, t))


def test_recurrent_history_is_the_models_own_8bit_output():
    model = temporal_model()
    clips = torch.rand(3, 4, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    previous = recurrent_history(model, clips, generator)
    assert previous.shape == clips[0].shape
    for i in range(4):  # each clip: the frame itself (its history starts at the last frame) or 8-bit levels
        levels = previous[i] * 255
        assert torch.equal(previous[i], clips[-1, i]) or torch.allclose(levels, levels.round(), atol=1e-3)
    with torch.no_grad():  # with every clip's history starting at frame 0, it is the chain of 1-step restores
        generator = torch.Generator().manual_seed(1)
        start = torch.randint(0, 3, (4,), generator=torch.Generator().manual_seed(1))
    assert previous.shape == (4, 3, 16, 16)


def _frame(image, index, seconds=None, discontinuity=None):
    pts = None if seconds is None else round(seconds * 1000)
    return DecodedFrame(image, index, pts=pts, time_base=None if pts is None else Fraction(1, 1000),
                        discontinuity=discontinuity)


def test_history_resets_by_reason_and_not_on_noise():
    rng = np.random.default_rng(0)
    scene = synth_image(64, 48, 0)
    noisy = lambda: np.clip(scene + rng.normal(0, 25, scene.shape), 0, 255).astype(np.uint8)  # noqa: E731
    h = StreamHistory()
    assert h.previous_for(noisy(), 0.0) is None  # first frame: nothing to reset
    h.remember(scene)
    for k in range(1, 6):  # sigma-25 noise drawn afresh each frame is not a cut
        assert h.previous_for(noisy(), k * 0.04) is scene
        h.remember(scene)
    assert h.previous_for(255 - scene, 0.24) is None and h.resets == {"cut": 1}
    h.remember(scene)
    assert h.previous_for(scene, 2.0) is None and h.resets["gap"] == 1  # 1.76 s after a 40 ms rhythm
    h.remember(scene)
    assert h.previous_for(scene, 1.0) is None and h.resets["gap"] == 2  # backwards: a seek
    h.remember(scene)
    for t in (1.04, 1.12, 1.08, 1.16, 1.2):  # B-frame timestamps written out of order: jitter, not a seek
        assert h.previous_for(scene, t) is scene
        h.remember(scene)
    assert h.previous_for(scene, 1.0) is None and h.resets["gap"] == 3  # 5 intervals back: a seek
    h.remember(scene)
    assert h.previous_for(scene[:40], 1.04) is None and h.resets["size"] == 1
    h.remember(scene[:40])
    assert h.previous_for(scene[:40], 1.08, "reconnect") is None and h.resets["reconnect"] == 1
    h.remember(scene[:40])
    assert h.previous_for(scene[:40], 1.12, "corrupt") is None and h.resets["corrupt"] == 1
    assert sum(h.resets.values()) == 7


def _cut_clip(path, frames_a=5, frames_b=5):
    """An H.264 clip (lossless) with a hard cut: the synthetic scene, then its negative."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        for i in range(frames_a + frames_b):
            image = synth_image(64, 48, i)
            image = image if i < frames_a else 255 - image
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding: threads may sum in another order, flipping a rare pixel by 1 level."""
    diff = np.abs(a.astype(np.int16) - b)
    return a.shape == b.shape and diff.max() <= 1 and (diff > 0).mean() < 0.01


def _decoded(path):
    """Frames of a video file, or the PNG frames of a folder (lossless outputs for exact comparisons)."""
    path = Path(path)
    if path.is_dir():
        return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(path.glob("*.png"))]
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_pipeline_resets_at_a_cut_and_no_ghost_crosses_it(tmp_path, temporal_weights, backend):
    src = _cut_clip(tmp_path / "cut.mkv")
    engine = create_backend("denoise", backend=backend, device="cpu", weights=str(temporal_weights), noise="zero")
    assert engine.temporal
    source = open_source(str(src))
    sink = open_sink(str(tmp_path / "out") + "/", source.info)
    report = LatencyReport()
    run_pipeline(source, engine, sink, batch=4, report=report)
    assert report.resets == {"cut": 1} and report.summary()["temporal_resets"] == {"cut": 1}
    inputs, outputs = [f.image for f in open_source(str(src))], _decoded(tmp_path / "out")
    # frame k is restored from the output of frame k-1, except at the start and the cut (from itself)
    previous = [inputs[0], *outputs[:4], inputs[5], *outputs[5:9]]
    expected = [engine(image[None], before[None])[0] for image, before in zip(inputs, previous)]
    # after the cut, frame 5 is restored from itself alone: nothing of the old scene reaches it
    alone = engine(inputs[5][None], inputs[5][None])[0]
    assert _same(outputs[5], alone)
    assert all(_same(a, b) for a, b in zip(outputs, expected))
    # the state matters: restoring frame 6 from frame 5's output is not restoring it alone
    assert not _same(outputs[6], engine(inputs[6][None], inputs[6][None])[0])


class _ListSource:
    """Frames given in memory (a camera that changes resolution mid-stream)."""

    def __init__(self, images, rate=25):
        self.images = images
        self.info = StreamInfo(width=images[0].shape[1], height=images[0].shape[0], time_base=Fraction(1, rate),
                               average_rate=Fraction(rate))
        self.skipped = self.dropped = 0

    def __iter__(self):
        for i, image in enumerate(self.images):
            yield DecodedFrame(image, i, pts=i, time_base=self.info.time_base)

    def close(self):
        pass


class _ListSink:
    def __init__(self):
        self.images = []

    def write(self, image, frame):
        self.images.append(image)

    def close(self, complete=True):
        return len(self.images)

    def abort(self):
        pass


def test_size_change_mid_stream_resets_and_does_not_crash(temporal_weights):
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(temporal_weights), noise="zero")
    images = [synth_image(64, 48, i) for i in range(3)] + [synth_image(40, 30, i) for i in range(3)]
    sink, report = _ListSink(), LatencyReport()
    run_pipeline(_ListSource(images), engine, sink, report=report)
    assert report.resets == {"size": 1}
    assert [im.shape for im in sink.images] == [im.shape for im in images]
    assert _same(sink.images[3], engine(images[3][None], images[3][None])[0])


def test_corrupt_frames_reset_the_state(tmp_path, temporal_weights):
    src = make_clip(tmp_path / "in.mkv", frames=30, audio=False, codec="mpeg4")
    data = bytearray(src.read_bytes())
    for at in range(len(data) // 3, 2 * len(data) // 3, 97):  # damage the middle third
        data[at] ^= 0xFF
    src.write_bytes(bytes(data))
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(temporal_weights), noise="zero")
    source = open_source(str(src))
    sink = open_sink(str(tmp_path / "out") + "/", source.info)
    report = LatencyReport()
    run_pipeline(source, engine, sink, report=report)
    assert report.skipped > 0, "the damage must make the decoder skip frames for this test to mean anything"
    assert report.resets.get("corrupt", 0) >= 1


def test_restorer_stream_keeps_state_and_resets(temporal_weights):
    r = Restorer("denoise", weights=str(temporal_weights), noise="zero")
    frames = [synth_image(33, 25, i) for i in range(3)]
    with r.stream(fusion=False) as s:
        first = s(frames[0], seconds=0.0)
        second = s(frames[1], seconds=0.04)
        assert _same(first, r(frames[0]))  # a stream's first frame is the frame restored alone
        assert not _same(second, r(frames[1]))  # later frames use the state
        s.reset()
        assert _same(s(frames[2], seconds=0.08), r(frames[2]))
        s(frames[0][:20], seconds=0.12)
        assert s.resets == {"size": 1}
    one_frame = Restorer("denoise", temporal=False)
    assert not one_frame.backend.temporal
    with one_frame.stream() as s:  # temporal=False: the stream form restores each frame alone
        assert all(np.array_equal(s(f), one_frame(f)) for f in frames)


def test_two_feeds_keep_their_own_state(tmp_path, temporal_weights):
    from streamrestore.runtime.pipeline import run_streams
    from streamrestore.runtime.streams import StreamSpec

    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(temporal_weights), noise="zero")
    a = make_clip(tmp_path / "a.mp4", frames=6, audio=False, qp=0, pix_fmt="yuv444p")
    b = _cut_clip(tmp_path / "b.mkv", frames_a=6, frames_b=0)
    specs = [StreamSpec(name="a", input=str(a), output=str(tmp_path / "a_out") + "/"),
             StreamSpec(name="b", input=str(b), output=str(tmp_path / "b_out") + "/")]
    reports = run_streams(specs, engine, open_source=lambda spec: open_source(spec.input),
                          open_sink=lambda spec, info: open_sink(spec.output, info), batch=2)
    assert all(r.summary()["error"] is None for r in reports)
    for spec in specs:  # each feed's frame k comes from its own frame k-1: no state leaks between feeds
        inputs, outputs = [f.image for f in open_source(spec.input)], _decoded(spec.output)
        assert len(outputs) == 6
        previous = [inputs[0], *outputs[:-1]]
        assert all(_same(out, engine(image[None], before[None])[0])
                   for out, image, before in zip(outputs, inputs, previous))
    assert max(r["batch"] for r in reports[0].records) == 2  # the feeds shared engine calls


def test_onnx_graph_carries_the_state_and_matches_torch(temporal_weights):
    """The exported graph has `previous` as an explicit input; ONNX Runtime agrees with torch on it."""
    torch_engine = create_backend("denoise", backend="torch", device="cpu", weights=str(temporal_weights), noise="zero")
    ort_engine = create_backend("denoise", backend="onnxruntime", device="cpu", weights=str(temporal_weights), noise="zero")
    assert [i.name for i in ort_engine.session.get_inputs()] == ["frames", "noise", "previous"]
    frames = np.stack([synth_image(37, 29, i) for i in range(2)])
    previous = np.stack([255 - synth_image(37, 29, i + 5) for i in range(2)])
    a, b = torch_engine(frames, previous), ort_engine(frames, previous)
    diff = a.astype(np.int16) - b
    assert np.abs(diff).max() <= 1 and abs(diff.mean()) < 0.01
    assert not _same(b, ort_engine(frames, frames))  # the state input is used, not ignored


def test_stream_fusion_lowers_error_on_a_still_noisy_scene_and_forgets_at_a_cut():
    """Restorer(task).stream(): the shipped denoise model with the fusion stage after it, on a still
    scene with fresh noise each frame: later frames beat the frame restored alone (signed mean kept);
    at a cut the state is dropped and the first new frame is the frame restored alone."""
    rng = np.random.default_rng(0)
    clean = synth_image(96, 64, 0)
    noisy = [np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8) for _ in range(8)]
    r = Restorer("denoise", backend="onnxruntime")
    alone = [r(n) for n in noisy]
    with r.stream() as s:
        fused = [s(n, seconds=k / 25) for k, n in enumerate(noisy)]
        error = lambda out: np.abs(out.astype(np.float32) - clean).mean()  # noqa: E731
        assert np.mean([error(f) for f in fused[4:]]) < 0.9 * np.mean([error(a) for a in alone[4:]])
        assert abs(float(np.mean(fused[-1].astype(np.float32) - clean))) < 1.0  # no drift in the mean
        other = 255 - noisy[0]
        alone = r.video_backend(other[None], other[None])[0]
        assert np.array_equal(s(other, seconds=8 / 25), alone)  # a cut: nothing of the old scene
        assert s.resets == {"cut": 1}


def test_pipeline_with_fusion_counts_resets_and_keeps_every_frame(tmp_path, tiny_weights):
    src = _cut_clip(tmp_path / "cut.mkv")
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(tiny_weights), noise="zero")
    assert not engine.temporal  # a one-frame model: the fusion stage alone keeps the state
    source = open_source(str(src))
    sink, report = _ListSink(), LatencyReport()
    run_pipeline(source, engine, sink, batch=4, report=report, fusion=True)
    assert report.resets == {"cut": 1} and len(sink.images) == 10
    assert all(r["fusion"] > 0 for r in report.records) and report.summary()["stages_ms"]["fusion"]["max"] > 0
    inputs = [f.image for f in open_source(str(src))]
    assert _same(sink.images[5], engine(inputs[5][None])[0])  # the first frame after the cut: the model's alone


def _gap_clip(path, gap_at: int, frames: int = 10):
    """A lossless clip of one noisy still scene whose timestamps jump 20 frames at `gap_at` (lost frames)."""
    rng = np.random.default_rng(gap_at)
    clean = synth_image(64, 48, 0).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        for i in range(frames):
            image = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i + (20 if i >= gap_at else 0)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_fusion_in_the_writers_matches_fusing_frame_by_frame(tmp_path, temporal_weights):
    """The runtime fuses in each feed's writer while the engine restores the next frame: two feeds of a still
    noisy scene with a gap each (the video model and the fusion stage) come out as restoring and fusing one
    frame after another does, frame for frame, starting afresh at the gaps (where the fusion would blend on)."""
    from streamrestore.runtime.pipeline import run_streams
    from streamrestore.runtime.streams import StreamSpec
    from streamrestore.runtime.temporal import restore_with_history, stream_state

    clips = {"a": _gap_clip(tmp_path / "a.mkv", gap_at=5), "b": _gap_clip(tmp_path / "b.mkv", gap_at=3)}
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(temporal_weights), noise="zero")
    assert engine.temporal
    sinks = {name: _ListSink() for name in clips}
    specs = [StreamSpec(name, str(path), f"out-{name}") for name, path in clips.items()]
    reports = run_streams(specs, engine, open_source=lambda spec: open_source(spec.input),
                          open_sink=lambda spec, info: sinks[spec.name], batch=1, batch_wait_ms=None, fusion=True)
    # batch 1: a batch of two feeds' frames may round differently from one frame, and the fusion's gates
    # can turn that into tens of levels at a few pixels; here every call is one frame, as below
    for name, report in zip(clips, reports):
        frames = list(open_source(str(clips[name])))
        history = stream_state(engine, fusion=True)
        expected = [restore_with_history(engine, [frame], [history])[0] for frame in frames]
        assert report.resets == {"gap": 1} and len(sinks[name].images) == 10
        assert all(_same(got, want) for got, want in zip(sinks[name].images, expected)), name
        gap = 5 if name == "a" else 3  # afresh there: the model's own output, where fusing on would differ
        assert np.array_equal(expected[gap], engine(frames[gap].image[None], frames[gap].image[None])[0])
        assert not _same(expected[gap + 1], engine(frames[gap + 1].image[None], expected[gap][None])[0])
        assert all(r["fusion"] > 0 for r in report.records)
