"""The origin-estimated consistency function, its two parametrisations, and Algorithm 3 sampling."""
import numpy as np
import pytest
import torch

from conftest import perturbed_model
from streamrestore.consistency import ConsistencyModel
from streamrestore.sampler import NoisePolicy, sample, sampling_times
from streamrestore.sde import MeanRevertingSchedule, noise_from_origin


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
    from streamrestore.sde import mean_reverting_marginal

    x_t = mean_reverting_marginal(s, x0, mu, t, z)
    noise_model = ConsistencyModel(_Oracle(z), s, "noise")
    torch.testing.assert_close(noise_model.origin_estimate(x_t, mu, t), x0, atol=1e-4, rtol=1e-4)
    # origin form with F = x0 - mu gives the same x0_hat as the noise form with the converted eps_hat
    eps_from_origin = noise_from_origin(s, x_t, mu, t, x0)
    origin_model = ConsistencyModel(_Oracle(x0 - mu), s, "origin")
    converted = ConsistencyModel(_Oracle(eps_from_origin), s, "noise")
    torch.testing.assert_close(origin_model(x_t, mu, t), converted(x_t, mu, t), atol=1e-4, rtol=1e-4)


def test_fp16_body_keeps_float32_combination():
    """With the network in FP16 (as on CUDA), the consistency function still returns float32 and lands
    within FP16 rounding of the FP32 model; at t = 0 it is x_t exactly (c_out = 0, in float32)."""
    model = perturbed_model()
    mu, x = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    t = torch.tensor([100, 50])
    with torch.no_grad():
        full = model(x, mu, t)
        model.network.half()
        assert next(model.network.parameters()).dtype == torch.float16
        half = model(x, mu, t)
        at_zero = model(x, mu, torch.zeros(2, dtype=torch.long))
    assert half.dtype == torch.float32
    assert (half - full).abs().max() < 2e-3  # FP16 body; float32 combination
    assert not torch.equal(half, full)  # the body really ran in FP16
    assert torch.equal(at_zero, x)


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
    from streamrestore.checkpoint import save_model

    path = tmp_path / "w.safetensors"
    save_model(path, perturbed_model(), {"task": "denoise", "noise_policy": {"default": "zero"}})
    assert Restorer("denoise", weights=str(path)).backend.noise == "zero"
    assert Restorer("denoise", weights=str(path), noise="fresh").backend.noise == "fresh"
    save_model(path, perturbed_model(), {"task": "denoise"})
    assert Restorer("denoise", weights=str(path)).backend.noise == "fixed"
