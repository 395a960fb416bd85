"""`--backend auto` on the CPU: openvino or onnxruntime, whichever measured faster here (issue 16).

Measured once per (graph, precision, threads, runtime versions, processor) on one 480p frame — a
warm-up call (OpenVINO compiles for the shape), then the best of MEASURED_CALLS — and cached as a
small JSON beside the engine cache (`cpu-choice-<key>.json`), so later runs only read it.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time

import numpy as np

from streamrestore.atomic import atomic_write
from streamrestore.backends import engine_cache

log = logging.getLogger(__name__)
CONTENDERS = ("openvino", "onnxruntime")
FRAME = (1, 480, 854, 3)
MEASURED_CALLS = 3


def processor() -> str:
    """The CPU's model name and core count (what the measurement depends on besides the software)."""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{name or platform.processor() or platform.machine()} x{os.cpu_count()}"


def _versions() -> dict:
    found = {}
    for module in CONTENDERS:
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            found[module] = None
    return found


def measure(backend) -> float:
    """Best milliseconds of MEASURED_CALLS on one 480p frame, after a warm-up call."""
    frames = np.random.default_rng(0).integers(0, 256, FRAME, dtype=np.uint8)
    previous = frames if getattr(backend, "temporal", False) else None
    backend(frames, previous) if previous is not None else backend(frames)
    best = float("inf")
    for _ in range(MEASURED_CALLS):
        start = time.perf_counter()
        backend(frames, previous) if previous is not None else backend(frames)
        best = min(best, (time.perf_counter() - start) * 1e3)
    return best


def ranked(build, precision: str | None, threads: int | None) -> tuple[list[str], dict | None]:
    """(CONTENDERS fastest first, the measurement record or None when fewer than two can run here).

    build(name) -> a backend on the CPU (raises when it cannot be built)."""
    versions = _versions()
    if not all(versions.values()):
        return list(CONTENDERS), None
    built = {}
    for name in CONTENDERS:
        try:
            built[name] = build(name)
        except Exception:  # noqa: BLE001 - the static order then decides, and the build error shows there
            return list(CONTENDERS), None
    facts = {"graphs": sorted({os.path.basename(str(b.graph)) for b in built.values()}), "precision": precision,
             "threads": threads, "versions": versions, "processor": processor(), "frame": FRAME}
    path = engine_cache.cache_dir() / f"cpu-choice-{engine_cache.cache_key(facts)[:24]}.json"
    try:
        record = json.loads(path.read_text())
        if record.get("facts") != json.loads(json.dumps(facts)):
            raise ValueError("facts differ")
    except (OSError, ValueError):
        times = {name: round(measure(backend), 1) for name, backend in built.items()}
        record = {"facts": facts, "ms": times, "order": sorted(times, key=times.get), "measured": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record, indent=2) + "\n")
        log.info("auto on the CPU measured %s (ms per 480p frame); cached in %s", times, path)
    return list(record["order"]), record
