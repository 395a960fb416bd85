"""The closed-form mean-reverting SDE: fixed schedule values, marginal formulas, and a simulated SDE."""
import math

import torch

from streamrestore.model.sde import (MeanRevertingSchedule, cosine_theta_schedule, marginal_mean, mean_reverting_marginal,
                               noise_from_origin, origin_from_noise)


def test_schedule_fixed_values():
    s = MeanRevertingSchedule.create()
    assert s.T == 100 and math.isclose(s.lam, 10 / 255)
    assert float(s.thetabar[0]) == 0.0
    expected = {1: 0.000424518, 10: 0.0190001, 50: 0.469857, 99: 4.62652, 100: 5.29832}
    for t, value in expected.items():
        assert math.isclose(float(s.thetabar[t]), value, rel_tol=1e-4), t
    assert math.isclose(math.exp(-float(s.thetabar[-1])), 0.005, rel_tol=1e-9)
    assert torch.all(s.thetabar[1:] > s.thetabar[:-1])  # thetabar rises strictly


def test_marginal_equals_formulas():
    s = MeanRevertingSchedule.create()
    x0, mu = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    t = torch.tensor([0, 37, 100])
    m = marginal_mean(s, x0, mu, t)
    for i, ti in enumerate(t.tolist()):
        decay = math.exp(-float(s.thetabar[ti]))
        torch.testing.assert_close(m[i], mu[i] + (x0[i] - mu[i]) * decay)
        assert math.isclose(float(s.variance(torch.tensor([ti]))), s.lam**2 * (1 - decay**2), rel_tol=1e-5)
    torch.testing.assert_close(m[0], x0[0])  # mean at t = 0 is x0
    assert float(s.variance(torch.tensor([0]))) == 0.0
    v = s.variance(torch.arange(101))
    assert torch.all(v[1:] > v[:-1])  # variance rises towards lambda^2 (1 - eps^2)


def test_marginal_matches_simulated_sde():
    """Euler-Maruyama of dx = theta_t (mu - x) dt + sigma_t dw, many paths, against mean and variance."""
    T, lam = 100, 10 / 255
    s = MeanRevertingSchedule.create(T=T, lam=lam)
    dt = float(s.thetabar[-1]) / float(cosine_theta_schedule(T).sum())
    theta = cosine_theta_schedule(T)
    gen = torch.Generator().manual_seed(0)
    x0, mu, paths = 0.8, 0.2, 200_000
    x = torch.full((paths,), x0, dtype=torch.float64)
    for k in range(T):
        th = float(theta[k])
        # exact Ornstein-Uhlenbeck step over one interval of constant theta (sigma^2 = 2 lambda^2 theta)
        decay = math.exp(-th * dt)
        x = mu + (x - mu) * decay + math.sqrt(lam**2 * (1 - decay**2)) * torch.randn(paths, generator=gen, dtype=torch.float64)
        if k + 1 in (10, 50, 100):
            t = torch.tensor([k + 1])
            mean = mu + (x0 - mu) * float(s.decay(t))
            assert abs(float(x.mean()) - mean) < 5 * math.sqrt(float(s.variance(t)) / paths) + 1e-6
            assert abs(float(x.var()) / float(s.variance(t)) - 1) < 0.02


def test_origin_estimate_recovers_x0_with_true_noise_and_inverts():
    s = MeanRevertingSchedule.create()
    x0, mu, z = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([1, 20, 60, 100])
    x_t = mean_reverting_marginal(s, x0, mu, t, z)
    torch.testing.assert_close(origin_from_noise(s, x_t, mu, t, z), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(noise_from_origin(s, x_t, mu, t, x0), z, atol=1e-3, rtol=1e-3)


def test_schedule_constants_are_copied_to_a_device_once():
    """decay/variance index a per-device copy made once (on CUDA a copy per step would synchronise)."""
    schedule = MeanRevertingSchedule.create()
    t = torch.tensor([100, 50])
    first = schedule.thetabar_on(t.device)
    schedule.decay(t), schedule.variance(t)
    assert schedule.thetabar_on(t.device) is first and torch.equal(first, schedule.thetabar)


def test_card_facts_are_read_from_the_schedule():
    facts = MeanRevertingSchedule.create(T=50, lam=5 / 255, eps=0.01).facts()
    assert facts == {"T": 50, "lambda": 5 / 255, "eps": 0.01, "theta": "cosine, s=0.008"}
