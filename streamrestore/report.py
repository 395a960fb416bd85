"""Per-frame latency records and their summary (DESIGN.md section 3): JSON, CSV and a short table.

Each record holds the milliseconds a frame spent in decode, upload, restore, download, fusion (the
temporal stage after the model, 0 without it) and encode, and end to end (decoded -> encoded, a
monotonic clock). Upload/restore/download are per batch, so
every frame of a batch carries its batch's figures. Percentiles skip the first `warmup` frames
when there are enough frames left to measure.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field

import numpy as np

STAGES = ("decode", "upload", "restore", "download", "fusion", "encode", "end_to_end")
FIELDS = ("index", "pts", "time", "batch") + STAGES


@dataclass
class LatencyReport:
    """Per-frame records plus run facts (backend, device, model, ...) and counters."""

    facts: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    warmup: int = 5
    wall_seconds: float = 0.0
    skipped: int = 0
    dropped: int = 0
    interrupted: bool = False
    resets: dict | None = None  # temporal model: times its state was reset, by reason (None: one-frame model)

    def add(self, frame) -> None:
        """Record one written `DecodedFrame` (its `timings` hold the stage milliseconds)."""
        time = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
        record = {"index": frame.index, "pts": frame.pts, "time": time, "batch": frame.timings.get("batch", 1)}
        record.update({stage: round(frame.timings.get(stage, 0.0), 3) for stage in STAGES})
        self.records.append(record)

    def summary(self) -> dict:
        """frames, throughput FPS, drops and p50/p90/p99/max/mean milliseconds per stage."""
        measured = self.records[self.warmup:] if len(self.records) > 2 * self.warmup else self.records
        stages = {}
        for stage in STAGES:
            values = np.array([r[stage] for r in measured], dtype=np.float64)
            if values.size:
                p50, p90, p99 = np.percentile(values, [50, 90, 99])
                stages[stage] = {"p50": round(p50, 3), "p90": round(p90, 3), "p99": round(p99, 3),
                                 "max": round(values.max(), 3), "mean": round(values.mean(), 3)}
        fps = len(self.records) / self.wall_seconds if self.wall_seconds > 0 else 0.0
        return {**self.facts, "frames": len(self.records), "warmup_frames": len(self.records) - len(measured),
                "skipped_frames": self.skipped, "dropped_frames": self.dropped, "interrupted": self.interrupted,
                "temporal_resets": self.resets,
                "wall_seconds": round(self.wall_seconds, 3), "throughput_fps": round(fps, 2), "stages_ms": stages}

    def table(self) -> str:
        """A short text table: one row per stage, then frames, FPS and drops."""
        summary = self.summary()
        lines = [f"{'stage (ms)':<12}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"]
        for stage, row in summary["stages_ms"].items():
            lines.append(f"{stage:<12}" + "".join(f"{row[k]:>9.2f}" for k in ("p50", "p90", "p99", "max")))
        lines.append(f"{summary['frames']} frames, {summary['throughput_fps']:.1f} FPS, "
                     f"{summary['skipped_frames']} skipped, {summary['dropped_frames']} dropped; "
                     f"{self.facts.get('backend', '?')} on {self.facts.get('device', '?')}, "
                     f"model {self.facts.get('model', '?')}")
        if self.resets is not None:
            mode = self.facts.get("temporal") or {}
            parts = [name for name, on in (("video model", mode.get("video_model")), ("fusion", mode.get("fusion"))) if on]
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.resets.items()))
            lines.append(f"temporal ({' + '.join(parts) or 'on'}): state reset {sum(self.resets.values())} times"
                         + (f" ({reasons})" if reasons else ""))
        return "\n".join(lines)

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"summary": self.summary(), "frames": self.records}, f, indent=1)

    def write_csv(self, path: str) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(self.records)
