"""`run --realtime`: a recording read at its own frame rate (streamrestore.io.realtime), as FFmpeg's -re."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from media import make_clip, probe
from streamrestore.errors import UserError
from streamrestore.io import open_source

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "streamrestore.cli", "run"]


def test_frames_come_at_their_presentation_times_and_are_the_files_frames(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=15, rate=25, audio=False, vfr=True)  # gaps of 20/40/80 ms
    plain = list(open_source(str(clip)))
    source = open_source(str(clip), realtime=True)
    paced = list(source)
    source.close()
    assert [f.pts for f in paced] == [f.pts for f in plain] and len(paced) == 15
    assert all(np.array_equal(a.image, b.image) for a, b in zip(paced, plain))
    due = np.array([float((f.pts - paced[0].pts) * f.time_base) for f in paced])
    given = np.array([f.captured_at - paced[0].captured_at for f in paced])
    assert due[-1] > 0.5  # the vfr gaps add up to 0.6 s or so
    # never early; late by a scheduling hiccup at most (the schedule does not drift: each frame's time is
    # counted from the first frame's, not from the one before)
    assert np.all(given >= due - 1e-3), given - due
    assert np.mean(given - due) < 0.05 and np.max(given - due) < 0.5, given - due


def test_close_from_another_thread_ends_a_wait_at_once(tmp_path):
    clip = make_clip(tmp_path / "slow.mp4", frames=3, rate=1, audio=False)  # a frame a second
    source = open_source(str(clip), realtime=True)
    frames = iter(source)
    next(frames)
    closer = threading.Timer(0.2, source.close)
    closer.start()
    started = time.monotonic()
    rest = list(frames)  # would wait a second for the next frame
    waited = time.monotonic() - started
    closer.join()
    assert rest == [] and waited < 0.9, waited


def test_images_have_no_frame_rate_to_keep(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="--realtime: .*imgs holds images"):
        open_source(str(folder), realtime=True)
    proc = subprocess.run([*CLI, str(folder), "-o", str(tmp_path / "out"), "--task", "passthrough", "--realtime"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--realtime" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_run_realtime_writes_the_same_file_and_reports_the_clips_duration(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", width=96, height=64, frames=26, rate=25, audio=False)
    for name, extra in (("plain", []), ("paced", ["--realtime"])):
        proc = subprocess.run([*CLI, str(clip), "-o", str(tmp_path / f"{name}.mp4"), "--task", "passthrough",
                               "--report", str(tmp_path / f"{name}.json"), "--quiet", *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    plain, paced = probe(tmp_path / "plain.mp4"), probe(tmp_path / "paced.mp4")
    assert paced["pts"] == plain["pts"] and len(paced["pts"]) == 26
    assert all(np.array_equal(a, b) for fa, fb in zip(paced["planes"], plain["planes"]) for a, b in zip(fa, fb))
    summary = json.loads((tmp_path / "paced.json").read_text())["summary"]
    assert summary["frames"] == 26 and summary["dropped_frames"] == summary["skipped_frames"] == 0
    assert summary["wall_seconds"] >= 25 / 25 - 0.01  # the last frame is due 1 s after the first
