"""Geometric self-ensemble: each frame restored in its eight flips and 90-degree rotations (the dihedral
group of the square; four, kept upright, for derain), each result turned back and the views averaged
(the "enhanced prediction" of Timofte, Rothe and Van Gool, "Seven ways to improve example-based single
image super resolution", CVPR 2016; the self-ensemble of the "+" models of Lim et al., EDSR, CVPR
Workshops 2017). The network was trained on patches flipped and rotated the same way
(streamrestore.training.data), so each view is as likely as the original, and their errors partly cancel.
Eight (four) times the work for a better picture: `--self-ensemble` of `run` and `eval`."""
from __future__ import annotations

import numpy as np

from streamrestore.backends.base import Done, check_batch

VIEWS = tuple((turns, flip) for flip in (False, True) for turns in range(4))  # (90-degree turns, mirrored first)
UPRIGHT_VIEWS = tuple(view for view in VIEWS if view[0] % 2 == 0)  # vertical lines stay vertical


def views_for(task: str) -> tuple:
    """The views a task's model restores as well as the frame itself: all eight, or the four upright ones for
    the tasks of degradations.UPRIGHT_TASKS (derain: on its side, rain turns horizontal, which no training
    draw holds; the eight views lost 2.8 dB on the held-out recipe, README "The self-ensemble")."""
    from streamrestore.tasks.degradations import UPRIGHT_TASKS

    return UPRIGHT_VIEWS if task in UPRIGHT_TASKS else VIEWS


def views_label(task: str) -> str:
    """How tables name a task's ensemble: "x8", or "x4" for the upright tasks."""
    return f"x{len(views_for(task))}"


def to_view(frames: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """(N, H, W, C) frames mirrored left-right if `flip`, then turned `turns` x 90 degrees anticlockwise."""
    mirrored = frames[:, :, ::-1] if flip else frames
    return np.ascontiguousarray(np.rot90(mirrored, turns, axes=(1, 2)))


def from_view(frames: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The inverse of to_view."""
    turned = np.rot90(frames, -turns, axes=(1, 2))
    return turned[:, :, ::-1] if flip else turned


class SelfEnsemble:
    """A backend whose every call runs the wrapped backend once per view of `views` (VIEWS, or a task's
    views_for) and returns the mean of the results, rounded to uint8. A temporal model's previous frames are
    turned with their frames. Its `last_timings` are the calls' sums; it always takes R'G'B' (not I420
    planes); every other attribute (name, device, temporal, ...) is the wrapped backend's."""

    asynchronous = False
    takes_i420 = False

    def __init__(self, inner, views: tuple = VIEWS):
        self.inner, self.views = inner, views
        self.last_timings = {"upload": 0.0, "restore": 0.0, "download": 0.0}

    def __getattr__(self, name: str):
        if name.startswith("__") or "inner" not in self.__dict__:  # copy and pickle look before __init__ ran
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def model(self) -> str:
        """What runs, as the run summary and report say it."""
        turns = "flips and rotations" if len(self.views) == len(VIEWS) else "flips and half turns, kept upright"
        return f"{self.inner.model}; x{len(self.views)} self-ensemble ({turns})"

    def __call__(self, frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        frames = check_batch(frames, previous)
        total = np.zeros(frames.shape, np.float32)
        timings = dict.fromkeys(self.last_timings, 0.0)
        for turns, flip in self.views:
            views = [to_view(frames, turns, flip)]
            if previous is not None:
                views.append(to_view(previous, turns, flip))
            total += from_view(self.inner(*views), turns, flip)
            for stage, ms in self.inner.last_timings.items():
                timings[stage] = timings.get(stage, 0.0) + ms
        self.last_timings = timings
        return np.clip(np.rint(total / len(self.views)), 0, 255).astype(np.uint8)

    def submit(self, frames: np.ndarray, previous: np.ndarray | None = None) -> Done:
        out = self(frames, previous)
        return Done(out, dict(self.last_timings))
