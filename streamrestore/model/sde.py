"""Closed-form mean-reverting SDE of IR-SDE (Luo et al., ICML 2023), as DESIGN.md section 1 states it.

Forward SDE: dx = theta_t (mu - x) dt + sigma_t dw, with sigma_t^2 / theta_t = 2 lambda^2.
Pixel range: images are float in [0, 1]. Time is the integer index t in {0, ..., T}.
Everything here is a pure function of the schedule tensors: no device state, no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


COSINE_OFFSET = 0.008  # s of the cosine schedule (Nichol & Dhariwal 2021), as IR-SDE uses it


def cosine_theta_schedule(steps: int, s: float = COSINE_OFFSET) -> torch.Tensor:
    """theta_k for k = 1..steps from the cosine schedule (Nichol & Dhariwal 2021, eq. 17), as IR-SDE uses it.

    Returns float64 tensor of shape (steps,): theta_k = 1 - abar_k / abar_{k-1}.
    """
    k = torch.arange(steps + 1, dtype=torch.float64)
    abar = torch.cos((k / steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


@dataclass(frozen=True)
class MeanRevertingSchedule:
    """thetabar_t = dt * sum_{k<=t} theta_k (thetabar_0 = 0), dt chosen so exp(-thetabar_T) = eps."""

    thetabar: torch.Tensor  # (T + 1,) float64
    lam: float
    T: int

    @classmethod
    def create(cls, T: int = 100, lam: float = 10 / 255, eps: float = 0.005) -> "MeanRevertingSchedule":
        theta = cosine_theta_schedule(T)
        cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), theta.cumsum(0)])
        dt = -math.log(eps) / float(cumulative[-1])
        return cls(thetabar=cumulative * dt, lam=lam, T=T)

    @property
    def eps(self) -> float:
        """exp(-thetabar_T): what is left of x0 - mu at t = T."""
        return float(torch.exp(-self.thetabar[-1]))

    def facts(self) -> dict:
        """What a model card records of the schedule, read from it."""
        return {"T": self.T, "lambda": self.lam, "eps": round(self.eps, 9), "theta": f"cosine, s={COSINE_OFFSET}"}

    def thetabar_on(self, device: torch.device) -> torch.Tensor:
        """thetabar on `device`, copied there once: a copy per sampling step would synchronise a CUDA stream."""
        kept = self.__dict__.setdefault("_on_device", {})
        if device not in kept:
            kept[device] = self.thetabar.to(device)
        return kept[device]

    def decay(self, t: torch.Tensor) -> torch.Tensor:
        """exp(-thetabar_t) as float32, for integer t of any shape."""
        return torch.exp(-self.thetabar_on(t.device)[t]).float()

    def variance(self, t: torch.Tensor) -> torch.Tensor:
        """v_t = lambda^2 (1 - exp(-2 thetabar_t)) as float32."""
        return (self.lam**2 * (1 - torch.exp(-2 * self.thetabar_on(t.device)[t]))).float()


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (N,) per-sample factor to broadcast over an (N, C, H, W) image."""
    return value.reshape(-1, *([1] * (like.dim() - 1)))


def marginal_mean(schedule: MeanRevertingSchedule, x0: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """m_t = mu + (x0 - mu) exp(-thetabar_t)  (IR-SDE eq. 7, mean)."""
    return mu + (x0 - mu) * _per_sample(schedule.decay(t), x0)


def marginal_std(schedule: MeanRevertingSchedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """sqrt(v_t), shaped to broadcast over `like` (IR-SDE eq. 7, variance)."""
    return _per_sample(schedule.variance(t).sqrt(), like)


def mean_reverting_marginal(schedule: MeanRevertingSchedule, x0: torch.Tensor, mu: torch.Tensor,
                            t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x_t = m_t + sqrt(v_t) z, a draw of the closed-form marginal given the standard normal z."""
    return marginal_mean(schedule, x0, mu, t) + marginal_std(schedule, t, x0) * z


def origin_from_noise(schedule: MeanRevertingSchedule, x_t: torch.Tensor, mu: torch.Tensor,
                      t: torch.Tensor, eps_hat: torch.Tensor) -> torch.Tensor:
    """x0_hat = mu + exp(thetabar_t) (x_t - mu - sqrt(v_t) eps_hat)  (IR-CM eq. 8)."""
    return mu + (x_t - mu - marginal_std(schedule, t, x_t) * eps_hat) / _per_sample(schedule.decay(t), x_t)


def noise_from_origin(schedule: MeanRevertingSchedule, x_t: torch.Tensor, mu: torch.Tensor,
                      t: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """The inverse of eq. 8: eps_hat = ((x_t - mu) - exp(-thetabar_t)(x0_hat - mu)) / sqrt(v_t)."""
    return ((x_t - mu) - _per_sample(schedule.decay(t), x_t) * (x0_hat - mu)) / marginal_std(schedule, t, x_t)
