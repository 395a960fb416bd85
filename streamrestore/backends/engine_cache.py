"""On-disk cache of exported graphs and built engines (DESIGN.md sections 4 and 7).

An entry is `<kind>-<key>.<ext>` plus a `.json` sidecar holding the facts, the key and the
artifact's sha256. key = sha256 of the JSON of the facts: weights hash, steps, shape profile,
precision, runtime name + version, device / GPU name + compute capability. Files are written
under a temporary name and renamed (atomic); on load the sidecar, the hash and the loader must
all agree, otherwise the entry is rebuilt with one log line, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, TypeVar

from streamrestore.atomic import atomic_path, atomic_write

log = logging.getLogger(__name__)
Loaded = TypeVar("Loaded")


def cache_dir() -> Path:
    """$STREAMRESTORE_CACHE, or ~/.cache/streamrestore/engines."""
    root = os.environ.get("STREAMRESTORE_CACHE") or Path.home() / ".cache" / "streamrestore" / "engines"
    return Path(root)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _check_entry(path: Path, key: str) -> None:
    """Raise ValueError unless the sidecar names this key and the file hashes to what it recorded."""
    record = json.loads(_sidecar(path).read_text())
    if record.get("key") != key:
        raise ValueError("its key does not match")
    if record.get("sha256") != file_sha256(path):
        raise ValueError("its contents changed since it was written")


def cached_artifact(kind: str, ext: str, facts: dict, build: Callable[[Path], None],
                    load: Callable[[Path], Loaded], root: Path | None = None) -> tuple[Path, Loaded, bool]:
    """(path, load(path), built): reuse a verified entry, else build(tmp path) and rename it into place.

    A corrupt or stale entry is removed and rebuilt; an error from a fresh build or load propagates.
    """
    key = cache_key(facts)
    directory = root or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind}-{key[:24]}{ext}"
    if path.exists():
        try:
            _check_entry(path, key)
            return path, load(path), False
        except Exception as exc:  # any failure to read the entry means: do not trust it
            log.warning("cached %s %s is stale or corrupt (%s); rebuilding it", kind, path, exc)
            path.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        build(tmp)
    loaded = load(path)
    record = {"key": key, "sha256": file_sha256(path), "facts": facts}
    atomic_write(_sidecar(path), json.dumps(record, indent=2) + "\n")
    return path, loaded, True
