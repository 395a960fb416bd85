"""Fixed-value tests (issue 18): answers a reader can work out by hand, not shapes or "it runs".

Sampling (Algorithm 3 on the closed-form SDE), degradation seeding, Y-PSNR/SSIM and the latency
report summary. The runtime pieces (profiles, streams.yaml, output dispatch) are in
test_fixed_values_runtime.py.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from streamrestore.evaluation.metrics import psnr_y, rgb_to_y, ssim_y
from streamrestore.io.base import DecodedFrame
from streamrestore.model.sampler import NoisePolicy, sample
from streamrestore.model.sde import MeanRevertingSchedule
from streamrestore.runtime.report import STAGES, LatencyReport
from streamrestore.tasks import degradations as deg

# ---------------------------------------------------------------------------------------------
# sample(): Algorithm 3 with a stand-in network whose output is a known function
# ---------------------------------------------------------------------------------------------

LAM, EPS, T = 10 / 255, 0.005, 100


def decay_by_hand(t: int) -> float:
    """exp(-thetabar_t), from DESIGN.md s.1 written out again in float64 (not through streamrestore.model.sde).

    theta_k = min(1 - abar_k / abar_{k-1}, 0.999), abar_k = cos^2(((k/T + s) / (1 + s)) pi/2), s = 0.008;
    thetabar_t = dt sum_{k<=t} theta_k with dt such that exp(-thetabar_T) = eps, so
    exp(-thetabar_t) = eps ** (sum_{k<=t} theta_k / sum_{k<=T} theta_k).
    """
    s = 0.008
    abar = [math.cos((k / T + s) / (1 + s) * math.pi / 2) ** 2 for k in range(T + 1)]
    theta = [min(1 - abar[k] / abar[k - 1], 0.999) for k in range(1, T + 1)]
    return EPS ** (sum(theta[:t]) / sum(theta))


def std_by_hand(t: int) -> float:
    """sqrt(v_t), v_t = lambda^2 (1 - exp(-2 thetabar_t))  (IR-SDE eq. 7, variance)."""
    return LAM * math.sqrt(1 - decay_by_hand(t) ** 2)


def test_schedule_by_hand():
    # exp(-thetabar_T) = eps = 0.005 by construction; exp(-thetabar_50) = 0.62509...; sqrt(v_T) = 0.0392152
    assert decay_by_hand(T) == pytest.approx(0.005, rel=1e-12)
    assert decay_by_hand(50) == pytest.approx(0.6250918, abs=1e-7)
    assert std_by_hand(T) == pytest.approx(10 / 255 * math.sqrt(1 - 0.005**2), rel=1e-12)
    s = MeanRevertingSchedule.create()
    for t in (0, 1, 25, 50, 100):
        assert float(s.decay(torch.tensor([t]))) == pytest.approx(decay_by_hand(t), rel=1e-6)
        assert float(s.variance(torch.tensor([t]))) == pytest.approx(std_by_hand(t) ** 2, rel=1e-6, abs=1e-12)


class AffineStandIn:
    """f(x, mu, t) = 0.5 x + 0.1: a 'consistency model' that ignores mu and t; records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, mu, t, **kwargs):
        self.calls.append((x.clone(), t.clone(), kwargs))
        return 0.5 * x + 0.1


def expected_sample(mu: np.ndarray, noises: list[np.ndarray]) -> np.ndarray:
    """Algorithm 3 by hand with f = 0.5 x + 0.1: x_T = mu + sqrt(v_T) z_0; x0 = f(x);
    then per further step t_n (T/2, T/4, ...): x = mu + (x0 - mu) exp(-thetabar_tn) + sqrt(v_tn) z_n; x0 = f(x)."""
    t = T
    x = mu + std_by_hand(t) * noises[0]
    x0 = 0.5 * x + 0.1
    for z in noises[1:]:
        t //= 2
        x = mu + (x0 - mu) * decay_by_hand(t) + std_by_hand(t) * z
        x0 = 0.5 * x + 0.1
    return x0


def _mu():
    return torch.linspace(0, 1, 2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)


def test_one_step_with_zero_noise_is_f_of_mu():
    # z = 0: x_T = mu exactly, so the output is 0.5 mu + 0.1 exactly
    mu, model = _mu(), AffineStandIn()
    out = sample(model, MeanRevertingSchedule.create(), mu, [torch.zeros_like(mu)])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, 0.5 * mu + 0.1, rtol=0, atol=0)
    (x, t, _), = model.calls
    assert torch.equal(x, mu) and set(t.tolist()) == {100}


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_steps_follow_the_closed_form(steps):
    mu = _mu()
    g = torch.Generator().manual_seed(7)
    noises = [torch.randn(mu.shape, generator=g) for _ in range(steps)]
    model = AffineStandIn()
    out = sample(model, MeanRevertingSchedule.create(), mu, noises)
    want = expected_sample(mu.double().numpy(), [z.double().numpy() for z in noises])
    np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=2e-6)
    assert [set(t.tolist()) for _, t, _ in model.calls] == [{100}, {50}, {25}][:steps]  # t halves: T, T/2, T/4
    # the first network input is x_T = mu + sqrt(v_T) z_0, sqrt(v_T) = 0.0392152
    np.testing.assert_allclose(model.calls[0][0].numpy(), mu.numpy() + 0.0392152 * noises[0].numpy(), atol=1e-6)


def test_two_steps_with_zero_noise_by_hand():
    # z = 0 throughout: x0_1 = 0.5 mu + 0.1; x_50 = mu + (x0_1 - mu) d, d = exp(-thetabar_50) = 0.6250918;
    # output 0.5 x_50 + 0.1. For mu = 0: 0.5 * 0.1 * d + 0.1 = 0.1312546. For mu = 1: 0.5 * (1 - 0.4 d) + 0.1 = 0.4749816.
    mu = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1).expand(2, 3, 2, 2).contiguous()
    out = sample(AffineStandIn(), MeanRevertingSchedule.create(), mu, [torch.zeros_like(mu)] * 2)
    d = decay_by_hand(50)
    np.testing.assert_allclose(out[0].numpy(), 0.5 * 0.1 * d + 0.1, atol=1e-7)
    np.testing.assert_allclose(out[1].numpy(), 0.5 * (1 - 0.4 * d) + 0.1, atol=1e-7)
    assert float(out[0, 0, 0, 0]) == pytest.approx(0.1312546, abs=1e-7)
    assert float(out[1, 0, 0, 0]) == pytest.approx(0.4749816, abs=1e-7)


def test_previous_frame_reaches_the_model():
    mu = _mu()
    previous = torch.full_like(mu, 0.25)
    model = AffineStandIn()
    sample(model, MeanRevertingSchedule.create(), mu, [torch.zeros_like(mu)] * 2, previous=previous)
    assert all(kwargs.keys() == {"previous"} and torch.equal(kwargs["previous"], previous) for *_, kwargs in model.calls)
    model = AffineStandIn()
    sample(model, MeanRevertingSchedule.create(), mu, [torch.zeros_like(mu)])
    assert model.calls[0][2] == {}  # a one-frame model gets no `previous` keyword


def test_noise_policies_feed_the_sampler():
    """zero: z = 0 (output 0.5 mu + 0.1); fixed: one field per stream, the same every frame and for every
    item of a batch; fresh: new draws every frame. Each frame's output is the closed form of its own z."""
    mu, schedule = _mu(), MeanRevertingSchedule.create()

    def run(noises):
        return sample(AffineStandIn(), schedule, mu, noises)

    zero = NoisePolicy("zero").draw(2, mu)
    assert all(torch.equal(z, torch.zeros_like(mu)) for z in zero)
    np.testing.assert_allclose(run(zero).numpy(), expected_sample(mu.double().numpy(), [np.zeros(mu.shape)] * 2), atol=2e-6)

    fixed = NoisePolicy("fixed", seed=4)
    first, second = fixed.draw(2, mu), fixed.draw(2, mu)
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # frame after frame
    assert all(torch.equal(z[0], z[1]) for z in first)  # every item of the batch
    assert not torch.equal(first[0], first[1])  # but each step its own field
    assert not torch.equal(first[0], NoisePolicy("fixed", seed=5).draw(2, mu)[0])  # the seed matters
    assert torch.equal(run(first), run(second))
    np.testing.assert_allclose(run(first).numpy(),
                               expected_sample(mu.double().numpy(), [z.double().numpy() for z in first]), atol=2e-6)

    fresh = NoisePolicy("fresh", seed=4)
    a, b = fresh.draw(2, mu), fresh.draw(2, mu)
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[0][0], a[0][1])
    again = NoisePolicy("fresh", seed=4).draw(2, mu)  # the same seed gives the same sequence
    assert all(torch.equal(x, y) for x, y in zip(a, again))
    for noises in (a, b):
        np.testing.assert_allclose(run(noises).numpy(),
                                   expected_sample(mu.double().numpy(), [z.double().numpy() for z in noises]), atol=2e-6)


# ---------------------------------------------------------------------------------------------
# degradations: a seed fixes the result; closed-form facts
# ---------------------------------------------------------------------------------------------

def _image(h=40, w=48):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy / h, xx / w, (yy + xx) / (h + w)], -1).astype(np.float32) * 0.8 + 0.1


DEGRADE = {
    "add_noise": lambda im, rng: deg.add_noise(im, rng, sigma=0.1),
    "shot_noise": lambda im, rng: deg.add_noise(im, rng, sigma=0.01, peak=50.0),
    "sensor_noise": lambda im, rng: deg.sensor_noise(im, rng, sigma=0.05, peak=100.0, chroma=0.05, quality=60),
    "chroma_noise": lambda im, rng: deg.add_chroma_noise(im, rng, sigma=0.05),
    "rain": lambda im, rng: deg.add_rain(im, rng, density=0.05, haze=0.1, splashes=0.01),
    "shaken_blur": lambda im, rng: deg.add_blur(im, rng, deg.trajectory_kernel(rng, size=9), 0.01),
    "darken": lambda im, rng: deg.darken(im, rng),
    **{f"train_{task}": fn for task, fn in deg.TRAIN_SAMPLERS.items()},
    **{f"eval_{task}": fn for task, fn in deg.EVAL_SAMPLERS.items()},
}


@pytest.mark.parametrize("name", list(DEGRADE))
def test_same_seed_same_image_other_seed_differs(name):
    fn, image = DEGRADE[name], _image()
    a = fn(image.copy(), np.random.default_rng(11))
    b = fn(image.copy(), np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    # train_derain leaves 15 % of draws clean: seed 12 is one that rains (checked below by differing)
    c = fn(image.copy(), np.random.default_rng(12))
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == image.shape and 0 <= a.min() and a.max() <= 1


@pytest.mark.parametrize("task", deg.TASKS)
def test_eval_degrade_uint8_is_reproducible(task):
    image = (_image() * 255).astype(np.uint8)
    a, b = deg.eval_degrade_uint8(task, image, 3), deg.eval_degrade_uint8(task, image, 3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert not np.array_equal(a, deg.eval_degrade_uint8(task, image, 4))
    assert not np.array_equal(a, image)


def test_family_grid_is_reproducible():
    image = (_image() * 255).astype(np.uint8)
    for task, families in deg.FAMILIES.items():
        family = next(iter(families))
        (a, clean), (b, _) = deg.family_uint8(task, family, image, 5), deg.family_uint8(task, family, image, 5)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(clean, image)  # the first family of each grid keeps the scene as it is


def test_add_noise_is_the_seeded_normal_draw():
    # away from 0 and 1 (no clipping) the added noise is exactly numpy's N(0, sigma) draw from the same seed
    image = np.full((8, 9, 3), 0.5, np.float32)
    out = deg.add_noise(image, np.random.default_rng(21), sigma=0.02)
    noise = np.random.default_rng(21).normal(0, 0.02, image.shape).astype(np.float32)
    np.testing.assert_array_equal(out, image + noise)
    assert deg.add_noise(image, np.random.default_rng(0), sigma=0.0).tolist() == image.tolist()


@pytest.mark.parametrize("size,angle", [(5, 30.0), (11, 100.0), (25, 135.0)])
def test_line_blur_keeps_a_constant_image(size, angle):
    # a normalised kernel (sum 1) maps a constant image to itself; noise_sigma = 0 adds nothing
    image = np.full((30, 34, 3), 0.37, np.float32)
    out = deg.blur_family(image, np.random.default_rng(0), kind="line", size=size, angle=angle, noise_sigma=0.0)
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_kernels_are_normalised():
    for size in (7, 15, 25):
        kernel = deg.trajectory_kernel(np.random.default_rng(size), size=size)
        assert kernel.shape == (size, size) and kernel.min() >= 0
        assert float(kernel.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)


def test_darken_without_noise_is_gamma_and_gain():
    # no shot noise (peak None) and no read noise: x^gamma * gain * cast. 0.5^2 * 0.25 = 0.0625; cast 0.8 on red: 0.05
    image = np.full((4, 4, 3), 0.5, np.float32)
    out = deg.darken(image, np.random.default_rng(0), gamma=2.0, gain=0.25, shot_peak=None, read_sigma=0.0,
                     cast=(0.8, 1.0, 1.2))
    np.testing.assert_allclose(out[0, 0], [0.05, 0.0625, 0.075], rtol=1e-6)


def test_rain_without_drops_changes_nothing_and_rain_only_adds_light():
    image = _image()
    dry = deg.add_rain(image, np.random.default_rng(0), density=0.0)
    np.testing.assert_allclose(dry, image, atol=1e-6)  # screen blend with s = 0: 1 - (1 - x) = x
    wet = deg.add_rain(image, np.random.default_rng(0), density=0.05, blend="screen")
    assert (wet >= image - 1e-6).all() and (wet > image + 0.01).any()


def test_clip_sampler_keeps_its_parameters_per_clip():
    # the clip's parameters come from the clip rng; the per-frame rng only draws the noise
    image = _image()
    a = deg.clip_noise(np.random.default_rng(1))
    b = deg.clip_noise(np.random.default_rng(1))
    np.testing.assert_array_equal(a(image, np.random.default_rng(9)), b(image, np.random.default_rng(9)))
    assert not np.array_equal(a(image, np.random.default_rng(9)), a(image, np.random.default_rng(10)))


# ---------------------------------------------------------------------------------------------
# Y-PSNR and SSIM (streamrestore.evaluation.metrics): BT.601 studio-range luma, peak 255
# ---------------------------------------------------------------------------------------------

def _grey(level: int, h=32, w=32) -> np.ndarray:
    return np.full((h, w, 3), level, np.uint8)


def test_bt601_luma_of_known_colours():
    # Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (MATLAB rgb2ycbcr): white 235, black 16
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(colours)[0], [16.0, 235.0, 81.481, 144.553, 40.966], atol=1e-9)
    # grey g: Y = 16 + 219 g / 255; g = 128 -> 125.929...
    assert float(rgb_to_y(_grey(128, 1, 1))[0, 0]) == pytest.approx(16 + 219 * 128 / 255, abs=1e-12)


def test_psnr_of_identical_images_is_infinite():
    image = (np.arange(32 * 32 * 3) % 256).astype(np.uint8).reshape(32, 32, 3)
    assert psnr_y(image, image.copy()) == math.inf


@pytest.mark.parametrize("k", [1, 2, 10])
def test_psnr_of_a_grey_offset_by_hand(k):
    # a grey offset of k levels moves Y by 219 k / 255 everywhere: PSNR = 10 log10(255^2 / (219 k / 255)^2).
    # (An MSE of exactly 1 Y level would give 10 log10(255^2) = 48.13 dB; one grey level gives 49.4527 dB.)
    want = 10 * math.log10(255**2 / (219 * k / 255) ** 2)
    assert psnr_y(_grey(100 + k), _grey(100)) == pytest.approx(want, abs=1e-9)
    assert psnr_y(_grey(100), _grey(100 + k)) == pytest.approx(want, abs=1e-9)  # symmetric
    if k == 1:
        assert want == pytest.approx(49.4527, abs=1e-4)
        assert 10 * math.log10(255**2) == pytest.approx(48.1308, abs=1e-4)


def test_psnr_of_half_the_pixels_offset_is_3_db_more():
    # half the pixels off by one grey level halves the MSE: +10 log10(2) = +3.0103 dB
    target, prediction = _grey(100), _grey(100)
    prediction[:16] += 1
    assert psnr_y(prediction, target) == pytest.approx(49.4527 + 3.0103, abs=1e-4)


def test_psnr_black_against_white():
    # Y 16 against 235: 20 log10(255 / 219) = 1.3215 dB
    assert psnr_y(_grey(0), _grey(255)) == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)


def test_ssim_of_identical_images_is_one():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    assert ssim_y(image, image.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_flat_greys_by_hand():
    # flat images: no variance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 255)^2, a and b the two Y values
    a, b = 16 + 219 * 60 / 255, 16 + 219 * 200 / 255
    c1 = (0.01 * 255) ** 2
    assert ssim_y(_grey(60), _grey(200)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)


def test_ssim_of_an_inverted_pattern_by_hand():
    # stripes of greys 200 and 50 against their negative (50 and 200): equal means, equal variances
    # s^2 with covariance -s^2, s = (Y(200) - Y(50)) / 2 = 219 * 150 / 255 / 2, so
    # SSIM = (-2 s^2 + C2) / (2 s^2 + C2), C2 = (0.03 * 255)^2: -0.98599
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::2] = 200
    stripes[:, 1::2] = 50
    s2, c2 = (219 * 150 / 255 / 2) ** 2, (0.03 * 255) ** 2
    assert ssim_y(stripes, 250 - stripes) == pytest.approx((-2 * s2 + c2) / (2 * s2 + c2), abs=1e-6)
    assert ssim_y(stripes, 250 - stripes) == pytest.approx(-0.98599, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# the latency report summary (streamrestore.runtime.report)
# ---------------------------------------------------------------------------------------------

def _frame(index: int, restore: float, **timings) -> DecodedFrame:
    return DecodedFrame(np.zeros((2, 2, 3), np.uint8), index, pts=index, time_base=Fraction(1, 25),
                        timings={"restore": restore, **timings})


def test_summary_skips_warmup_and_gives_exact_percentiles():
    # 20 frames with restore = 0, 1, ..., 19 ms; warm-up 5 skipped (20 > 2 * 5), so 5..19 are measured:
    # mean 12, p50 12, p90 = 5 + 0.9 * 14 = 17.6, p99 = 5 + 0.99 * 14 = 18.86 (linear interpolation), max 19
    report = LatencyReport(facts={"backend": "stand-in"}, warmup=5, wall_seconds=4.0)
    for i in range(20):
        report.add(_frame(i, float(i), decode=1.0, end_to_end=2.0 * i))
    summary = report.summary()
    assert summary["backend"] == "stand-in"
    assert (summary["frames"], summary["warmup_frames"], summary["frames_in_report"]) == (20, 5, 20)
    assert summary["throughput_fps"] == 5.0  # 20 frames in 4 s
    assert summary["stages_ms"]["restore"] == {"p50": 12.0, "p90": 17.6, "p99": 18.86, "max": 19.0, "mean": 12.0}
    assert summary["stages_ms"]["decode"] == {"p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0, "mean": 1.0}
    assert summary["stages_ms"]["end_to_end"] == {"p50": 24.0, "p90": 35.2, "p99": 37.72, "max": 38.0, "mean": 24.0}
    assert summary["stages_ms"]["encode"] == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    assert list(summary["stages_ms"]) == list(STAGES)
    assert (summary["skipped_frames"], summary["dropped_frames"], summary["interrupted"]) == (0, 0, False)
    # every record: its index, pts, time = pts * time_base, batch 1 and each stage
    assert report.records[7] == {"index": 7, "pts": 7, "time": 0.28, "batch": 1, "network": 0.0, "decode": 1.0, "upload": 0.0,
                                 "restore": 7.0, "download": 0.0, "fusion": 0.0, "encode": 0.0, "end_to_end": 14.0}
    assert report.table().splitlines()[-1].startswith("20 frames, 5.0 FPS, 0 skipped, 0 dropped; stand-in")


def test_short_run_measures_every_frame():
    # 10 frames and warm-up 5: not more than 2 * warm-up, so all 10 are measured; p50 of 0..9 = 4.5
    report = LatencyReport(warmup=5, wall_seconds=0.5)
    for i in range(10):
        report.add(_frame(i, float(i)))
    summary = report.summary()
    assert summary["warmup_frames"] == 0 and summary["throughput_fps"] == 20.0
    assert summary["stages_ms"]["restore"] == {"p50": 4.5, "p90": 8.1, "p99": 8.91, "max": 9.0, "mean": 4.5}


def test_records_round_to_microseconds_and_no_wall_time_gives_zero_fps():
    report = LatencyReport(warmup=0)
    report.add(_frame(0, 1.23456))
    assert report.records[0]["restore"] == 1.235
    assert report.summary()["throughput_fps"] == 0.0


def test_live_report_keeps_the_latest_records_and_summarises_every_frame():
    # max_records 10, 100 frames with restore = 1..100 ms, warm-up 5: the summary covers frames 6..100
    # (mean (6 + 100) / 2 = 53 exactly, max 100 exactly); percentiles from 1 %-wide bins, within 1 %
    report = LatencyReport(warmup=5, max_records=10, wall_seconds=10.0)
    for i in range(100):
        report.add(_frame(i, float(i + 1)))
    summary = report.summary()
    assert (summary["frames"], summary["frames_in_report"], summary["warmup_frames"]) == (100, 10, 5)
    assert [r["index"] for r in report.records] == list(range(90, 100))
    restore = summary["stages_ms"]["restore"]
    assert restore["mean"] == 53.0 and restore["max"] == 100.0
    exact = np.percentile(np.arange(6, 101), [50, 90, 99])
    for q, want in zip(("p50", "p90", "p99"), exact):
        assert restore[q] == pytest.approx(want, rel=0.01)
    assert summary["stages_ms"]["encode"]["p50"] == 0.0  # 0 ms lands in the bin below 1 us
    assert summary["throughput_fps"] == 10.0
