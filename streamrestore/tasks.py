"""Tasks are data: a name -> its shipped checkpoint files. Degradations live in degradations.py."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from streamrestore.degradations import TASKS
from streamrestore.errors import UserError

RUN_TASKS = TASKS + ("passthrough",)
SIZES = ("small", "base")  # the network sizes a task may ship (network.SIZES)  # passthrough: the identity model, to measure the pipeline alone


def check_task(task: str, option: str = "--task") -> str:
    if task not in RUN_TASKS:
        raise UserError(f"{option} {task!r}: unknown task; use one of {', '.join(RUN_TASKS)}")
    return task


def shipped_weights(task: str, size: str = "small", kind: str = "") -> Path:
    """The checkpoint shipped in engines/ (installed as the package streamrestore.weights)."""
    check_task(task)
    name = f"{task}-{kind or size}.safetensors"
    path = Path(str(resources.files("streamrestore.weights").joinpath(name)))
    if not path.is_file():
        raise UserError(f"no shipped weights {name} for --task {task}; train them with `streamrestore train "
                        f"--task {task} ...` and pass --weights PATH")
    return path


def default_weights(task: str, device: str) -> Path:
    """`base` on CUDA where it was shipped, otherwise `small`."""
    if device == "cuda":
        try:
            return shipped_weights(task, "base")
        except UserError:
            pass
    return shipped_weights(task, "small")


def chosen_weights(task: str, weights: str | None, size: str | None) -> str | None:
    """--weights FILE, or the shipped checkpoint of --size, or None (the backend picks: default_weights)."""
    if weights and size:
        raise UserError(f"--weights {weights} and --size {size} both choose a checkpoint; give one of them")
    return str(shipped_weights(task, size)) if size else weights


def baseline_weights(task: str, size: str = "small") -> Path:
    """The shipped CNN-baseline trained at the same size as the IR-CM checkpoint."""
    return shipped_weights(task, kind="cnn-baseline" if size == "small" else f"{size}-cnn-baseline")
