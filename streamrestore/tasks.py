"""Tasks are data: a name -> its shipped checkpoint files. Degradations live in degradations.py."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from streamrestore.degradations import TASKS
from streamrestore.errors import UserError

RUN_TASKS = TASKS + ("passthrough",)  # passthrough: the identity model, to measure the pipeline alone


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
