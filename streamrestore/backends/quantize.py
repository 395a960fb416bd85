"""INT8 graphs: post-training static quantisation of the network body (issue 16).

The exported graph (streamrestore.backends.export) is quantised by ONNX Runtime's static quantiser into a
QDQ graph: only the convolutions — every one of them inside the network body — get int8 weights
(per output channel) and uint8 activations, ranges at the 99.99th percentile; the consistency-
function arithmetic (OECF), the re-noising of Algorithm 3, the normalisation and the final rounding
keep their float32 nodes, and so do the network's first and last convolutions (`intro`, `ending`:
the image in and the residual out). OpenVINO runs the QDQ pairs as int8 convolutions (VNNI), ONNX
Runtime as QLinearConv. Measured on the held-out denoise images (OpenVINO, Y-PSNR against fp32's
31.86 dB): every convolution at min-max ranges 31.59 (-0.27 dB); first and last kept float 31.69;
and percentile ranges 31.72 (-0.14 dB).

Calibration: frames degraded by the task's training recipe from the training photographs — the
images `streamrestore train` trains on, never those it holds out (every HOLDOUT_EVERY-th by name,
streamrestore.io.images.split_holdout, which `streamrestore eval --split heldout` scores).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from streamrestore.backends import engine_cache
from streamrestore.choices import HOLDOUT_EVERY
from streamrestore.errors import UserError

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 32  # at most, from the training split
CALIBRATION_SIDE = 192  # each calibration frame: the central square of a photograph, resized to this (px)
KEPT_FLOAT = ("/model/network/intro/", "/model/network/ending/")  # convolutions left in float32
PERCENTILE = 99.99
CALIBRATION_SEED = 0
CALIBRATION_ENV = "STREAMRESTORE_CALIBRATION_DATA"
# the shared data folder beside this checkout (DESIGN.md section 2): ../shared/data/clean
CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clean"


def calibration_folder(given: str | None = None) -> Path:
    """--calibration-data, else $STREAMRESTORE_CALIBRATION_DATA, else the checkout's shared data folder."""
    folder = given or os.environ.get(CALIBRATION_ENV) or (str(CHECKOUT_DATA) if CHECKOUT_DATA.is_dir() else None)
    if folder is None:
        raise UserError("--precision int8 calibrates on clean training photographs: pass --calibration-data FOLDER "
                        f"(or set {CALIBRATION_ENV}); every {HOLDOUT_EVERY}th image by name is held out, as in train")
    return Path(folder)


def calibration_files(folder: Path) -> list[Path]:
    """The training split of `folder` (held-out images excluded), at most CALIBRATION_IMAGES of them."""
    from streamrestore.io.images import list_images, split_holdout

    training = split_holdout(list_images(folder, "--calibration-data"), HOLDOUT_EVERY)[0]
    return training[:CALIBRATION_IMAGES]


def calibration_set(task: str, files: list[Path]) -> dict:
    """What the quantised graph was calibrated on, for the engine cache key: names and content hashes."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + engine_cache.file_sha256(path).encode())
    return {"task": task, "images": len(files), "files_sha256": digest.hexdigest(), "side": CALIBRATION_SIDE,
            "seed": CALIBRATION_SEED, "holdout_every": HOLDOUT_EVERY, "recipe": "train sampler"}


def calibration_inputs(task: str, files: list[Path], steps: int, multiple: int, temporal: bool) -> list[dict]:
    """Graph inputs for each calibration image: frames (1, S, S, 3) uint8 (S = CALIBRATION_SIDE: the
    percentile calibrator needs one shape) degraded by the task's training sampler (seeded per image),
    the fixed noise, and for a temporal graph the clean image as `previous` (what the previous restored
    frame approximates)."""
    from streamrestore.backends.onnxruntime_backend import NoiseFeed
    from streamrestore.io.images import read_rgb8
    from streamrestore.model.sampler import NoisePolicy
    from streamrestore.tasks.degradations import TRAIN_SAMPLERS

    noise = NoiseFeed(NoisePolicy("fixed", CALIBRATION_SEED), steps, multiple)
    items = []
    for i, path in enumerate(files):
        clean = central_square(read_rgb8(path), CALIBRATION_SIDE)
        rng = np.random.default_rng(CALIBRATION_SEED + i)
        degraded = TRAIN_SAMPLERS[task](clean.astype(np.float32) / 255, rng)
        frames = (np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)[None]
        item = {"frames": frames, "noise": noise(frames.shape)}
        if temporal:
            item["previous"] = clean[None].copy()
        items.append(item)
    return items


def central_square(image: np.ndarray, side: int) -> np.ndarray:
    """The largest central square of (H, W, 3) uint8, resized to (side, side, 3)."""
    import cv2

    h, w = image.shape[:2]
    n = min(h, w)
    square = image[(h - n) // 2: (h - n) // 2 + n, (w - n) // 2: (w - n) // 2 + n]
    return cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA if n > side else cv2.INTER_LINEAR)


def quantize_graph(source: Path, target: Path, inputs: list[dict]) -> None:
    """QDQ int8 copy of the ONNX graph `source`: the body's convolutions but KEPT_FLOAT (per-channel
    int8 weights, uint8 activations, PERCENTILE ranges over `inputs`); every other node stays float32."""
    import onnx

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(inputs)

        def get_next(self):
            return next(self._items, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's "consider pre-processing" advice, on the root logger
    kept = [node.name for node in onnx.load(str(source)).graph.node if node.name.startswith(KEPT_FLOAT)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its histogram settings
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
                            nodes_to_exclude=kept, extra_options={"CalibPercentile": PERCENTILE})
    finally:
        root.setLevel(level)


def cached_int8_onnx(model, weights: Path, steps: int, task: str, calibration: str | None = None) -> Path:
    """The int8 QDQ graph of `model`, from the engine cache or quantised now; the key holds the float
    graph's facts, the precision, the quantiser's version and the calibration set."""
    import onnx
    import onnxruntime

    from streamrestore.backends.onnxruntime_backend import cached_onnx

    if task not in calibration_tasks():
        raise UserError(f"--precision int8: task {task!r} has no degradation to calibrate on; use fp32")
    files = calibration_files(calibration_folder(calibration))  # a bad folder is refused before any export
    source = cached_onnx(model, weights, steps, False)
    facts = {"artifact": "onnx-int8", "graph": engine_cache.file_sha256(source), "precision": "int8",
             "quantizer": f"onnxruntime {onnxruntime.__version__} static QDQ conv per-channel percentile {PERCENTILE}",
             "kept_float": KEPT_FLOAT,
             "calibration": calibration_set(task, files)}

    def build(tmp: Path) -> None:
        inputs = calibration_inputs(task, files, steps, model.network.pad_multiple, model.is_temporal)
        quantize_graph(source, tmp, inputs)

    path, _, built = engine_cache.cached_artifact("graph-int8", ".onnx", facts, build=build,
                                                  load=lambda p: onnx.checker.check_model(str(p)))
    if built:
        log.info("quantised %s (int8, calibrated on %d training images)", path, len(files))
    return path


def calibration_tasks() -> tuple[str, ...]:
    from streamrestore.tasks.degradations import TASKS

    return TASKS
