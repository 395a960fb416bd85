"""Tasks are data: a name -> its shipped checkpoint files. Degradations live in degradations.py."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from streamrestore.choices import TASKS
from streamrestore.errors import UserError

RUN_TASKS = TASKS + ("passthrough",)  # passthrough: the identity model, to measure the pipeline alone


def check_task(task: str, option: str = "--task") -> str:
    if task not in RUN_TASKS:
        raise UserError(f"{option} {task!r}: unknown task; use one of {', '.join(RUN_TASKS)}")
    return task


def shipped_weights(task: str, size: str = "small", kind: str = "", temporal: bool = False) -> Path:
    """The checkpoint shipped in engines/ (installed as the package streamrestore.weights);
    temporal: the recurrent video model of that size (`{task}-{size}-temporal`)."""
    check_task(task)
    name = f"{task}-{kind or size}{'-temporal' if temporal else ''}.safetensors"
    path = Path(str(resources.files("streamrestore.weights").joinpath(name)))
    if not path.is_file():
        raise UserError(f"no shipped weights {name} for --task {task}; train them with `streamrestore train "
                        f"--task {task} ...` and pass --weights PATH")
    return path


# Where the `base` size is the default on CUDA: what it was measured to restore better than `small` (README,
# "The model"). Low light's `small` model of 2026-12-01 restores the real clips better than its `base`
# (25.73 against 24.85 dB with the fusion stage, benchmarks/temporal.py), so its CUDA streams keep `small`.
BASE_ON_CUDA = {"denoise": ("images", "video"), "lowlight": ("images",)}


def default_weights(task: str, device: str, temporal: bool = False) -> Path:
    """`base` on CUDA where shipped and BASE_ON_CUDA names it for images (or, with `temporal`, for video),
    otherwise `small`; with `temporal`, the video model of a size before its one-frame model, so a task
    without shipped video weights runs one frame at a time."""
    use = "video" if temporal else "images"
    sizes = ("base", "small") if device == "cuda" and use in BASE_ON_CUDA.get(task, ()) else ("small",)
    for size in sizes:
        for video in (True, False) if temporal else (False,):
            try:
                return shipped_weights(task, size, temporal=video)
            except UserError:
                pass
    return shipped_weights(task, "small")
