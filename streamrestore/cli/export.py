"""`streamrestore export --task TASK -o PATH`: write the restorer as an ONNX graph or a TensorRT plan.

The graph takes uint8 frames (N, H, W, 3) and the noise of Algorithm 3 (M, N, 3, Hp, Wp) and returns
uint8 frames; t is baked in (see streamrestore/backends/export.py). --height/--width fix the sizes (fastest
engine), --dynamic (the default) leaves them free. --noise fixed|zero bakes the noise in (fixed sizes).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from streamrestore.cli.options import choice, positive_int, sampling_steps
from streamrestore.errors import UserError
from streamrestore.io.outputs import Write, check_writes, weights_reads
from streamrestore.tasks import check_task, default_weights

FORMATS = ("onnx", "tensorrt")
NOISE_CHOICES = ("input", "fixed", "zero")
MIN_SIZE, MAX_SIZE = 16, 8192
# The TensorRT profile of a --dynamic plan: a real minimum, 720p as the shape to tune for, 4K at most.
DYNAMIC_PROFILE = ((1, 64, 64), (1, 720, 1280), (1, 2160, 3840))


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="export the model as an ONNX graph or a TensorRT plan", description=__doc__)
    p.add_argument("--task", required=True, help="derain, denoise, deblur or lowlight")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the .onnx (or .plan) file to write")
    p.add_argument("--steps", type=sampling_steps("--steps"), default=1, help="sampling steps in the graph (default 1)")
    p.add_argument("--format", type=choice("--format", FORMATS), default="onnx", help="onnx (default) or tensorrt")
    p.add_argument("--fp16", action="store_true", help="network body in FP16 (the OECF stays FP32); --precision fp16")
    p.add_argument("--precision", type=choice("--precision", ("fp32", "fp16", "int8")),
                   help="fp32 (default), fp16 (as --fp16) or int8: the convolutions quantised (QDQ, for openvino and "
                        "onnxruntime on the CPU), calibrated on --task's degradation of the training photographs")
    p.add_argument("--calibration-data", metavar="FOLDER",
                   help="int8: clean photographs to calibrate on (default: $STREAMRESTORE_CALIBRATION_DATA, else the "
                        "checkout's ../shared/data/clean); every 6th by name is held out, as in train")
    p.add_argument("--height", type=positive_int("--height", MIN_SIZE), help="fixed frame height")
    p.add_argument("--width", type=positive_int("--width", MIN_SIZE), help="fixed frame width")
    p.add_argument("--dynamic", action="store_true", help="free height and width (the default without --height)")
    p.add_argument("--noise", type=choice("--noise", NOISE_CHOICES), default="input",
                   help="input (default): noise is a graph input; fixed or zero: baked in (needs --height/--width)")
    p.add_argument("--weights", help="checkpoint file instead of the task's shipped one")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--temporal", action="store_true",
                   help="the task's video model: the graph also takes `previous`, each frame's previous restored "
                        "frame (the stream state; feed the frame itself at a stream's start)")
    p.set_defaults(handler=main)


def frame_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """(H, W) for fixed sizes, None for dynamic; UserError for a combination that is not allowed."""
    given = (args.height is not None, args.width is not None)
    if given[0] != given[1]:
        raise UserError("--height and --width go together; give both, or --dynamic")
    if args.dynamic and given[0]:
        raise UserError("--dynamic cannot be combined with --height/--width; pick one")
    if not given[0]:
        if args.noise != "input":
            raise UserError(f"--noise {args.noise} bakes the noise in and needs --height and --width")
        return None
    for option, value in (("--height", args.height), ("--width", args.width)):
        if value > MAX_SIZE:
            raise UserError(f"{option} {value}: too large; use {MIN_SIZE} to {MAX_SIZE}")
    return args.height, args.width


def baked_noise(kind: str, steps: int, size: tuple[int, int], multiple: int):
    """(M, 1, 3, Hp, Wp) torch tensor: the same noise the backends draw for a stream (NoisePolicy, seed 0)."""
    if kind == "input":
        return None
    import torch

    from streamrestore.model.frames import noise_shape
    from streamrestore.model.sampler import NoisePolicy

    like = torch.empty(noise_shape(steps, 1, *size, multiple)[1:])
    return torch.stack(NoisePolicy(kind, 0).draw(steps, like))


def main(args: argparse.Namespace) -> int:
    from streamrestore.backends.export import OPSET, export_onnx
    from streamrestore.model.checkpoint import load_for_sampling

    if check_task(args.task) == "passthrough":
        raise UserError("--task passthrough is the identity; there is no model to export")
    size = frame_size(args)
    if args.precision == "int8" and (args.format != "onnx" or args.fp16):
        raise UserError("--precision int8 writes an ONNX graph for openvino and onnxruntime on the CPU; "
                        "drop --format tensorrt and --fp16")
    args.fp16 = args.fp16 or args.precision == "fp16"
    trt = None
    if args.format == "tensorrt":
        from streamrestore.backends.tensorrt_backend import import_tensorrt

        trt = import_tensorrt("--format tensorrt")  # before any work: a missing runtime is one line
    weights = Path(args.weights or default_weights(args.task, "cuda" if trt else "cpu", args.temporal))
    output = Path(args.output)
    onnx_path = output.with_suffix(".onnx") if trt else output
    writes = [Write("-o", args.output)] if not trt else [Write("-o", str(plan_path(output))),
                                                         Write("-o (its ONNX graph)", str(onnx_path))]
    check_writes(writes, weights_reads(str(weights)), overwrite=args.overwrite)
    model = load_for_sampling(weights, args.steps)  # the card's second sampling time, as the backends run it
    noise = baked_noise(args.noise, args.steps, size, model.network.pad_multiple) if size else None
    if args.precision == "int8":
        _export_int8(model, onnx_path, args, size, noise)
    else:
        export_onnx(model, onnx_path, args.steps, args.fp16, size, noise)
    shapes = f"{size[0]}x{size[1]}" if size else "dynamic HxW"
    shapes += ", temporal: input `previous`" if model.is_temporal else ""
    precision = "fp16 body" if args.fp16 else "int8 convolutions (QDQ)" if args.precision == "int8" else "fp32"
    print(f"wrote {onnx_path} (ONNX opset {OPSET}, {precision}, {args.steps}-step, {shapes}, noise {args.noise}; "
          "checked and simplified)")
    if trt:
        _build_plan(trt, model, onnx_path, output, args, size)
    return 0


def _export_int8(model, output: Path, args: argparse.Namespace, size, noise) -> None:
    """The fp32 graph quantised (streamrestore.backends.quantize); calibrated with the noise as an input, then
    sizes fixed and the noise baked in as asked, as for the fp32 export."""
    import tempfile

    import onnx

    from streamrestore.atomic import atomic_path
    from streamrestore.backends.export import export_onnx, fix_sizes
    from streamrestore.backends.quantize import calibration_files, calibration_folder, calibration_inputs, quantize_graph

    files = calibration_files(calibration_folder(args.calibration_data))
    with tempfile.TemporaryDirectory(prefix="streamrestore-int8-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, source, args.steps)
        inputs = calibration_inputs(args.task, files, args.steps, model.network.pad_multiple, model.is_temporal)
        quantize_graph(source, target, inputs)
        proto = onnx.load(str(target))
        if size is not None:
            fix_sizes(proto, size, model.network.pad_multiple, noise)
        onnx.checker.check_model(proto, full_check=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as written:  # never a half-written graph under the final name
        onnx.save(proto, str(written))


def plan_path(output: Path) -> Path:
    """The TensorRT plan written for -o: OUTPUT itself, or NAME.plan for -o NAME.onnx."""
    return output.with_suffix(".plan") if output.suffix == ".onnx" else output


def _build_plan(trt, model, onnx_path: Path, output: Path, args: argparse.Namespace, size) -> None:
    from streamrestore.backends.engine_cache import cache_dir
    from streamrestore.backends.tensorrt_backend import build_plan, shape_profile

    multiple = model.network.pad_multiple
    if size:
        profile = shape_profile(args.steps, (1, *size), multiple, temporal=model.is_temporal)
    else:
        low, opt, high = DYNAMIC_PROFILE
        profile = shape_profile(args.steps, opt, multiple, low, high, temporal=model.is_temporal)
    if args.noise != "input":
        profile.pop("noise")
    output = plan_path(output)
    cache_dir().mkdir(parents=True, exist_ok=True)
    build_plan(trt, onnx_path, output, profile, args.fp16, cache_dir() / f"tensorrt-{trt.__version__}-export.timing")
    print(f"wrote {output} (TensorRT {trt.__version__} plan, profile {profile['frames']})")
