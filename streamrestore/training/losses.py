"""IR-CM training losses: consistency training with a shared-noise pair and the origin-guided loss (eq. 14)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from streamrestore.errors import UserError
from streamrestore.model.sampler import sample, sampling_times
from streamrestore.model.sde import mean_reverting_marginal

STAGES = ("linear", "nonlinear")


def consistency_pair(schedule, x0: torch.Tensor, mu: torch.Tensor, n: torch.Tensor, z: torch.Tensor):
    """(x_{t_{n+1}}, x_{t_n}) built from the SAME z, so both lie on one trajectory (consistency training)."""
    return mean_reverting_marginal(schedule, x0, mu, n + 1, z), mean_reverting_marginal(schedule, x0, mu, n, z)


def fft_amplitude_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Our default perceptual substitute: L1 between orthonormal 2-D FFT amplitudes (per channel)."""
    a = torch.fft.rfft2(prediction.float(), norm="ortho").abs()
    b = torch.fft.rfft2(target.float(), norm="ortho").abs()
    return (a - b).abs().mean()


def balanced_l1(prediction: torch.Tensor, target: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Mean L1 with each image weighted by c / (e_i + floor), e_i its own mean L1 and c the batch mean of e_i + floor,
    the weights held constant: the gradient of c * mean_i log(e_i + floor). Mean PSNR over images is a mean of
    -10 log10(MSE_i), so it counts an image by its relative error, where a plain mean L1 counts it by its absolute
    error and leaves mild degradations (low noise, a drizzle, dusk) to the heavy ones; `floor` (in [0, 1] units)
    keeps an image with almost nothing to restore from taking the whole batch. floor 0: the plain mean L1."""
    if floor <= 0:
        return F.l1_loss(prediction, target)
    per_image = (prediction - target).abs().flatten(1).mean(1)
    scale = per_image.detach() + floor
    return (scale.mean() / scale * per_image).mean()


def _read_state(path: Path) -> dict:
    """Tensors of a safetensors file or a PyTorch state dict (weights only, never code); UserError otherwise."""
    from safetensors.torch import load_file

    loaders = [load_file, lambda p: torch.load(p, map_location="cpu", weights_only=True)]
    if path.suffix != ".safetensors":
        loaders.reverse()
    for load in loaders:
        try:
            state = load(str(path))
        except Exception:  # noqa: BLE001 - each loader has its own errors (pickle, zip, header); try the other
            continue
        if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
            return state
    raise UserError(f"--perceptual-weights {path}: not a safetensors file or a PyTorch state dict of tensors; "
                    "give torchvision's vgg16 weights")


class VGG16Perceptual(nn.Module):
    """The paper's perceptual term: L1 of VGG16 features at pool2 and pool5 (Simonyan & Zisserman 2015).

    Weights come only from a file the user passes, with torchvision's `features.N.*` key names
    (safetensors, or a state dict read with `torch.load(weights_only=True)`). Never downloaded.
    """

    LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, weights: str | Path):
        super().__init__()
        layers, c = [], 3
        for v in self.LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        path = Path(weights)
        state = {k: v for k, v in _read_state(path).items() if k.startswith("features.")}
        wanted = {k: v.shape for k, v in self.state_dict().items()}
        found = sum(k in state and tuple(state[k].shape) == tuple(shape) for k, shape in wanted.items())
        if found < len(wanted) or len(state) > len(wanted):
            raise UserError(f"--perceptual-weights {path}: holds {found} of the {len(wanted)} VGG16 tensors "
                            "torchvision names features.0.weight ... features.28.bias (with their shapes); give "
                            "torchvision's vgg16 weights")
        self.load_state_dict(state)
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self.taps = (pools[1], pools[4])  # pool2, pool5

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = (prediction.float() - self.mean) / self.std
        y = (target.float() - self.mean) / self.std
        loss = x.new_zeros(())
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in self.taps:
                loss = loss + F.l1_loss(x, y)
        return loss


def irc_m_loss(model, lq: torch.Tensor, hq: torch.Tensor, stage: str, n: torch.Tensor, z: torch.Tensor,
               perceptual=fft_amplitude_l1, lambda_og: float = 0.8, lambda_perc: float = 0.125,
               previous: torch.Tensor | None = None, psnr_balance: float = 0.0):
    """L = L_CT + lambda_OG * L_OG (IR-CM eq. 14). Returns (loss, {"ct": .., "og": ..}).

    Stage "linear" (Algorithm 1): mu = LQ and x0 = LQ. Stage "nonlinear" (Algorithm 2): x0 = HQ.
    The target side is the stop-gradient of the same network (phi- = stopgrad(phi)).
    previous: a temporal model's previous restored frame (a condition, like mu; None for one-frame models).
    psnr_balance: > 0 weighs the images of L_OG's L1 as mean PSNR does (balanced_l1, floor in 8-bit levels).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    x0 = lq if stage == "linear" else hq
    x_next, x_cur = consistency_pair(model.schedule, x0, lq, n, z)
    student = model(x_next, lq, n + 1, previous=previous)
    with torch.no_grad():
        target = model(x_cur, lq, n, previous=previous)
    l_ct = F.l1_loss(student, target)
    l_og = balanced_l1(student, hq, psnr_balance / 255) + lambda_perc * perceptual(student, hq)
    return l_ct + lambda_og * l_og, {"ct": l_ct.item(), "og": l_og.item()}


def two_step_loss(model, lq: torch.Tensor, hq: torch.Tensor, noises: list[torch.Tensor],
                  perceptual=fft_amplitude_l1, lambda_perc: float = 0.125, psnr_balance: float = 0.0) -> torch.Tensor:
    """L_OG of the 2-step output of Algorithm 3, the first step held fixed (no gradient through it).

    Not part of IR-CM. Consistency training builds x_{T/2} from the true origin HQ, but 2-step sampling
    builds it from the model's own 1-step estimate (and, under the `zero` noise policy, with z = 0);
    this term trains the second step on what it will actually be given. noises: [z_1, z_2] as in `sample`.
    """
    schedule = model.schedule
    with torch.no_grad():
        first = sample(model, schedule, lq, noises[:1])
    t = torch.full((lq.shape[0],), sampling_times(schedule.T, 2)[1], dtype=torch.long, device=lq.device)
    second = model(mean_reverting_marginal(schedule, first, lq, t, noises[1]), lq, t)
    return balanced_l1(second, hq, psnr_balance / 255) + lambda_perc * perceptual(second, hq)
