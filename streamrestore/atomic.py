"""Files that are never seen half-written: write a hidden temporary file beside the target, then rename
it over the target with os.replace (atomic within one file system, POSIX rename(2)); on an error the
temporary file is removed and the target is left as it was."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def temporary_path(dest: Path) -> Path:
    """A hidden file beside `dest` to write first and rename, with the same suffix (FFmpeg and OpenCV pick the
    format by it); the stem is cut so the name stays within the file system's limit when `dest`'s is near it."""
    tail = f".partial-{os.getpid()}{dest.suffix}"
    try:
        limit = os.pathconf(dest.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    room = max(1, limit - 1 - len(tail.encode()))
    stem = dest.stem.encode()[:room].decode("utf-8", "ignore")
    return dest.with_name(f".{stem}{tail}")


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """with atomic_path(dest) as tmp: write tmp -- renamed to `dest` when the block ends without an error."""
    dest = Path(dest)
    tmp = temporary_path(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(dest: str | Path, data: bytes | str) -> Path:
    """Write `data` (text as UTF-8) to `dest` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(dest)
