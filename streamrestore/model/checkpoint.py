"""Weights as safetensors (no code is ever unpickled) and the JSON model card beside them."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from streamrestore.atomic import atomic_path, atomic_write
from streamrestore.errors import UserError
from streamrestore.model.consistency import ConsistencyModel
from streamrestore.model.network import ConditionalNAFUNet, NetworkConfig
from streamrestore.model.sde import MeanRevertingSchedule


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def write_card(weights: str | Path, card: dict) -> None:
    """The model card beside `weights`, written atomically."""
    atomic_write(card_path(weights), json.dumps(card, indent=2) + "\n")


def save_model(path: str | Path, model: ConsistencyModel, card: dict | None = None, half: bool = False) -> None:
    """Write the network weights (FP16 with `half`) and the facts needed to rebuild the model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.network.state_dict().items()}
    s = model.schedule
    meta = {"network": json.dumps(model.network.config.to_dict()), "parametrisation": model.parametrisation,
            "schedule": json.dumps({"T": s.T, "lam": s.lam, "eps": s.eps})}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    if card is not None:
        write_card(path, card)


def load_model(path: str | Path, device: str = "cpu") -> ConsistencyModel:
    """Rebuild a ConsistencyModel from safetensors; FP16 weights are loaded as float32."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file; train one with `streamrestore train` or pick a shipped task")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device=device)
        schedule = MeanRevertingSchedule.create(**json.loads(meta["schedule"]))
        network = ConditionalNAFUNet(NetworkConfig.from_dict(json.loads(meta["network"])))
        network.load_state_dict({k: v.float() for k, v in state.items()})
    except (SafetensorError, KeyError, json.JSONDecodeError, RuntimeError, OSError) as exc:
        raise UserError(f"{path}: is not a streamrestore checkpoint ({type(exc).__name__}); retrain or re-export it") from None
    return ConsistencyModel(network, schedule, meta.get("parametrisation", "origin")).to(device).eval()


def read_card(path: str | Path) -> dict:
    p = card_path(path)
    return json.loads(p.read_text()) if p.is_file() else {}


def recommended_noise(card: dict) -> str:
    """The noise policy a model card recommends (measured by benchmarks/flicker.py); else "zero" for a
    CNN-baseline (trained on x_T = LQ, i.e. no noise) and "fixed" for IR-CM."""
    return card.get("noise_policy", {}).get("default", "zero" if card.get("kind") == "cnn-baseline" else "fixed")


def load_for_sampling(path: str | Path, steps: int, second_time: int | None = None,
                      card: dict | None = None) -> ConsistencyModel:
    """load_model on the CPU, its `second_time` set to `second_time` (--second-time), else the model card's
    `sampling.second_time` (chosen by benchmarks/step_times.py on training photographs), else None (T/2).
    UserError unless it lies in 1..T-1 and each of `steps` steps visits a new time
    (streamrestore.model.sampler.sampling_times). card: the model card, when the caller has read it."""
    from streamrestore.model.sampler import sampling_times, useful_steps

    path = Path(path)
    model = load_model(path, "cpu")
    T = model.schedule.T
    if second_time is None:
        second_time = (read_card(path) if card is None else card).get("sampling", {}).get("second_time")
    try:
        useful = useful_steps(T, second_time)
    except ValueError:
        raise UserError(f"--second-time {second_time}: must be between 1 and {T - 1} "
                        f"(T = {T} for {path.name})") from None
    if steps > useful:
        times = ", ".join(map(str, sampling_times(T, useful, second_time)))
        raise UserError(f"--steps {steps}: {path.name} samples at t = {times}; at most {useful} steps are useful "
                        "(more would repeat t = 1)")
    model.second_time = second_time
    return model
