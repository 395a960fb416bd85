"""The origin-estimated consistency function, its two parametrisations, and Algorithm 3 sampling."""
import numpy as np
import pytest
import torch

from conftest import perturbed_model
from streamrestore.model.consistency import ConsistencyModel
from streamrestore.model.sampler import NoisePolicy, sample, sampling_times
from streamrestore.model.sde import MeanRevertingSchedule, noise_from_origin


def test_boundary_values():
    model = perturbed_model()
    x_t, mu = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x_t, mu, torch.zeros(2, dtype=torch.long)), x_t)  # f = x_t at t = 0
        t = torch.full((2,), 100)
        torch.testing.assert_close(model(x_t, mu, t), model.origin_estimate(x_t, mu, t))  # f = x0_hat at t = T
        assert not torch.allclose(model.origin_estimate(x_t, mu, t), mu)  # the network contributes


class _Oracle(torch.nn.Module):
    """A 'network' that outputs the true noise: the eq. 8 form must then recover x0 exactly."""

    pad_multiple = 1

    def __init__(self, z):
        super().__init__()
        self.z = z
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, cond, t):
        return self.z


def test_noise_form_recovers_x0_and_agrees_with_origin_form():
    s = MeanRevertingSchedule.create()
    x0, mu, z = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([5, 50, 100])
    from streamrestore.model.sde import mean_reverting_marginal

    x_t = mean_reverting_marginal(s, x0, mu, t, z)
    noise_model = ConsistencyModel(_Oracle(z), s, "noise")
    torch.testing.assert_close(noise_model.origin_estimate(x_t, mu, t), x0, atol=1e-4, rtol=1e-4)
    # origin form with F = x0 - mu gives the same x0_hat as the noise form with the converted eps_hat
    eps_from_origin = noise_from_origin(s, x_t, mu, t, x0)
    origin_model = ConsistencyModel(_Oracle(x0 - mu), s, "origin")
    converted = ConsistencyModel(_Oracle(eps_from_origin), s, "noise")
    torch.testing.assert_close(origin_model(x_t, mu, t), converted(x_t, mu, t), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("parametrisation", ["origin", "noise"])
def test_fp16_body_keeps_float32_combination(parametrisation):
    """The guarantee (consistency.py, DESIGN.md s.1): only the network body runs in FP16; the origin
    estimate and f = c_skip x_t + c_out x0_hat (eq. 9, 18) are float32 from the float32 x_t and mu.

    So the output must equal that formula evaluated in float32 around the FP16 body's output, exactly
    (x_t or mu rounded to FP16 anywhere outside the body would break it), and lie within FP16
    rounding of the all-FP32 model."""
    model = perturbed_model()
    model = ConsistencyModel(model.network, model.schedule, parametrisation).eval()
    s, T = model.schedule, model.schedule.T
    mu, x = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    t = torch.tensor([100, 50, 0])
    body_dtypes = []
    with torch.no_grad():
        full = model(x, mu, t)
        model.network.half()
        hooks = [m.register_forward_hook(lambda m, i, o: body_dtypes.append(o.dtype))
                 for m in (model.network, model.network.intro, model.network.ending)]
        half = model(x, mu, t)
        for hook in hooks:
            hook.remove()
        f16 = model.network(x.half(), mu.half(), t.float() / T)  # the body alone, in FP16
    assert body_dtypes == [torch.float16] * 3 and f16.dtype == torch.float16  # the body really ran in FP16
    assert half.dtype == torch.float32

    c_out = (t.float() / T).reshape(-1, 1, 1, 1)  # c_out = t / T: 1, 0.5, 0
    F = f16.float()
    if parametrisation == "origin":  # x0_hat = mu + F
        x0_hat = mu + F
    else:  # eq. 8: x0_hat = mu + exp(thetabar_t) (x_t - mu - sqrt(v_t) eps_hat), all float32
        decay, std = s.decay(t).reshape(-1, 1, 1, 1), s.variance(t).sqrt().reshape(-1, 1, 1, 1)
        x0_hat = mu + (x - mu - std * F) / decay
    assert torch.equal(half, (1 - c_out) * x + c_out * x0_hat)
    # the same formula around FP16 copies of x_t and mu is measurably off, so the check above can tell
    x16, mu16 = x.half().float(), mu.half().float()
    x0_hat16 = mu16 + F if parametrisation == "origin" else mu16 + (x16 - mu16 - std * F) / decay
    assert (half - ((1 - c_out) * x16 + c_out * x0_hat16)).abs().max() > 1e-5
    assert torch.equal(half[2], x[2])  # t = 0: f = x_t exactly, in float32
    # parity with the all-FP32 model: FP16 rounding of F only (for eps_hat at t = T times
    # sqrt(v_T) exp(thetabar_T) = 0.039 * 200 = 7.8)
    assert (half - full).abs().max() < (2e-3 if parametrisation == "origin" else 2e-2)
    assert not torch.equal(half, full)


def test_sampling_times_halve():
    assert sampling_times(100, 1) == [100]
    assert sampling_times(100, 4) == [100, 50, 25, 12]


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 32, 48)])
def test_sampler_runs_and_keeps_shape(steps, shape):
    model = perturbed_model()
    mu = torch.rand(shape)
    with torch.no_grad():
        out = sample(model, model.schedule, mu, NoisePolicy("fresh").draw(steps, mu))
    assert out.shape == shape and torch.isfinite(out).all()


@pytest.mark.parametrize("policy", ["zero", "fixed"])
def test_zero_and_fixed_policies_are_deterministic(policy):
    model = perturbed_model()
    mu = torch.rand(1, 3, 16, 16)
    a, b = NoisePolicy(policy, seed=3), NoisePolicy(policy, seed=3)
    with torch.no_grad():
        first = sample(model, model.schedule, mu, a.draw(2, mu))
        again = sample(model, model.schedule, mu, a.draw(2, mu))  # next frame of the same stream
        other = sample(model, model.schedule, mu, b.draw(2, mu))  # a new stream with the same seed
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(first, other, rtol=0, atol=0)


def test_fresh_policy_changes_noise():
    mu = torch.rand(1, 3, 8, 8)
    p = NoisePolicy("fresh")
    assert not torch.equal(p.draw(1, mu)[0], p.draw(1, mu)[0])


@pytest.mark.parametrize("size", [(17, 23), (33, 9), (64, 48)])
def test_restorer_odd_sizes_keep_shape_and_dtype(tiny_weights, size):
    from streamrestore import Restorer

    r = Restorer(task="denoise", steps=2, device="cpu", weights=str(tiny_weights), noise="zero")
    frame = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = r(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    batch = r(np.stack([frame, frame]))
    assert batch.shape == (2, *size, 3)
    np.testing.assert_array_equal(batch[0], out)
    with pytest.raises(ValueError):
        r(frame.astype(np.float32))


def test_default_noise_policy_comes_from_the_model_card(tmp_path):
    from streamrestore import Restorer
    from streamrestore.model.checkpoint import save_model

    path = tmp_path / "w.safetensors"
    save_model(path, perturbed_model(), {"task": "denoise", "noise_policy": {"default": "zero"}})
    assert Restorer("denoise", weights=str(path)).backend.loaded.noise == "zero"
    assert Restorer("denoise", weights=str(path), noise="fresh").backend.loaded.noise == "fresh"
    save_model(path, perturbed_model(), {"task": "denoise"})
    assert Restorer("denoise", weights=str(path)).backend.loaded.noise == "fixed"
