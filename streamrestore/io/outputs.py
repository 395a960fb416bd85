"""The one guard every file a command writes goes through, before any work starts (issue 14).

`check_writes(writes, reads, overwrite=...)` raises a one-line UserError (exit 2, nothing written)
naming the option and the file when a path to write

- is empty;
- is an input of the same run: the same resolved path, or the same file (st_dev, st_ino), so
  symlinks and hard links count; the images of an input folder are inputs too, and an output
  folder of images must not hold an input;
- is another output of the same run;
- exists, unless --overwrite (or `may_exist`: train --resume reuses its own files);
- is a folder where a file is written, or sits in a folder that is missing or not writable.

An rtsp:// OUTPUT is not a file: only the "another output" rule applies to it.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from streamrestore.errors import UserError

OVERWRITE_HINT = "pass --overwrite to replace it or choose another file"


@dataclass(frozen=True)
class Write:
    """A path the run writes and the option that names it (None: the option was not given)."""

    option: str
    path: str | None
    frames: bool = False  # run's OUTPUT: a video or image file, a folder of images (`dir`, `dir/*.jpg`), rtsp://
    may_exist: bool = False  # an existing file is reused on purpose (train --resume)
    segmented: bool = False  # written as NAME_00000.ext, NAME_00001.ext, ... (--segment-time)


@dataclass(frozen=True)
class Read:
    """A path the run reads, described as the message names it ("the INPUT", "--weights")."""

    what: str
    path: str | None


def weights_reads(weights: str | None) -> list[Read]:
    """A --weights checkpoint and the model card beside it (both are read)."""
    if not weights:
        return []
    card = str(Path(weights).with_suffix(".json"))
    return [Read("the --weights file", weights), Read("the --weights model card", card)]


def check_writes(writes: list[Write], reads: list[Read], *, overwrite: bool, hint: str = OVERWRITE_HINT) -> None:
    """UserError for the first write that would destroy data or cannot succeed (see the module docstring)."""
    from streamrestore.io import is_live

    inputs, input_folders = _inputs(reads)
    outputs: dict = {}  # identity key -> option that writes it
    for write in writes:
        if write.path is None:
            continue
        if write.path == "":
            raise UserError(f"{write.option} '': empty file name; give the file to write")
        if write.frames and is_live(write.path):
            _claim(outputs, write, write.path, [("url", write.path)])
            continue
        for path in _segments(write.path) if write.segmented else [write.path]:
            shown = f"{write.path} (segment {Path(path).name})" if write.segmented else path
            _check_path(write, path, shown, (inputs, input_folders, outputs), overwrite or write.may_exist, hint)


def _check_path(write: Write, path: str, shown: str, seen: tuple[dict, dict, dict], replace: bool, hint: str) -> None:
    """One file (or folder of images) to write; `seen`: the inputs, folders holding input images, outputs so far."""
    inputs, input_folders, outputs = seen
    named = Path(path)
    target = named.parent if write.frames and named.name.startswith("*.") else named
    keys = _keys(target)
    for key in keys:
        if key in inputs:
            raise UserError(f"{write.option} {shown}: is {inputs[key]}; choose another "
                            f"{'folder' if target.is_dir() else 'file'}")
    _claim(outputs, write, shown, keys)
    if target.is_dir():
        if not write.frames:
            raise UserError(f"{write.option} {shown}: is a folder; give a file name")
        for key in keys:
            if key in input_folders:
                raise UserError(f"{write.option} {shown}: holds {input_folders[key]}; choose another folder")
        if _listing(target) and not replace:
            raise UserError(f"{write.option} {shown}: folder exists and is not empty; {hint}")
        folder = target
    else:
        if (target.exists() or target.is_symlink()) and not replace:
            raise UserError(f"{write.option} {shown}: exists; {hint}")
        folder = target.parent
    if not folder.is_dir():
        raise UserError(f"{write.option} {shown}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{write.option} {shown}: folder {folder} is not writable; choose another folder")


def _claim(outputs: dict, write: Write, path: str, keys: list) -> None:
    """Record that `write` writes `keys`; UserError when another output already does."""
    for key in keys:
        if key in outputs and outputs[key] != write.option:
            raise UserError(f"{write.option} {path}: is also written by {outputs[key]}; give each output its own file")
    outputs.update(dict.fromkeys(keys, write.option))


def _inputs(reads: list[Read]) -> tuple[dict, dict]:
    """({identity key: description} of every input, {key: description} of the folders holding input images)."""
    from streamrestore.io import is_live
    from streamrestore.io.images import IMAGE_SUFFIXES

    inputs: dict = {}
    folders: dict = {}
    for read in reads:
        if not read.path or is_live(read.path):
            continue
        path = Path(read.path)
        inputs.update(dict.fromkeys(_keys(path), read.what))
        if path.is_dir():
            folders.update(dict.fromkeys(_keys(path), read.what))
            for image in _listing(path):
                if image.suffix.lower() in IMAGE_SUFFIXES:
                    inputs.update(dict.fromkeys(_keys(image), f"an image of {read.what}"))
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.exists():  # an image sink writes NAME.png beside it
            folders.update(dict.fromkeys(_keys(path.parent), read.what))
    return inputs, folders


def _listing(folder: Path) -> list[Path]:
    """The entries of `folder`; [] when it cannot be listed (reading or writing it fails later, in one line)."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _keys(path: Path) -> list:
    """The resolved path, and (st_dev, st_ino) when the file exists: two names of one file share one."""
    keys: list = [("path", os.path.realpath(path))]
    try:
        st = os.stat(path)
        keys.append(("file", st.st_dev, st.st_ino))
    except OSError:
        pass
    return keys


def _segments(path: str) -> list[str]:
    """The first segment and any existing ones (named as streamrestore.io.rtsp.SegmentedSink names them)."""
    p = Path(path)
    first = p.with_name(f"{p.stem}_{0:05d}{p.suffix}")
    pattern = os.path.join(glob.escape(str(p.parent)), f"{glob.escape(p.stem)}_{'[0-9]' * 5}{glob.escape(p.suffix)}")
    return [str(first), *sorted(s for s in glob.glob(pattern) if s != str(first))]
