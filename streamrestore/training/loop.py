"""Two-stage consistency training of IR-CM (Algorithms 1 and 2), and the paper's CNN-baseline control.

Side effects (progress bar, checkpoint files) live here and in the CLI; the maths lives in
sde.py / consistency.py / losses.py.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from streamrestore.atomic import atomic_path
from streamrestore.model.checkpoint import load_model, read_card, save_model
from streamrestore.model.consistency import ConsistencyModel
from streamrestore.model.network import SIZES, ConditionalNAFUNet, add_history_input, count_parameters, macs_per_pixel
from streamrestore.model.sampler import sample, sampling_times
from streamrestore.model.sde import MeanRevertingSchedule
from streamrestore.training.config import TrainConfig
from streamrestore.training.data import WorkerBatches
from streamrestore.training.losses import VGG16Perceptual, balanced_l1, fft_amplitude_l1, irc_m_loss, two_step_loss

def sample_pair_index(batch: int, T: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """n in {1..T-1} uniform (consistency training); a `fraction` of pairs instead get t_{n+1} in
    {T, T/2, T/4} — the times 1-, 2- and 3-step sampling evaluate (Algorithm 3) — so a short CPU
    training spends more of its budget where inference happens."""
    n = torch.randint(1, T, (batch,), generator=generator)
    times = torch.tensor(sampling_times(T, 3)) - 1
    at_sampling_time = torch.rand(batch, generator=generator) < fraction
    return torch.where(at_sampling_time, times[torch.randint(len(times), (batch,), generator=generator)], n)


def sampling_noises(like: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """[z_1, z_2] for a 2-step sample: Gaussian for half the batch, zero for the other half, so
    training covers the `fixed`/`fresh` noise policies and the `zero` one."""
    gaussian = (torch.rand(like.shape[0], 1, 1, 1, generator=generator) < 0.5).float()
    return [(torch.randn(like.shape, generator=generator) * gaussian).to(like.device) for _ in range(2)]


def cnn_baseline_loss(model: ConsistencyModel, lq: torch.Tensor, hq: torch.Tensor, psnr_balance: float = 0.0):
    """The paper's control: the same network, plain L1 from LQ to HQ at the constant t = T (each image weighted as
    mean PSNR weighs it with psnr_balance > 0: losses.balanced_l1)."""
    t = torch.full((lq.shape[0],), model.schedule.T, dtype=torch.long, device=lq.device)
    loss = balanced_l1(model(lq, lq, t), hq, psnr_balance / 255)
    return loss, {"l1": loss.item()}


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over `config.warmup` iterations, then cosine decay to 5% of the base rate."""
    warm = min(1.0, (step + 1) / max(1, config.warmup))
    return config.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(1, config.iters))))


def build_model(size: str, temporal: bool = False, sde_lambda: float = 10.0) -> ConsistencyModel:
    """A fresh network of `size` and the schedule with stationary std lambda = `sde_lambda` / 255 (IR-SDE's
    mean-reverting SDE ends at x_T ~ N(mu, lambda^2)); the schedule goes into the weights' metadata, so
    sampling uses the same one."""
    config = replace(SIZES[size], history_channels=3 if temporal else 0)
    return ConsistencyModel(ConditionalNAFUNet(config), MeanRevertingSchedule.create(lam=sde_lambda / 255))


def load_initial_network(model: ConsistencyModel, init_weights: str) -> None:
    """Copy `init_weights` into `model`; a one-frame checkpoint into a temporal model gets zero history
    weights (network.add_history_input), so training starts from exactly the one-frame model."""
    network = load_model(init_weights).network
    if model.is_temporal and not network.is_temporal:
        network = add_history_input(network, model.network.config.history_channels)
    model.network.load_state_dict(network.state_dict())


def make_optimiser(model: ConsistencyModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; a temporal network's history convolution in its own group: `history_lr_scale` times the
    rate and no weight decay, so the new input is learned within a short fine-tuning from a one-frame model."""
    history = getattr(model.network, "history_intro", None)
    new = list(history.parameters()) if history is not None else []
    rest = [p for p in model.parameters() if all(p is not q for q in new)]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if new:
        groups.append({"params": new, "lr_scale": config.history_lr_scale, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".train.pt")


def train(config: TrainConfig, pairs, out: str | Path, resume: bool = False, card: dict | None = None,
          progress: bool = True, init_weights: str | None = None, time_limit: float | None = None) -> dict:
    """Run the configured stages, checkpointing every few minutes; returns the model card. With `time_limit`
    (seconds of this call), stop at the end of the first iteration past it, state saved: `resume` continues, and
    the card's training.completed says where (stage_index < len(stages) while stages are left)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = build_model(config.size, temporal=config.clip_frames > 0, sde_lambda=config.sde_lambda).to(config.device)
    card = dict(card or {})
    if init_weights:  # e.g. a second round of nonlinear fitting from a finished checkpoint
        load_initial_network(model, init_weights)
        earlier = read_card(init_weights)  # keep the whole chain of rounds in the card
        card["initialised_from"] = {"weights": Path(init_weights).name, "training": earlier.get("training"),
                                    "initialised_from": earlier.get("initialised_from")}
        if "noise_policy" in earlier and "noise_policy" not in card:  # until measured again (benchmarks/flicker.py)
            card["noise_policy"] = {**earlier["noise_policy"], "inherited_from": Path(init_weights).name}
    perceptual = VGG16Perceptual(config.perceptual_weights).to(config.device) if config.perceptual_weights else fft_amplitude_l1
    optimiser = make_optimiser(model, config)
    log = {"stage_index": 0, "iteration": 0, "curve": [], "seconds": 0.0}
    if resume and state_path(out).is_file():
        saved = torch.load(state_path(out), map_location=config.device, weights_only=True)
        model.network.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        log = saved["log"]
    card.update(model_facts(model, config))
    generator = torch.Generator().manual_seed(config.seed + 7919 * log["iteration"] + log["stage_index"])
    seed = config.seed + log["iteration"] + 1000 * log["stage_index"]
    pairs.rng = np.random.default_rng(seed)
    if "generators" in log and not config.workers:  # continue both draws exactly where they were saved
        generator.set_state(log["generators"]["torch"])
        pairs.rng.bit_generator.state = log["generators"]["numpy"]
    draws = (WorkerBatches(pairs, config.batch, config.workers, seed, pin_memory=config.device == "cuda")
             if config.workers else pairs)
    try:
        return _run_stages(model, optimiser, draws, config, log, card, out, generator, perceptual, progress,
                           time_limit)
    finally:
        if draws is not pairs:
            draws.close()


def _run_stages(model, optimiser, pairs, config: TrainConfig, log: dict, card: dict, out: Path, generator,
                perceptual, progress: bool, time_limit: float | None) -> dict:
    """The stages left from `log`'s position, checkpointing every `config.checkpoint_seconds` and at the end
    (or when `time_limit` seconds of this call have passed)."""
    began = time.monotonic()
    last_save, started = began, began - log["seconds"]
    while log["stage_index"] < len(config.stages):
        stage = config.stages[log["stage_index"]]
        if log["iteration"] == 0 and log["stage_index"] > 0:
            optimiser = make_optimiser(model, config)
        bar = tqdm(total=config.iters, initial=log["iteration"], desc=f"{config.task} {stage}", disable=not progress,
                   dynamic_ncols=True)
        while log["iteration"] < config.iters:
            loss, parts = training_step(model, optimiser, pairs, config, stage, generator, log["iteration"], perceptual)
            log["iteration"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", **{k: f"{v:.4f}" for k, v in parts.items()})
            if log["iteration"] % 25 == 0 or log["iteration"] == 1:
                log["curve"].append([stage, log["iteration"], round(loss, 5)])
            out_of_time = time_limit is not None and time.monotonic() - began >= time_limit
            if out_of_time or time.monotonic() - last_save > config.checkpoint_seconds:
                log["seconds"] = time.monotonic() - started
                save_training_state(out, model, optimiser, log, card, config, generator, pairs)
                last_save = time.monotonic()
                if out_of_time:
                    bar.close()
                    return card
        bar.close()
        log["stage_index"] += 1
        log["iteration"] = 0
    log["seconds"] = time.monotonic() - started
    save_training_state(out, model, optimiser, log, card, config, generator, pairs)
    return card


def training_step(model, optimiser, pairs, config: TrainConfig, stage: str, generator, step: int,
                  perceptual=fft_amplitude_l1):
    for group in optimiser.param_groups:
        group["lr"] = learning_rate(config, step) * group.get("lr_scale", 1.0)
    lq, hq = (x.to(config.device, non_blocking=True) for x in pairs.batch(config.batch))
    previous = None
    if config.clip_frames:  # pseudo-clips (K, N, ...): restore up to the last frame, then train on it
        previous = recurrent_history(model, lq, generator)
        lq, hq = lq[-1], hq[-1]
    if stage == "baseline":
        loss, parts = cnn_baseline_loss(model, lq, hq, config.psnr_balance)
    else:
        n = sample_pair_index(lq.shape[0], model.schedule.T, config.sampling_time_fraction, generator).to(config.device)
        z = torch.randn(lq.shape, generator=generator).to(config.device)
        loss, parts = irc_m_loss(model, lq, hq, stage, n, z, perceptual, config.lambda_og, config.lambda_perc,
                                 previous=previous, psnr_balance=config.psnr_balance)
        if stage == "nonlinear" and config.two_step_weight > 0:
            l_two = two_step_loss(model, lq, hq, sampling_noises(lq, generator), perceptual, config.lambda_perc,
                                  config.psnr_balance)
            loss = loss + config.two_step_weight * l_two
            parts["two_step"] = l_two.item()
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()
    return loss.item(), parts


@torch.no_grad()
def recurrent_history(model: ConsistencyModel, clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The previous restored frame for the last frame of each clip (K, N, 3, H, W), as inference makes it:
    1-step restores of frames 0..K-2 in turn, each fed the one before, rounded to 8 bits (the stream
    state is the uint8 output). Most clips start their history at frame 0 (the longest history); the
    rest at a random frame, so a share of the batch trains the first frame of a stream (previous = mu)."""
    k, n = clips.shape[:2]
    start = torch.randint(0, k, (n,), generator=generator)
    start = torch.where(torch.rand(n, generator=generator) < 0.7, torch.zeros_like(start), start)
    noises = sampling_noises(clips[0], generator)[:1]
    history = clips[0]  # frame 0 is a first frame: its previous is itself
    for i in range(k - 1):
        restored = sample(model, model.schedule, clips[i], noises, previous=history)
        begun = (start <= i).to(clips.device).view(-1, 1, 1, 1)  # not begun: frame i+1 is a first frame
        history = torch.where(begun, restored.clamp(0, 1).mul(255).round().div(255), clips[i + 1])
    return history


def model_facts(model: ConsistencyModel, config: TrainConfig) -> dict:
    network = model.network
    return {
        "task": config.task,
        "architecture": {"name": "ConditionalNAFUNet", "size": config.size, "config": network.config.to_dict(),
                         "parameters": count_parameters(network), "macs_per_pixel": round(macs_per_pixel(network.cpu())),
                         "parametrisation": model.parametrisation},
        "schedule": model.schedule.facts(),
        "losses": ({"L1 LQ->HQ at t=T (CNN-baseline)": 1.0} if config.stages == ["baseline"] else
                   {"consistency": "L1 to stopgrad(f_phi) at t_n (phi- = stop-gradient of phi, no EMA)",
                    "origin_guided": "L1 to HQ", "lambda_og": config.lambda_og, "lambda_perc": config.lambda_perc,
                    "perceptual": ("VGG16 pool2+pool5 from " + Path(config.perceptual_weights).name) if config.perceptual_weights
                    else "substitute: L1 of orthonormal FFT amplitudes (no VGG16 weights passed)"}),
        "training": {k: v for k, v in asdict(config).items() if k not in ("task", "perceptual_weights")},
    }


def save_training_state(out: Path, model, optimiser, log: dict, card: dict, config: TrainConfig, generator=None,
                        pairs=None) -> None:
    """Resumable state (weights_only-loadable) plus the current weights and card, each written atomically.
    Drawn in the training process, the state keeps the torch and numpy generators' positions too, so a run
    stopped and resumed ends with the weights an uninterrupted run would have (on the same device)."""
    if generator is not None and not config.workers and hasattr(pairs, "rng"):
        log["generators"] = {"torch": generator.get_state(), "numpy": pairs.rng.bit_generator.state}
    else:  # worker processes hold their own generators: a resume reseeds from the iteration
        log.pop("generators", None)
    model.to("cpu")
    with atomic_path(state_path(out)) as tmp:
        torch.save({"network": model.network.state_dict(), "optimiser": optimiser.state_dict(), "log": log}, tmp)
    card["training"]["completed"] = {"stage_index": log["stage_index"], "iteration": log["iteration"],
                                     "seconds": round(log["seconds"], 1)}
    card["training"]["loss_curve"] = log["curve"]
    save_model(out, model, card)
    model.to(config.device)
