"""The origin-estimated consistency function of IR-CM (Gong & Ma, NeurIPS 2024, eq. 9 and 18).

f(x_t, t) = c_skip(t) x_t + c_out(t) x0_hat,  c_out(t) = t / T,  c_skip(t) = 1 - c_out(t).

The network body may run in FP16; the origin estimate and the combination are float32.
"""
from __future__ import annotations

import torch
from torch import nn

from streamrestore.model.sde import MeanRevertingSchedule, origin_from_noise

PARAMETRISATIONS = ("origin", "noise")


def boundary_coefficients(t: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of eq. 18 as (N, 1, 1, 1) float32: c_out = t/T, so f = x_t at t = 0."""
    c_out = (t.float() / T).reshape(-1, 1, 1, 1)
    return 1 - c_out, c_out


class ConsistencyModel(nn.Module):
    """f_phi(x_t, mu, t) around a network F(x, cond, t/T) that knows nothing of the SDE.

    parametrisation "origin" (default, DESIGN.md s.1): x0_hat = mu + F.
    parametrisation "noise" (the paper's form, e.g. for IR-SDE weights): eps_hat = F, x0_hat by eq. 8.
    Inputs (N, 3, H, W) in [0, 1]; t is an (N,) integer tensor in {0..T}. Output float32.
    A temporal network also gets `previous`, the stream's previous restored frame (N, 3, H, W) in
    [0, 1], as condition channels after mu; without one (a stream's first frame, a still image, a
    reset) it gets mu itself, the convention it was trained with.
    second_time: where multi-step sampling re-noises to after the first step (streamrestore.model.sampler.
    sampling_times; None: T/2), set from the checkpoint's model card by the backends' loader.
    """

    def __init__(self, network: nn.Module, schedule: MeanRevertingSchedule, parametrisation: str = "origin"):
        super().__init__()
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, not {parametrisation!r}")
        self.network = network
        self.schedule = schedule
        self.parametrisation = parametrisation
        self.second_time: int | None = None

    @property
    def is_temporal(self) -> bool:
        """Whether the network also takes the previous restored frame (any network may be wrapped)."""
        return getattr(self.network, "is_temporal", False)

    def condition(self, mu: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """The network's cond input: mu, then (temporal networks only) the previous frame or mu again."""
        if not self.is_temporal:
            return mu
        return torch.cat([mu, mu if previous is None else previous], dim=1)

    def origin_estimate(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                        previous: torch.Tensor | None = None) -> torch.Tensor:
        """x0_hat in float32 (the network may run in a lower precision)."""
        dtype = next(self.network.parameters()).dtype
        cond = self.condition(mu, previous).to(dtype)
        out = self.network(x_t.to(dtype), cond, t.float() / self.schedule.T).float()
        if self.parametrisation == "origin":
            return mu.float() + out
        return origin_from_noise(self.schedule, x_t.float(), mu.float(), t, out)

    def forward(self, x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        c_skip, c_out = boundary_coefficients(t, self.schedule.T)
        return c_skip * x_t.float() + c_out * self.origin_estimate(x_t, mu, t, previous)
