"""`streamrestore train`: two-stage IR-CM consistency training (or the CNN-baseline control)."""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

from streamrestore.choices import HOLDOUT_EVERY, SIZE_NAMES, TASKS
from streamrestore.cli.options import choice, fraction, positive_float, positive_int
from streamrestore.errors import UserError
from streamrestore.io.outputs import OVERWRITE_HINT, Read, Write, check_writes
from streamrestore.training.config import STAGE_CHOICES, TrainConfig


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="train an IR-CM checkpoint for a task",
                              description="Train IR-CM with synthetic degradations of clean photographs (--data) "
                                          "or on a paired lq/ + gt/ dataset (--paired).")
    p.add_argument("--task", required=True, type=choice("--task", TASKS))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", metavar="FOLDER",
                        help="folders of clean RGB photographs (degraded on the fly, seeded); each holds out its own "
                             "every --holdout-every-th image by name")
    source.add_argument("--paired", help="folder with lq/ and gt/ subfolders of matching file names")
    p.add_argument("--out", required=True, help="weights to write (.safetensors); the model card goes beside it (.json)")
    p.add_argument("--size", default=TrainConfig.size, type=choice("--size", SIZE_NAMES))
    p.add_argument("--stage", default="both", type=choice("--stage", tuple(STAGE_CHOICES)),
                   help="linear fitting, nonlinear fitting, both in turn, or the plain-L1 CNN-baseline")
    p.add_argument("--iters", default=TrainConfig.iters, type=positive_int("--iters"), help="iterations per stage")
    p.add_argument("--batch", default=TrainConfig.batch, type=positive_int("--batch"))
    p.add_argument("--patch", default=TrainConfig.patch, type=positive_int("--patch", minimum=32, multiple=16))
    p.add_argument("--lr", default=TrainConfig.lr, type=positive_float("--lr"))
    p.add_argument("--sampling-time-fraction", default=TrainConfig.sampling_time_fraction,
                   type=fraction("--sampling-time-fraction"),
                   help="share of training pairs placed at the times sampling evaluates (T, T/2, T/4)")
    p.add_argument("--two-step-weight", default=TrainConfig.two_step_weight,
                   type=positive_float("--two-step-weight", zero_ok=True),
                   help="in nonlinear fitting, also train on the 2-step sampler's own output with this weight "
                        "(not in the paper; 0 keeps the paper's loss)")
    p.add_argument("--clip-frames", default=TrainConfig.clip_frames, type=positive_int("--clip-frames", minimum=0),
                   help="train the temporal (recurrent) model on pseudo-clips of this many frames made from "
                        "--data (camera paths and moving objects); with --init a one-frame checkpoint, its "
                        "weights start the temporal model. 0: the one-frame model")
    p.add_argument("--origin-weight", default=TrainConfig.lambda_og, type=positive_float("--origin-weight"),
                   help="lambda_OG of IR-CM's loss L_CT + lambda_OG L_OG (eq. 14): the weight of the L1 to the clean "
                        "image beside the consistency term (0.8 in the paper); a larger one holds the 1-step output "
                        "to the target")
    p.add_argument("--sde-lambda", default=TrainConfig.sde_lambda, type=positive_float("--sde-lambda"), metavar="LEVELS",
                   help="stationary noise std of the mean-reverting SDE in 8-bit levels (IR-SDE's lambda, 10 there): "
                        "x_T = LQ + this noise is what the network learns from at t = T; a smaller one keeps more of "
                        "the LQ's detail (deblur); stored with the weights")
    p.add_argument("--clear-share", default=TrainConfig.clear_share, type=fraction("--clear-share"),
                   help="share of the synthetic training draws (patches, or whole clips) left undegraded, so the "
                        "model learns to leave a clean frame as it is (default: 0.15 for derain, 0 for the others)")
    p.add_argument("--detail-share", default=TrainConfig.detail_share, type=fraction("--detail-share"),
                   help="share of the synthetic training crops that are the most detailed (mean absolute Laplacian) "
                        "of 4 random crops, so fine texture such as fur, moss and foliage, which a small network "
                        "takes for rain or noise, is seen more often (0, the default: every crop at random)")
    p.add_argument("--read-noise-only", action="store_true",
                   help="denoise: train on Gaussian read noise alone (sigma 2-55 levels), without the shot noise, "
                        "chroma blotches and JPEG of the sensor family (default: the whole family)")
    p.add_argument("--psnr-balance", default=TrainConfig.psnr_balance, metavar="LEVELS",
                   type=positive_float("--psnr-balance", zero_ok=True),
                   help="weigh each image's L1 to the clean image by the inverse of its own error plus LEVELS (8-bit), "
                        "as mean PSNR weighs images, so mild degradations count as much as heavy ones "
                        "(0, the default: IR-CM's plain mean L1)")
    p.add_argument("--seed", default=TrainConfig.seed, type=int)
    p.add_argument("--workers", default=TrainConfig.workers, type=positive_int("--workers", minimum=0),
                   help="processes that draw training batches ahead, so a GPU does not wait on the degradations "
                        "(0, the default: drawn in the training process; the draws depend on the seed and this count)")
    p.add_argument("--time-limit", type=positive_float("--time-limit"), metavar="SECONDS",
                   help="stop after this many seconds of training in this run (reading the photographs comes "
                        "before), at the end of an iteration, with the training state saved; the same command with "
                        "--resume continues (for a lent GPU's time)")
    p.add_argument("--holdout-every", default=HOLDOUT_EVERY, type=positive_int("--holdout-every", minimum=0),
                   help="hold out every N-th image of --data (sorted by name) for eval; 0 holds none out")
    p.add_argument("--device", default=TrainConfig.device, type=choice("--device", ("cpu", "cuda")))
    p.add_argument("--init", help="start from these weights (e.g. stage 2 from a stage-1 checkpoint)")
    p.add_argument("--perceptual-weights", help="VGG16 weights file (torchvision key names) for the paper's perceptual "
                                                "term; without it an FFT-amplitude L1 substitute is used")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint state beside --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out, .json and .train.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=main)


def check_outputs(args, out: Path) -> None:
    """--out, its model card and its training state go through the write guard (streamrestore.io.outputs);
    --resume reuses them when there is a training state to continue."""
    from streamrestore.model.checkpoint import card_path
    from streamrestore.training.loop import state_path

    resumable = state_path(out).is_file()
    hint = ("pass --resume to continue that training, --overwrite to start afresh, or choose another --out"
            if resumable else OVERWRITE_HINT)
    reuse = args.resume and resumable
    writes = [Write("--out", str(out), may_exist=reuse),
              Write("--out (its model card)", str(card_path(out)), may_exist=reuse),
              Write("--out (its training state)", str(state_path(out)), may_exist=reuse)]
    reads = [Read("the --init weights", args.init), Read("the --perceptual-weights file", args.perceptual_weights),
             *(Read("the --data folder", folder) for folder in args.data or ()), Read("the --paired folder", args.paired)]
    check_writes(writes, reads, overwrite=args.overwrite, hint=hint)


def check_patch(patch: int, pairs, folder: str, paired: bool) -> None:
    """UserError when --patch is bigger than the training images, with the largest patch that fits. Photographs
    smaller than the patch are scaled up (one larger image is enough); the crops of every pair must be the patch."""
    sizes = [image.shape[:2] for image in pairs.images] if not paired else [a.shape[:2] for a, _ in pairs.pairs]
    side = (max if not paired else min)(min(size) for size in sizes)
    if patch <= side:
        return
    h, w = next(size for size in sizes if min(size) == side)
    which = f"the smallest pair in {folder} (it is" if paired else f"every training image in {folder} (the largest is"
    raise UserError(f"--patch {patch}: bigger than {which} {w}x{h}); use --patch {max(32, side // 16 * 16)} or less")


def main(args) -> int:
    import torch

    from streamrestore.io.images import paired_files, split_folders
    from streamrestore.training.data import PairedPatches, SyntheticClips, SyntheticPairs
    from streamrestore.training.loop import train

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: weights are written as safetensors; name the file *.safetensors")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu")
    if args.perceptual_weights and not Path(args.perceptual_weights).is_file():
        raise UserError(f"--perceptual-weights {args.perceptual_weights}: no such file")
    if args.init and not Path(args.init).is_file():
        raise UserError(f"--init {args.init}: no such file")
    check_outputs(args, out)
    if args.read_noise_only and args.task != "denoise":
        raise UserError(f"--read-noise-only shapes denoise's noise draws; drop it for --task {args.task}")
    if args.data:
        files, held = split_folders(args.data, args.holdout_every)
        if args.clip_frames:
            pairs = SyntheticClips(files, args.task, args.patch, args.clip_frames, args.seed,
                                   clear_share=args.clear_share, detail_share=args.detail_share,
                                   read_noise_only=args.read_noise_only)
        else:
            pairs = SyntheticPairs(files, args.task, args.patch, args.seed, clear_share=args.clear_share,
                                   detail_share=args.detail_share, read_noise_only=args.read_noise_only)
        data = {"kind": "synthetic degradations of clean photographs", "folder": ", ".join(args.data),
                "images": [f.name for f in files], "held_out": [f.name for f in held],
                "degradation": ("streamrestore.tasks.degradations.random_read_noise (--read-noise-only)"
                                if args.read_noise_only else
                                f"streamrestore.tasks.degradations.TRAIN_SAMPLERS[{args.task!r}]")}
        if args.clip_frames:
            clip_sampler = ("clip_read_noise (--read-noise-only)" if args.read_noise_only
                            else f"CLIP_SAMPLERS[{args.task!r}]")
            data.update(kind=f"pseudo-clips of {args.clip_frames} frames from clean photographs (streamrestore.training.data."
                             "SyntheticClips: camera paths, moving pasted objects)",
                        degradation=f"streamrestore.tasks.degradations.{clip_sampler} (parameters fixed per clip, "
                                    "noise fresh per frame)")
    elif args.clip_frames:
        raise UserError("--clip-frames needs --data (pseudo-clips are made from clean photographs)")
    elif args.clear_share is not None:
        raise UserError("--clear-share needs --data (a paired folder's lq/ images are what they are)")
    elif args.detail_share:
        raise UserError("--detail-share needs --data (a paired folder's crops are drawn at random)")
    elif args.read_noise_only:
        raise UserError("--read-noise-only needs --data (a paired folder's noise is what it is)")
    else:
        pair_list = paired_files(args.paired)
        pairs = PairedPatches(pair_list, args.patch, args.seed)
        data = {"kind": "paired lq/gt", "folder": str(args.paired), "pairs": len(pair_list)}
    check_patch(args.patch, pairs, ", ".join(args.data) if args.data else args.paired, paired=not args.data)
    config = TrainConfig(task=args.task, size=args.size, stages=STAGE_CHOICES[args.stage], iters=args.iters,
                         batch=args.batch, patch=args.patch, lr=args.lr, seed=args.seed, device=args.device,
                         sampling_time_fraction=args.sampling_time_fraction, two_step_weight=args.two_step_weight,
                         perceptual_weights=args.perceptual_weights, clip_frames=args.clip_frames,
                         sde_lambda=args.sde_lambda, lambda_og=args.origin_weight, psnr_balance=args.psnr_balance,
                         clear_share=pairs.clear_share if args.data else None, detail_share=args.detail_share,
                         read_noise_only=args.read_noise_only, workers=args.workers)
    card = {"date": datetime.date.today().isoformat(), "data": data,
            "kind": "cnn-baseline" if args.stage == "baseline" else "ir-cm"}
    card = train(config, pairs, out, resume=args.resume, card=card, progress=not args.quiet and sys.stderr.isatty(),
                 init_weights=args.init, time_limit=args.time_limit)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    done = card["training"]["completed"]
    if done["stage_index"] < len(config.stages):
        print(f"stopped by --time-limit {args.time_limit:g} at iteration {done['iteration']} of {config.iters} of "
              f"stage {config.stages[done['stage_index']]} ({done['seconds']:.0f} s trained in all); the same "
              f"command with --resume continues")
    return 0
