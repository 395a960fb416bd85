"""The checkpoints shipped in engines/: present for every task, documented, and restoring for real."""
import json

import numpy as np
import pytest

from streamrestore import Restorer
from streamrestore.checkpoint import card_path
from streamrestore.degradations import EVAL_SAMPLERS, TASKS
from streamrestore.io.sample import SampleClip
from streamrestore.metrics import psnr_y
from streamrestore.tasks import shipped_weights


@pytest.mark.parametrize("task", TASKS)
def test_every_task_ships_small_weights_with_a_model_card(task):
    path = shipped_weights(task)
    assert path.stat().st_size < 5_000_000
    card = json.loads(card_path(path).read_text())
    assert card["task"] == task and card["architecture"]["size"] == "small"
    assert card["training"]["loss_curve"] and card["data"]["held_out"]
    rows = card["eval"]["rows"]
    assert rows["IR-CM 1-step"]["psnr_y"] > rows["degraded input"]["psnr_y"]
    assert card["noise_policy"]["default"] in ("fixed", "fresh", "zero")
    assert shipped_weights(task, kind="cnn-baseline").is_file()


@pytest.mark.parametrize("task", TASKS)
def test_restorer_out_of_the_box_improves_a_degraded_frame(task):
    """Restorer(task=T) with no weights argument loads the shipped checkpoint and beats its input
    on a frame of the built-in sample scene (never seen in training)."""
    clean = SampleClip(task, frames=1, width=192, height=128)._clean(3)
    degraded = (EVAL_SAMPLERS[task](clean.astype(np.float32) / 255, np.random.default_rng(1)) * 255 + 0.5).astype(np.uint8)
    restored = Restorer(task=task, steps=1, device="cpu")(degraded)
    assert restored.shape == degraded.shape and restored.dtype == np.uint8
    assert psnr_y(restored, clean) > psnr_y(degraded, clean)
