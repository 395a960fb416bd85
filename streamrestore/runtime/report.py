"""Per-frame latency records and their summary (DESIGN.md section 3): JSON, CSV and a short table.

Each record holds the milliseconds a frame spent on the network (an RTSP feed: the sender's capture
instant to the frame decoded, where its RTCP sender reports give the sender's clock; 0 for files), in
decode, upload, restore, download, fusion (the temporal stage after the model, 0 without it) and
encode, and end to end (decoded -> encoded, a monotonic clock). Upload/restore/download are per batch, so
every frame of a batch carries its batch's figures. Percentiles skip the first `warmup` frames
when there are enough frames left to measure.

A live feed runs for months, so its report holds only the latest `max_records` per-frame records
(set by the pipeline for live sources); its summary then covers every frame all the same, the
percentiles read from log-spaced histograms (bins 1 % wide) and mean and max exact, so memory
stays flat however long it runs. A file's report keeps every record and exact percentiles.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field

import numpy as np

from streamrestore.atomic import atomic_path

STAGES = ("network", "decode", "upload", "restore", "download", "fusion", "encode", "end_to_end")
FIELDS = ("index", "pts", "time", "batch") + STAGES
LIVE_RECORDS = 3000  # per-frame records a live feed's report keeps (the latest; ~2 MB, minutes of video)
# Histogram bins for the summary of a long run: log-spaced over 1 us .. 1000 s, each about 1 % wide.
_EDGES = np.geomspace(1e-3, 1e6, 2085)


class _StageHistogram:
    """Count, sum, max and a log-binned histogram of one stage's milliseconds (fixed size)."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(_EDGES) + 1, np.int64)  # [0]: below 1 us (CPU "copies" of 0 ms)
        self.n, self.total, self.max = 0, 0.0, 0.0

    def add(self, value: float) -> None:
        self.counts[np.searchsorted(_EDGES, value, side="right")] += 1
        self.n, self.total, self.max = self.n + 1, self.total + value, max(self.max, value)

    def percentile(self, q: float) -> float:
        """The q-th percentile, the centre of its bin (0 for the bin below 1 us)."""
        index = int(np.searchsorted(np.cumsum(self.counts), q / 100 * self.n, side="left"))
        if index == 0:
            return 0.0
        upper = _EDGES[min(index, len(_EDGES) - 1)]
        return float(np.sqrt(_EDGES[index - 1] * upper))


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
    max_records: int | None = None  # keep only the latest this many records (live feeds); None: all
    frames: int = 0  # frames recorded, including those whose records were let go
    _histograms: dict | None = field(default=None, repr=False)  # stage -> _StageHistogram, after warm-up

    def add(self, frame) -> None:
        """Record one written `DecodedFrame` (its `timings` hold the stage milliseconds)."""
        time = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
        record = {"index": frame.index, "pts": frame.pts, "time": time, "batch": frame.timings.get("batch", 1)}
        record.update({stage: round(frame.timings.get(stage, 0.0), 3) for stage in STAGES})
        self.records.append(record)
        self.frames += 1
        if self.max_records is not None:
            if self._histograms is None:
                self._histograms = {stage: _StageHistogram() for stage in STAGES}
            if self.frames > self.warmup:
                for stage in STAGES:
                    self._histograms[stage].add(record[stage])
            if len(self.records) > self.max_records:
                del self.records[0]  # the oldest; a list (not a deque) so records slice as before

    def summary(self) -> dict:
        """frames, throughput FPS, drops and p50/p90/p99/max/mean milliseconds per stage."""
        frames = max(self.frames, len(self.records))
        if frames > len(self.records):  # records let go (a long live feed): the histograms hold them all
            measured_frames, stages = frames - self.warmup, self._histogram_stages()
        else:
            measured = self.records[self.warmup:] if len(self.records) > 2 * self.warmup else self.records
            measured_frames, stages = len(measured), self._exact_stages(measured)
        fps = frames / self.wall_seconds if self.wall_seconds > 0 else 0.0
        return {**self.facts, "frames": frames, "warmup_frames": frames - measured_frames,
                "frames_in_report": len(self.records),
                "skipped_frames": self.skipped, "dropped_frames": self.dropped, "interrupted": self.interrupted,
                "temporal_resets": self.resets,
                "wall_seconds": round(self.wall_seconds, 3), "throughput_fps": round(fps, 2), "stages_ms": stages}

    @staticmethod
    def _exact_stages(measured: list[dict]) -> dict:
        stages = {}
        for stage in STAGES:
            values = np.array([r[stage] for r in measured], dtype=np.float64)
            if values.size:
                p50, p90, p99 = np.percentile(values, [50, 90, 99])
                stages[stage] = {"p50": round(p50, 3), "p90": round(p90, 3), "p99": round(p99, 3),
                                 "max": round(values.max(), 3), "mean": round(values.mean(), 3)}
        return stages

    def _histogram_stages(self) -> dict:
        stages = {}
        for stage, h in self._histograms.items():
            if h.n:
                stages[stage] = {**{f"p{q}": round(h.percentile(q), 3) for q in (50, 90, 99)},
                                 "max": round(h.max, 3), "mean": round(h.total / h.n, 3)}
        return stages

    def table(self) -> str:
        """A short text table: one row per stage, then frames, FPS and drops."""
        summary = self.summary()
        lines = [f"{'stage (ms)':<12}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"]
        for stage, row in summary["stages_ms"].items():
            lines.append(f"{stage:<12}" + "".join(f"{row[k]:>9.2f}" for k in ("p50", "p90", "p99", "max")))
        lines.append(f"{summary['frames']} frames, {summary['throughput_fps']:.1f} FPS, "
                     f"{summary['skipped_frames']} skipped, {summary['dropped_frames']} dropped; "
                     f"{self.facts.get('backend', '?')} {self.facts.get('precision', '')} on {self.facts.get('device', '?')}, "
                     f"model {self.facts.get('model', '?')}")
        if self.resets is not None:
            mode = self.facts.get("temporal") or {}
            parts = [name for name, on in (("video model", mode.get("video_model")), ("fusion", mode.get("fusion"))) if on]
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.resets.items()))
            lines.append(f"temporal ({' + '.join(parts) or 'on'}): state reset {sum(self.resets.values())} times"
                         + (f" ({reasons})" if reasons else ""))
        return "\n".join(lines)

    def write_json(self, path: str) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"summary": self.summary(), "frames": self.records}, f, indent=1)

    def write_csv(self, path: str) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(self.records)
