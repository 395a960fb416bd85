"""Training on a lent GPU machine (issue 15): the training photographs packed to travel, and time-boxed runs.

    python benchmarks/gpu_train.py pack [--data ../shared/data/clean ../shared/data/more] [--to .carry/photos]
    python benchmarks/gpu_train.py train --photos .carry/photos --results DIR [--budget-s 480] -- TRAIN OPTIONS

pack   (here) every training photograph of --data, split as `streamrestore train` splits it (each folder holds
       out its own every --holdout-every-th image by name; those stay behind), as the pixels training reads
       (io.images.read_rgb8): a lossless WebP named after the original ("ocv_aero1.png.webp") where that is
       smaller, else a copy of the file. Sorted by name, the packed files keep the originals' order, so the seeded
       draws are the same. Also manifest.json: each packed file's original, the held-out names, the bytes. Why:
       a device call carries the working tree and at most 64 MiB in all, the tracked tree is about 45 MB (the
       shipped weights), and the training photographs of ../shared/data are 23.1 MB as they are, 18.5 packed.
train  (there) `streamrestore train TRAIN OPTIONS` on the packed folders with --holdout-every 0 (only training
       photographs travel), --device cuda (--dry-run: cpu) and --time-limit --budget-s; then the model card's
       data section names the original folders and files and the held-out ones again, and the weights and the
       card are copied to --results (the device call's $OUT). --out should be an ignored path such as runs/:
       it stays on the warm machine, so a next call with --resume continues the run.

    echo /.carry/ >> .git/info/exclude; python benchmarks/gpu_train.py pack          # once, here
    # the device call (carry [".carry"]; the project installed there with pip --no-deps -e .):
    python benchmarks/gpu_train.py train --photos .carry/photos --results $OUT --budget-s 480 -- \\
        --task derain --size base --stage baseline --iters 40000 --batch 16 --patch 128 --lr 5e-4 \\
        --workers 12 --out runs/gpu/derain-base-cnn.safetensors --quiet
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2

from streamrestore.choices import HOLDOUT_EVERY
from streamrestore.cli.options import positive_float
from streamrestore.errors import UserError
from streamrestore.io.images import list_images, read_rgb8, split_folders

MANIFEST = "manifest.json"
PACKED_SUFFIX = ".webp"


def webp_lossless(rgb) -> bytes:
    """A lossless WebP of an (H, W, 3) uint8 RGB image (OpenCV: quality above 100 selects lossless)."""
    ok, data = cv2.imencode(PACKED_SUFFIX, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101])
    if not ok:
        raise UserError("this OpenCV build cannot write WebP; pack needs it")
    return data.tobytes()


def pack(folders: list[str], to: Path, every: int = HOLDOUT_EVERY) -> dict:
    """Write the training photographs of `folders` to `to`/<k>-<folder name>/ and the manifest; returns it."""
    if to.exists() and any(to.iterdir()) and not (to / MANIFEST).is_file():
        raise UserError(f"--to {to}: exists and is not a pack (no {MANIFEST}); choose an empty or new folder")
    if to.exists():
        shutil.rmtree(to)
    manifest = {"folders": [], "images": [], "held_out": [], "bytes": {"original": 0, "packed": 0},
                "holdout_every": every}
    for k, folder in enumerate(folders):
        train, held = split_folders([folder], every)
        target = to / f"{k}-{Path(folder).resolve().name}"
        target.mkdir(parents=True)
        manifest["folders"].append({"packed": target.name, "original": folder})
        manifest["held_out"] += [f"{folder}/{p.name}" for p in held]
        for original in train:
            rgb = read_rgb8(original)
            data = webp_lossless(rgb)
            if len(data) < original.stat().st_size:
                packed = target / (original.name + PACKED_SUFFIX)
                packed.write_bytes(data)
            else:
                packed = target / original.name
                shutil.copyfile(original, packed)
            if not (read_rgb8(packed) == rgb).all():  # the pixels training reads, exactly
                raise UserError(f"{original}: packing changed its pixels; report this with the file")
            manifest["images"].append({"packed": f"{target.name}/{packed.name}", "original": f"{folder}/{original.name}"})
            manifest["bytes"]["original"] += original.stat().st_size
            manifest["bytes"]["packed"] += packed.stat().st_size
        original_of = original_names(manifest)
        if [original_of[p.name] for p in list_images(target)] != [p.name for p in train]:
            raise UserError(f"{folder}: its packed names sort in another order than the originals; rename them")
    (to / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def packed_folders(photos: Path) -> tuple[list[str], dict]:
    manifest_file = photos / MANIFEST
    if not manifest_file.is_file():
        raise UserError(f"--photos {photos}: no {MANIFEST}; make it with `python benchmarks/gpu_train.py pack`")
    manifest = json.loads(manifest_file.read_text())
    return [str(photos / f["packed"]) for f in manifest["folders"]], manifest


def original_names(manifest: dict) -> dict[str, str]:
    """Packed file name -> its original's file name."""
    return {Path(i["packed"]).name: Path(i["original"]).name for i in manifest["images"]}


def restore_provenance(card_file: Path, manifest: dict) -> None:
    """Name the original folders, files and held-out files in a card written from packed folders."""
    card = json.loads(card_file.read_text())
    originals = original_names(manifest)
    data = card["data"]
    data["images"] = [originals.get(name, name) for name in data.get("images", [])]
    data["held_out"] = [Path(p).name for p in manifest["held_out"]]
    data["folder"] = ", ".join(f["original"] for f in manifest["folders"])
    data["packed"] = ("trained on the pixel-identical pack of benchmarks/gpu_train.py (lossless WebP), every "
                      f"{manifest['holdout_every']}th image of each folder held out")
    card_file.write_text(json.dumps(card, indent=1) + "\n")


def train(photos: Path, results: Path, budget_s: float, options: list[str], dry_run: bool = False) -> Path:
    """`streamrestore train OPTIONS` on the pack within `budget_s`; the weights and card copied to `results`."""
    from streamrestore.cli import build_parser
    from streamrestore.cli import main as cli_main

    folders, manifest = packed_folders(photos)
    if any(o.split("=")[0] in ("--data", "--paired", "--device", "--time-limit", "--holdout-every") for o in options):
        raise UserError("TRAIN OPTIONS: leave --data, --paired, --device, --time-limit and --holdout-every to "
                        "this script (the pack, cuda, --budget-s)")
    command = ["train", *options, "--data", *folders, "--holdout-every", "0",
               "--device", "cpu" if dry_run else "cuda", "--time-limit", f"{budget_s:g}"]
    out = Path(build_parser("train").parse_args(command).out)  # train's own parser: its one-line errors
    out.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has no runs/ yet
    code = cli_main(command)
    if code:
        raise SystemExit(code)
    card_file = out.with_suffix(".json")
    restore_provenance(card_file, manifest)
    results.mkdir(parents=True, exist_ok=True)
    for f in (out, card_file):
        shutil.copyfile(f, results / f.name)
    return results / out.name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("pack", help="the training photographs, pixel-identical and small enough to travel")
    p.add_argument("--data", nargs="+", default=["../shared/data/clean", "../shared/data/more"])
    p.add_argument("--to", type=Path, default=Path(".carry/photos"))
    p.add_argument("--holdout-every", type=int, default=HOLDOUT_EVERY)
    t = verbs.add_parser("train", help="streamrestore train on the pack, on CUDA, within --budget-s")
    t.add_argument("--photos", type=Path, default=Path(".carry/photos"))
    t.add_argument("--results", type=Path, required=True, help="where the weights and card are copied ($OUT)")
    t.add_argument("--budget-s", type=positive_float("--budget-s"), default=480.0,
                   help="seconds of training in this call (train --time-limit)")
    t.add_argument("--dry-run", action="store_true", help="the same on the CPU, to check a call before it is made")
    args = parser.parse_args(argv)
    try:
        if args.verb == "pack":
            manifest = pack(args.data, args.to, args.holdout_every)
            size = manifest["bytes"]
            print(f"packed {len(manifest['images'])} training photographs into {args.to} "
                  f"({size['packed'] / 1e6:.1f} MB; {size['original'] / 1e6:.1f} MB as they are; "
                  f"{len(manifest['held_out'])} held out, left behind)")
        else:
            if not options:
                parser.error("give the train options after --, e.g. -- --task derain --size base --out runs/gpu/x.safetensors")
            print(f"wrote {train(args.photos, args.results, args.budget_s, options, args.dry_run)}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
