"""Consistency training: the shared-noise pair, the loss going down, checkpoints, resumable state."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import perturbed_model
from streamrestore.model.checkpoint import load_model, save_model
from streamrestore.training.loop import TrainConfig, build_model, sample_pair_index, train, training_step
from streamrestore.training.losses import balanced_l1, consistency_pair, fft_amplitude_l1, irc_m_loss, two_step_loss


def test_training_pair_shares_its_noise():
    model = build_model("small")
    s = model.schedule
    x0, mu, z = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    n = torch.tensor([10, 60])
    x_next, x_cur = consistency_pair(s, x0, mu, n, z)
    # recover the noise from each member: it must be the same z
    from streamrestore.model.sde import noise_from_origin

    torch.testing.assert_close(noise_from_origin(s, x_next, mu, n + 1, x0), z, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(noise_from_origin(s, x_cur, mu, n, x0), z, atol=1e-3, rtol=1e-3)


def test_pair_index_range():
    g = torch.Generator().manual_seed(0)
    n = sample_pair_index(30_000, 100, 0.3, g)
    assert int(n.min()) >= 1 and int(n.max()) == 99
    for t_next in (100, 50, 25):  # the times of 1-, 2- and 3-step sampling get 0.1 each on top of uniform
        assert 0.09 < float((n + 1 == t_next).float().mean()) < 0.12


def test_target_side_carries_no_gradient():
    """phi- = stopgrad(phi): the student pass records a graph, the target pass (at t_n) does not."""
    model = build_model("small")
    grad_enabled = []
    model.network.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    lq, hq = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss, parts = irc_m_loss(model, lq, hq, "nonlinear", torch.tensor([3, 40]), torch.randn(2, 3, 16, 16))
    assert grad_enabled == [True, False]
    assert set(parts) == {"ct", "og"} and loss.requires_grad


def test_two_step_loss_scores_what_the_two_step_sampler_outputs():
    """The extra term is the OG loss of Algorithm 3's 2-step output, with gradient only through step 2."""
    from streamrestore.model.sampler import sample

    model = perturbed_model()
    lq, hq = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    noises = [torch.randn(2, 3, 16, 16), torch.zeros(2, 3, 16, 16)]
    grad_enabled = []
    model.network.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    loss = two_step_loss(model, lq, hq, noises)
    assert grad_enabled == [False, True] and loss.requires_grad
    with torch.no_grad():
        out = sample(model, model.schedule, lq, noises)
    expected = (out - hq).abs().mean() + 0.125 * fft_amplitude_l1(out, hq)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-6, rtol=1e-5)


def test_two_step_weight_trains_the_second_step():
    """Nonlinear fitting with --two-step-weight lowers the 2-step sampler's error on the data."""
    from streamrestore.model.sampler import sample

    torch.manual_seed(0)
    model = build_model("small")
    config = TrainConfig(task="denoise", iters=1000, batch=4, lr=2e-3, warmup=1, stages=["nonlinear"],
                         two_step_weight=1.0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr)
    data, g = _FixedBatches(), torch.Generator().manual_seed(0)

    def two_step_error():
        zeros = [torch.zeros_like(data.lq)] * 2
        with torch.no_grad():
            return float((sample(model, model.schedule, data.lq, zeros) - data.hq).abs().mean())

    before = two_step_error()
    parts = [training_step(model, optimiser, data, config, "nonlinear", g, i)[1] for i in range(30)]
    assert all("two_step" in p for p in parts)
    assert two_step_error() < 0.95 * before


def test_psnr_balance_weighs_each_image_by_its_relative_error():
    """balanced_l1 (train --psnr-balance): floor 0 is the plain mean L1, value and gradient; with a floor, an image
    whose error is ten times smaller pulls (0.1 + f) / (0.01 + f) times harder per pixel, as the gradient of mean
    PSNR does, and a batch of equal errors keeps the plain L1's value."""
    from torch.nn import functional as F

    target = torch.zeros(2, 3, 8, 8)
    errors = torch.tensor([0.01, 0.1]).view(2, 1, 1, 1)
    pulls = {}
    for floor in (0.0, 1 / 255):
        prediction = (target + errors).requires_grad_()
        loss = balanced_l1(prediction, target, floor)
        loss.backward()
        pulls[floor] = prediction.grad.flatten(1).mean(1)
        if floor == 0:
            assert float(loss) == pytest.approx(float(F.l1_loss(prediction, target)), rel=1e-6)
    assert float(pulls[0.0][0] / pulls[0.0][1]) == pytest.approx(1.0, rel=1e-4)
    assert float(pulls[1 / 255][0] / pulls[1 / 255][1]) == pytest.approx((0.1 + 1 / 255) / (0.01 + 1 / 255), rel=1e-4)
    same = torch.full((3, 3, 8, 8), 0.05)
    assert float(balanced_l1(same, target[:1].expand(3, -1, -1, -1), 2 / 255)) == pytest.approx(0.05, rel=1e-6)


class _FixedBatches:
    """A tiny fixed denoising set: the same 4 noisy patches of a smooth image."""

    def __init__(self):
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:16, 0:16] / 16.0
        clean = np.stack([yy, xx, 0.5 * (yy + xx)], 0).astype(np.float32)
        self.hq = torch.from_numpy(np.stack([clean] * 4))
        self.lq = (self.hq + torch.from_numpy(rng.normal(0, 0.1, self.hq.shape).astype(np.float32))).clamp(0, 1)
        self.rng = rng

    def batch(self, size):
        return self.lq[:size], self.hq[:size]


def _one_step_error(model, data):
    """L1 to HQ of the one-step output (Algorithm 3, zero noise): what a user of the model sees."""
    from streamrestore.model.sampler import sample

    with torch.no_grad():
        return float((sample(model, model.schedule, data.lq, [torch.zeros_like(data.lq)]) - data.hq).abs().mean())


@pytest.mark.parametrize("stage", ["linear", "nonlinear", "baseline"])
def test_a_few_steps_reduce_the_loss(stage):
    torch.manual_seed(0)
    model = build_model("small")
    config = TrainConfig(task="denoise", iters=1000, batch=4, lr=2e-3, warmup=1, stages=[stage])
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr)
    data, g = _FixedBatches(), torch.Generator().manual_seed(0)
    before = _one_step_error(model, data)
    losses = [training_step(model, optimiser, data, config, stage, g, i)[0] for i in range(30)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert _one_step_error(model, data) < 0.95 * before


def test_checkpoint_round_trip_is_bit_exact_and_never_unpickles(tmp_path):
    model = perturbed_model()
    path = tmp_path / "w.safetensors"
    save_model(path, model, {"task": "denoise"})
    assert path.read_bytes()[:8] != b"PK\x03\x04"  # not a zip/pickle archive
    loaded = load_model(path)
    for (k, a), (k2, b) in zip(model.network.state_dict().items(), loaded.network.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert set(load_file(str(path))) == set(model.network.state_dict())
    assert json.loads(path.with_suffix(".json").read_text())["task"] == "denoise"


def test_pickle_file_is_refused(tmp_path):
    """A torch pickle renamed .safetensors is rejected as not a checkpoint, without being unpickled."""
    from streamrestore.errors import UserError

    evil = tmp_path / "evil.safetensors"
    torch.save({"a": torch.zeros(1)}, evil)
    with pytest.raises(UserError, match="not a streamrestore checkpoint"):
        load_model(evil)


def test_interrupted_training_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "w.safetensors"
    config = TrainConfig(task="denoise", iters=4, batch=2, stages=["linear", "nonlinear"], checkpoint_seconds=0.0)
    card = train(TrainConfig(**{**config.__dict__, "stages": ["linear"]}), _FixedBatches(), out, progress=False)
    assert card["training"]["completed"]["stage_index"] == 1
    card = train(config, _FixedBatches(), out, resume=True, progress=False)
    curve = card["training"]["loss_curve"]
    assert [c[0] for c in curve].count("linear") == 1 and curve[-1][0] == "nonlinear"
    assert card["training"]["completed"] == {"stage_index": 2, "iteration": 0, "seconds": card["training"]["completed"]["seconds"]}


def test_sde_lambda_is_trained_on_and_travels_with_the_weights(tmp_path):
    """--sde-lambda 2: the trained model's schedule has lambda 2/255, its saved weights keep it, and sampling
    with them starts from LQ + 2/255 z (not IR-SDE's 10/255)."""
    from streamrestore.model.sampler import step_input

    out = tmp_path / "w.safetensors"
    card = train(TrainConfig(task="deblur", iters=2, batch=2, stages=["nonlinear"], sde_lambda=2.0), _FixedBatches(),
                 out, progress=False)
    assert card["schedule"]["lambda"] == pytest.approx(2 / 255) and card["training"]["sde_lambda"] == 2.0
    model = load_model(out)
    assert model.schedule.lam == pytest.approx(2 / 255)
    mu, z = torch.full((1, 3, 64, 64), 0.5), torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.full((1,), model.schedule.T, dtype=torch.long)
    spread = float((step_input(model.schedule, mu, None, t, z) - mu).std())
    assert spread == pytest.approx(2 / 255, rel=0.05)
    assert build_model("small").schedule.lam == pytest.approx(10 / 255)  # the default stays IR-SDE's


def test_vgg16_perceptual_loads_only_a_given_file(tmp_path):
    """The paper's VGG16 term reads torchvision-named weights from a safetensors file we pass."""
    from safetensors.torch import save_file
    from torch import nn

    from streamrestore.training.losses import VGG16Perceptual

    state, index, c = {}, 0, 3
    for v in VGG16Perceptual.LAYOUT:
        if v == "M":
            index += 1
            continue
        conv = nn.Conv2d(c, v, 3, padding=1)
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = conv.weight.data, conv.bias.data
        index, c = index + 2, v
    path = tmp_path / "vgg16.safetensors"
    save_file(state, str(path))
    loss = VGG16Perceptual(path)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert float(loss(x, x)) == 0.0 and float(loss(x, y)) > 0.0
    assert not any(p.requires_grad for p in loss.parameters())


class _StillClips(_FixedBatches):
    """Pseudo-clips (K, N, 3, H, W): the fixed smooth image, still, with fresh noise every frame."""

    def batch(self, size, frames=3):
        noise = torch.from_numpy(self.rng.normal(0, 0.1, (frames, size, *self.hq.shape[1:])).astype(np.float32))
        return (self.hq[:size] + noise).clamp(0, 1), self.hq[:size].expand(frames, -1, -1, -1, -1)


def test_temporal_training_from_a_one_frame_checkpoint(tmp_path):
    """A temporal model grown from a one-frame checkpoint: its card keeps that checkpoint's measured noise
    policy and records the history input; a few steps on still clips lower the loss."""
    init = tmp_path / "one.safetensors"
    save_model(init, perturbed_model(), {"task": "denoise", "noise_policy": {"default": "zero"}})
    config = TrainConfig(task="denoise", iters=26, batch=4, lr=2e-3, warmup=1, stages=["nonlinear"], clip_frames=3,
                         checkpoint_seconds=1e9)
    card = train(config, _StillClips(), tmp_path / "temporal.safetensors", progress=False, init_weights=str(init))
    assert card["noise_policy"] == {"default": "zero", "inherited_from": "one.safetensors"}
    assert card["architecture"]["config"]["history_channels"] == 3
    assert load_model(tmp_path / "temporal.safetensors").is_temporal
    curve = [loss for _, _, loss in card["training"]["loss_curve"]]
    assert curve[-1] < curve[0]


def _photographs(folder, count=2):
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        cv2.imwrite(str(folder / f"p{i}.png"), rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
    return sorted(folder.iterdir())


@pytest.mark.parametrize("task", ["derain", "denoise"])
def test_clear_share_leaves_that_share_of_training_draws_undegraded(tmp_path, task):
    """`--clear-share`: the share of patches (and of whole clips) that reach the model clean, so it learns to
    leave a frame with nothing to restore as it is; derain keeps its 0.15 by default, the others none."""
    from streamrestore.training.data import SyntheticClips, SyntheticPairs

    files = _photographs(tmp_path / "photos")

    def clear_share(pairs, draws=400):
        lq, hq = pairs.batch(draws)
        return float((lq - hq).abs().flatten(1).amax(1).eq(0).float().mean())

    assert clear_share(SyntheticPairs(files, task, 32, seed=1, clear_share=1.0)) == 1.0
    assert clear_share(SyntheticPairs(files, task, 32, seed=1, clear_share=0.0)) == 0.0
    assert abs(clear_share(SyntheticPairs(files, task, 32, seed=1, clear_share=0.4)) - 0.4) < 0.08
    default = clear_share(SyntheticPairs(files, task, 32, seed=1))
    assert abs(default - 0.15) < 0.06 if task == "derain" else default == 0.0
    clips = SyntheticClips(files, task, 32, frames=3, seed=1, clear_share=0.5)
    kept = [np.array_equal(*clips.clip()) for _ in range(60)]
    assert 0.3 < np.mean(kept) < 0.7


def test_detail_share_draws_textured_crops_that_much_more_often(tmp_path):
    """`--detail-share`: that share of the crops is the most detailed of four, so of a smooth photograph and a
    textured one, the textured one is cropped half the time with 0, about 72 % with 0.5 and about 97 % with 1."""
    import cv2

    from streamrestore.training.data import SyntheticClips, SyntheticPairs, detail

    folder = tmp_path / "photos"
    folder.mkdir()
    smooth = np.broadcast_to(np.linspace(40, 200, 96, dtype=np.float32)[None, :, None], (80, 96, 3))
    cv2.imwrite(str(folder / "a_smooth.png"), smooth.astype(np.uint8))
    cv2.imwrite(str(folder / "b_fur.png"), np.random.default_rng(4).integers(0, 256, (80, 96, 3), dtype=np.uint8))
    files = sorted(folder.iterdir())

    def textured(crops):
        return np.mean([detail(np.ascontiguousarray(c.transpose(1, 2, 0) * 255).astype(np.uint8)) > 10
                        for c in crops.numpy()])

    shares = {share: textured(SyntheticPairs(files, "denoise", 32, seed=2, detail_share=share).batch(400)[1])
              for share in (0.0, 0.5, 1.0)}
    assert abs(shares[0.0] - 0.5) < 0.08 and abs(shares[0.5] - 0.72) < 0.08 and shares[1.0] > 0.92
    _, hq = SyntheticClips(files, "denoise", 32, frames=2, seed=2, detail_share=1.0).batch(60)
    assert textured(hq[0]) > 0.85


def test_read_noise_only_draws_plain_gaussian_noise(tmp_path):
    """`--read-noise-only` (denoise): every draw is Gaussian read noise of one sigma in 2-55 levels, independent from
    pixel to pixel and of the brightness: no shot noise (stronger on bright pixels), no chroma blotches or JPEG
    (which correlate neighbouring pixels). The sensor family it replaces fails both checks on some draws."""
    import cv2

    from streamrestore.training.data import SyntheticClips, SyntheticPairs

    folder = tmp_path / "photos"
    folder.mkdir()
    ramp = np.broadcast_to(np.linspace(60, 195, 96, dtype=np.float32)[None, :, None], (96, 96, 3))
    cv2.imwrite(str(folder / "ramp.png"), ramp.astype(np.uint8))
    files = sorted(folder.iterdir())

    def statistics(lq, hq):
        """Per draw: noise std in levels, correlation of horizontal neighbours, and the noise std on the brighter
        half over that on the darker half (the ramp runs left to right after any flip or turn; both halves)."""
        rows = []
        for noisy, clean in zip(lq.numpy(), hq.numpy()):
            noise = (noisy - clean)[0] * 255
            neighbours = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
            bright = clean[0] > np.median(clean[0])
            rows.append((noise.std(), neighbours, noise[bright].std() / noise[~bright].std()))
        return np.array(rows)

    gaussian = statistics(*SyntheticPairs(files, "denoise", 48, seed=5, read_noise_only=True).batch(120))
    assert gaussian[:, 0].min() > 1.5 and gaussian[:, 0].max() < 56
    assert np.abs(gaussian[:, 1]).max() < 0.15 and np.abs(gaussian[:, 2] - 1).max() < 0.15
    family = statistics(*SyntheticPairs(files, "denoise", 48, seed=5).batch(120))
    assert np.abs(family[:, 1]).max() > 0.3 and np.abs(family[:, 2] - 1).max() > 0.3
    lq, hq = SyntheticClips(files, "denoise", 48, frames=3, seed=5, read_noise_only=True).batch(4)
    stds = ((lq - hq) * 255).flatten(3).std(3).mean(2)  # (frames, clips): one sigma per clip, fresh noise
    assert (stds.std(0) < 0.1 * stds.mean(0) + 0.3).all()


def _photo_pairs(tmp_path, seed=3):
    """Derain draws of 32 px from two small textured photographs written to tmp_path."""
    import cv2

    from streamrestore.training.data import SyntheticPairs
    rng = np.random.default_rng(1)
    files = []
    for i in range(2):
        yy, xx = np.mgrid[0:64, 0:64]
        img = (np.stack([yy * 3, xx * 3, (yy + xx) * 2], -1) + rng.integers(0, 30, (64, 64, 3))) % 256
        files.append(tmp_path / f"p{i}.png")
        cv2.imwrite(str(files[-1]), img.astype(np.uint8))
    return SyntheticPairs(files, "derain", 32, seed=seed)


def test_a_run_stopped_by_its_time_limit_resumes_to_the_uninterrupted_weights(tmp_path):
    """--time-limit: the run stops after the iteration past the limit with the state saved (the card on disk says
    where), and resuming from there ends with bit-identical weights to the same run never stopped: the state keeps
    the optimiser and both generators' positions, not only the weights."""
    from streamrestore.model.checkpoint import read_card

    config = TrainConfig(task="derain", iters=3, batch=2, patch=32, stages=["linear", "nonlinear"], seed=4,
                         two_step_weight=1.0, checkpoint_seconds=1e9)
    whole = tmp_path / "whole.safetensors"
    train(config, _photo_pairs(tmp_path), whole, progress=False)

    stopped = tmp_path / "stopped.safetensors"
    card = train(config, _photo_pairs(tmp_path), stopped, progress=False, time_limit=0.0)
    assert card["training"]["completed"]["stage_index"] == 0 and card["training"]["completed"]["iteration"] == 1
    assert read_card(stopped)["training"]["completed"]["iteration"] == 1
    for _ in range(3):  # stopped after iteration 2 of linear, then at the end of linear, then after 1 of nonlinear
        card = train(config, _photo_pairs(tmp_path), stopped, resume=True, progress=False, time_limit=0.0)
    assert (card["training"]["completed"]["stage_index"], card["training"]["completed"]["iteration"]) == (1, 1)
    card = train(config, _photo_pairs(tmp_path), stopped, resume=True, progress=False)
    assert card["training"]["completed"]["stage_index"] == 2
    a, b = load_file(whole), load_file(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_worker_processes_draw_seeded_batches(tmp_path):
    """--workers N: batches drawn ahead by N processes are the same for the same seed and count, differ between
    seeds and between workers (each its own generator), and a run trains through them to the end."""
    from streamrestore.training.data import WorkerBatches

    def first(seed, count=4):
        draws = WorkerBatches(_photo_pairs(tmp_path), 3, workers=2, seed=seed)
        try:
            return [draws.batch(3) for _ in range(count)]
        finally:
            draws.close()

    one, again, other = first(11), first(11), first(12)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(one, again))
    assert not torch.equal(one[0][0], other[0][0])
    assert not torch.equal(one[0][1], one[1][1])  # worker 0's first batch is not worker 1's
    assert one[0][0].shape == (3, 3, 32, 32) and one[0][0].dtype == torch.float32
    config = TrainConfig(task="derain", iters=2, batch=2, patch=32, stages=["nonlinear"], workers=2)
    card = train(config, _photo_pairs(tmp_path), tmp_path / "w.safetensors", progress=False)
    assert card["training"]["workers"] == 2 and card["training"]["completed"]["stage_index"] == 1
