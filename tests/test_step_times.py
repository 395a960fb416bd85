"""The second sampling time: the model card sets where 2-step sampling re-noises to, every backend samples
there (real ONNX Runtime sessions), --second-time overrides it, and benchmarks/step_times.py chooses it
on training photographs only."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import perturbed_model
from media import make_clip, make_images
from streamrestore.backends.registry import create_backend
from streamrestore.choices import HOLDOUT_EVERY
from streamrestore.errors import UserError
from streamrestore.evaluation.metrics import psnr_y
from streamrestore.evaluation.quality import synthetic_pairs
from streamrestore.io.images import split_folders
from streamrestore.model.checkpoint import load_model, read_card, save_model
from streamrestore.model.frames import RestoreFrames, noise_shape
from streamrestore.model.sampler import NoisePolicy, sampling_times, useful_steps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from step_times import training_draw_pairs  # noqa: E402

CLI = [sys.executable, "-m", "streamrestore.cli"]

pytestmark = pytest.mark.usefixtures("shared_engine_cache")


def test_sampling_times_after_a_chosen_second_time():
    assert sampling_times(100, 2) == [100, 50]  # no choice: T/2, as Algorithm 3 halves
    assert sampling_times(100, 4, 18) == [100, 18, 9, 4]
    assert useful_steps(100, 10) == 5 and sampling_times(100, 5, 10) == [100, 10, 5, 2, 1]
    for bad in (0, 100, 150):
        with pytest.raises(ValueError, match="1..99"):
            sampling_times(100, 2, bad)


@pytest.fixture
def card_weights(tmp_path) -> Path:
    """A tiny checkpoint whose model card sets the second sampling time to 10."""
    path = tmp_path / "tiny.safetensors"
    save_model(path, perturbed_model(), {"task": "denoise", "kind": "ir-cm", "architecture": {"size": "small"},
                                         "sampling": {"second_time": 10}})
    return path


def by_hand(weights: Path, frames: np.ndarray, second_time: int | None) -> np.ndarray:
    """Algorithm 3 at 2 steps, (T, second_time), with the fixed noise policy's fields, outside any backend."""
    model = load_model(weights)
    model.second_time = second_time
    shape = noise_shape(2, *frames.shape[:3], model.network.pad_multiple)
    noise = torch.stack(NoisePolicy("fixed", 0).draw_shaped(2, (shape[1], *shape[2:]), torch.device("cpu")))
    with torch.no_grad():
        return RestoreFrames(model)(torch.from_numpy(frames), noise).numpy()


def test_the_cards_second_time_is_what_torch_and_onnxruntime_sample(card_weights):
    frames = np.random.default_rng(3).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    options = dict(device="cpu", steps=2, noise="fixed", weights=str(card_weights))
    card_torch = create_backend("denoise", backend="torch", **options)
    card_ort = create_backend("denoise", backend="onnxruntime", **options)
    want = by_hand(card_weights, frames, 10)
    halved = by_hand(card_weights, frames, None)
    assert np.abs(want.astype(int) - halved).mean() > 1  # t = 10 and t = 50 really differ on this model
    assert np.array_equal(card_torch(frames), want)
    assert np.abs(card_ort(frames).astype(int) - want).max() <= 1
    assert "2-step (t = 100, 10)" in card_torch.model
    # --second-time overrides the card; the cached ONNX graph of t = 10 is not reused for t = 50
    override_ort = create_backend("denoise", backend="onnxruntime", second_time=50, **options)
    got = override_ort(frames)
    assert np.abs(got.astype(int) - halved).max() <= 1 and np.abs(got.astype(int) - want).mean() > 1
    assert "2-step (t = 100, 50)" in override_ort.model


@pytest.mark.parametrize("steps,second_time,needles", [
    (2, 100, ("--second-time 100", "between 1 and 99")),
    (6, None, ("--steps 6", "t = 100, 10, 5, 2, 1", "at most 5 steps")),  # the card's 10 leaves 5 times
])
def test_a_second_time_that_cannot_be_sampled_is_one_line(card_weights, steps, second_time, needles):
    with pytest.raises(UserError) as error:
        create_backend("denoise", backend="torch", device="cpu", steps=steps, weights=str(card_weights),
                       second_time=second_time)
    assert all(n in str(error.value) for n in needles) and "\n" not in str(error.value)


def test_run_with_a_bad_second_time_refuses_and_writes_nothing(tmp_path, card_weights):
    make_clip(tmp_path / "in.mp4", frames=3, audio=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([*CLI, "run", "in.mp4", "--task", "denoise", "--weights", str(card_weights), "--steps", "2",
                           "--second-time", "120", "-o", "out.mp4", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--second-time 120" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("draws", ["recipe", "train"])
def test_step_times_chooses_the_best_on_training_photographs_and_writes_the_card(tmp_path, card_weights, draws):
    photos = tmp_path / "photos"
    make_images(photos, count=7, width=48, height=40)
    held_out = {p.name for p in split_folders([str(photos)], HOLDOUT_EVERY)[1]}
    assert held_out
    out = tmp_path / "st"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/step_times.py"), "--tasks", "denoise",
                           "--weights", str(card_weights), "--data", str(photos), "--images", "0", "--draws", draws,
                           "--candidates", "50", "10", "2", "--write-cards", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.with_suffix(".json").read_text())["models"][card_weights.name]
    chosen = read_card(card_weights)["sampling"]
    assert ("training sampler" in chosen["chosen_on"]) == (draws == "train")
    assert set(chosen["images"]).isdisjoint(held_out) and len(chosen["images"]) == 7 - len(held_out)
    assert chosen["second_time"] == row["second_time"] == max((50, 10, 2), key=lambda t: row["two_step"][str(t)])
    assert chosen["psnr_y"]["two_step"] == row["two_step"]
    assert read_card(card_weights)["task"] == "denoise"  # the rest of the card kept


def test_export_writes_a_graph_that_samples_at_the_cards_second_time(tmp_path, card_weights):
    """`streamrestore export --steps 2`: the ONNX file a user deploys holds the card's times, as the backends do."""
    import onnxruntime

    proc = subprocess.run([*CLI, "export", "--task", "denoise", "--weights", str(card_weights), "--steps", "2",
                           "-o", "g.onnx"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frames = np.random.default_rng(4).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    shape = noise_shape(2, 1, 40, 56, load_model(card_weights).network.pad_multiple)
    noise = torch.stack(NoisePolicy("fixed", 0).draw_shaped(2, (shape[1], *shape[2:]), torch.device("cpu"))).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"frames": frames, "noise": noise})[0].astype(int)
    assert np.abs(got - by_hand(card_weights, frames, 10)).max() <= 1
    assert np.abs(got - by_hand(card_weights, frames, None)).mean() > 1


def test_training_draws_span_the_family_and_repeat_with_the_seed():
    """--draws train: each photograph gets its own draw of the training sampler (denoise: sigma 2-55 levels,
    so the inputs' Y-PSNR spreads over many dB, where the sigma-25 recipe keeps them within one), the same
    draws for the same seed; derain's night-scene draws darken the target as training does."""
    rng = np.random.default_rng(0)
    images = {f"p{i}.png": rng.integers(40, 216, (32, 40, 3), dtype=np.uint8) for i in range(12)}
    pairs = training_draw_pairs(images, "denoise", 7)
    again = training_draw_pairs(images, "denoise", 7)
    assert all(np.array_equal(a.lq, b.lq) for a, b in zip(pairs, again))
    assert all(np.array_equal(p.hq, images[p.name]) for p in pairs)
    spread = [psnr_y(p.lq, p.hq) for p in pairs]
    assert max(spread) - min(spread) > 6
    recipe = [psnr_y(p.lq, p.hq) for p in synthetic_pairs(images, "denoise", 7)]
    assert max(recipe) - min(recipe) < 1
    rain = training_draw_pairs(images, "derain", 7)
    darker = [p for p in rain if p.hq.mean() < 0.7 * images[p.name].mean()]
    assert 0 < len(darker) < len(rain)
