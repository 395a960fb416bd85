"""Multi-step consistency sampling of IR-CM (Algorithm 3) and the noise policies for video."""
from __future__ import annotations

import functools

import torch

from streamrestore.choices import NOISE_POLICIES
from streamrestore.model.sde import MeanRevertingSchedule, marginal_std, mean_reverting_marginal



def sampling_times(T: int, steps: int, second: int | None = None) -> list[int]:
    """t_n of Algorithm 3, `steps` values, all >= 1: T, then `second` (default T/2), then integer halving.

    The second time is the one a checkpoint's model card may set (`sampling.second_time`, chosen by
    benchmarks/step_times.py): multistep consistency sampling takes its intermediate times as an input
    (Song et al., "Consistency Models", ICML 2023, Algorithm 1: tau_1 > ... > tau_{N-1}).
    """
    if second is None:
        second = max(T // 2, 1)
    elif not 1 <= second < T:
        raise ValueError(f"the second sampling time must be in 1..{T - 1}, not {second}")
    times = [T] if steps > 0 else []
    for _ in range(steps - 1):
        times.append(max(second, 1))
        second //= 2
    return times


def useful_steps(T: int, second: int | None = None) -> int:
    """How many steps of `sampling_times` visit a new t (T, second, second/2, ..., 1); any further step
    repeats t = 1."""
    return len(set(sampling_times(T, T, second)))


def step_input(schedule: MeanRevertingSchedule, mu: torch.Tensor, x0: torch.Tensor | None, t: torch.Tensor,
               z: torch.Tensor) -> torch.Tensor:
    """x_{t_n} of Algorithm 3: x_T = mu + sqrt(v_T) z at the first step (x0 None), else the last origin
    estimate re-noised to t_n by the closed-form marginal (IR-SDE eq. 7)."""
    if x0 is None:
        return mu + marginal_std(schedule, t, mu) * z
    return mean_reverting_marginal(schedule, x0, mu, t, z)


def sample(model, schedule: MeanRevertingSchedule, mu: torch.Tensor, noises,
           previous: torch.Tensor | None = None, second_time: int | None = None) -> torch.Tensor:
    """Algorithm 3 with M = len(noises) steps at `sampling_times(schedule.T, M, second_time)`; noises[0]
    starts x_T, noises[i] re-noises before step i.

    mu: (N, 3, H, W) in [0, 1]; noises: M tensors like mu (a list, or one (M, N, 3, H, W) tensor);
    previous: the stream's previous restored frame, same shape, for a temporal model (None: a first
    frame). Every step's t is a (1,) tensor that broadcasts over the batch, so a traced graph holds
    each t_n and its schedule factors as constants. Returns the last origin estimate, float32, not clipped.
    """
    if previous is not None:  # the model's own keyword; a one-frame model has none
        model = functools.partial(model, previous=previous)
    x0 = None
    for i, t_n in enumerate(sampling_times(schedule.T, len(noises), second_time)):
        t = torch.full((1,), t_n, dtype=torch.long, device=mu.device)
        x0 = model(step_input(schedule, mu, x0, t, noises[i]), mu, t)
    return x0


class NoisePolicy:
    """Where the z of Algorithm 3 comes from, frame after frame of one stream.

    fixed: one noise field per stream and frame size (no flicker from noise; the default);
    fresh: new noise every frame; zero: z = 0 (the mean path).
    """

    def __init__(self, kind: str = "fixed", seed: int = 0):
        if kind not in NOISE_POLICIES:
            raise ValueError(f"noise policy must be one of {', '.join(NOISE_POLICIES)}, not {kind!r}")
        self.kind, self.seed = kind, seed
        self._fixed: dict[tuple, list[torch.Tensor]] = {}
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        """One generator per device, so `fresh` noise is drawn where it is used (no 25 MB upload per
        1080p step); the CPU stream of draws is the same as before."""
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def draw(self, steps: int, like: torch.Tensor) -> list[torch.Tensor]:
        """`steps` noise tensors shaped like `like` (N, C, H, W), on its device, float32."""
        return self.draw_shaped(steps, tuple(like.shape), like.device)

    def draw_shaped(self, steps: int, shape: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
        """`steps` noise tensors of `shape` (N, C, H, W) on `device`, float32."""
        shape, device = tuple(shape), torch.device(device)
        if self.kind == "zero":
            return [torch.zeros(shape, device=device) for _ in range(steps)]
        if self.kind == "fresh":
            generator = self._generator(device)
            return [torch.randn(shape, generator=generator, device=device) for _ in range(steps)]
        key = (steps, shape[1:], device)
        if key not in self._fixed:
            g = torch.Generator().manual_seed(self.seed)
            self._fixed[key] = [torch.randn((1, *shape[1:]), generator=g).to(device) for _ in range(steps)]
        return [z.expand(shape) for z in self._fixed[key]]
