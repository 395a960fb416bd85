"""`streamrestore run` as a user runs it: a real subprocess, real files, real signals."""
from __future__ import annotations

import csv
import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from media import make_clip, make_images, probe

ROOT = Path(__file__).resolve().parents[1]


def _entry() -> list[str]:
    """`python -m streamrestore.cli` once every subcommand module exists, else the run command alone."""
    commands = ("train", "evaluate", "export", "run")
    whole = all(importlib.util.find_spec(f"streamrestore.cli.{m}") for m in commands)
    return [sys.executable, "-m", "streamrestore.cli" if whole else "streamrestore.cli.run"] + (["run"] if whole else [])


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*_entry(), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_video_with_audio_and_reports(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=15, vfr=True)
    out = tmp_path / "out.mp4"
    proc = run(src, "--task", "passthrough", "-o", out, "--batch", "4", "--report", tmp_path / "r.json",
               "--csv", tmp_path / "f.csv")
    assert proc.returncode == 0, proc.stderr
    assert "FPS" in proc.stdout and "end_to_end" in proc.stdout
    a, b = probe(src), probe(out)
    assert b["pts"] == a["pts"] and b["audio_packets"] == a["audio_packets"] and b["rate"] == a["rate"]
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["frames"] == 15 and summary["backend"] == "passthrough" and summary["device"] == "cpu"
    for key in ("throughput_fps", "dropped_frames", "model", "stages_ms"):
        assert key in summary
    assert summary["reconnects"] == 0 and summary["error"] is None  # the facts a --streams feed reports too
    assert {"p50", "p90", "p99", "max"} <= set(summary["stages_ms"]["restore"])
    rows = list(csv.DictReader((tmp_path / "f.csv").open()))
    assert len(rows) == 15 and {"decode", "upload", "restore", "download", "encode", "end_to_end"} <= set(rows[0])


def test_streams_file_runs_each_feed_and_names_the_one_that_failed(tmp_path):
    make_clip(tmp_path / "a.mp4", frames=6, audio=False)
    (tmp_path / "bad.mp4").write_text("not a video\n" * 50)
    (tmp_path / "s.yaml").write_text(
        "streams:\n"
        f"  - {{name: good, input: '{tmp_path / 'a.mp4'}', output: '{tmp_path / 'a_out.mp4'}', report: '{tmp_path / 'a.json'}'}}\n"
        f"  - {{name: bad, input: '{tmp_path / 'bad.mp4'}', output: '{tmp_path / 'b_out.mp4'}', report: '{tmp_path / 'b.json'}'}}\n")
    proc = run("--streams", tmp_path / "s.yaml", "--task", "passthrough")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("streamrestore: error: [bad] "), proc.stderr
    assert "[good] " in proc.stdout and len(probe(tmp_path / "a_out.mp4")["pts"]) == 6
    good, bad = (json.loads((tmp_path / name).read_text())["summary"] for name in ("a.json", "b.json"))
    assert (good["stream"], good["frames"], good["reconnects"], good["error"]) == ("good", 6, 0, None)
    assert bad["frames"] == 0 and bad["error"] and not (tmp_path / "b_out.mp4").exists()


def test_existing_output_and_input_are_protected(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3, audio=False)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    _one_line_error(run(src, "--task", "passthrough", "-o", out), "--overwrite")
    assert out.read_bytes() == b"keep me"
    _one_line_error(run(src, "--task", "passthrough", "-o", src, "--overwrite"), "INPUT")
    assert run(src, "--task", "passthrough", "-o", out, "--overwrite", "--quiet").returncode == 0
    assert len(probe(out)["pts"]) == 3


@pytest.mark.parametrize("option, value, needle", [("--batch", "0", "--batch"), ("--crf", "99", "--crf"),
                                                    ("--codec", "nope264", "--codec"), ("--task", "no-such-task", "task")])
def test_bad_options_are_one_line(tmp_path, option, value, needle):
    src = make_clip(tmp_path / "in.mp4", frames=2, audio=False)
    args = ["--task", "passthrough", "-o", tmp_path / "out.mp4", option, value]
    _one_line_error(run(src, *args), needle)
    assert not (tmp_path / "out.mp4").exists()


def test_missing_and_non_video_inputs(tmp_path):
    _one_line_error(run(tmp_path / "missing.mp4", "--task", "passthrough", "-o", tmp_path / "o.mp4"), "missing.mp4")
    text = tmp_path / "notes.mkv"
    text.write_text("not a video at all\n" * 50)
    _one_line_error(run(text, "--task", "passthrough", "-o", tmp_path / "o.mp4"), "notes.mkv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mkv"]


def test_corrupt_file_skips_or_stops_cleanly(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=20, audio=False, codec="mpeg4")
    data = bytearray(src.read_bytes())
    for at in range(len(data) // 3, 2 * len(data) // 3, 97):  # damage the middle third
        data[at] ^= 0xFF
    src.write_bytes(bytes(data))
    out = tmp_path / "out.mkv"
    proc = run(src, "--task", "passthrough", "-o", out, timeout=30)
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert 0 < len(probe(out)["pts"]) <= 20
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_image_folder_and_single_image(tmp_path):
    make_images(tmp_path / "in", count=3, width=33, height=25, suffix=".jpg")
    assert run(tmp_path / "in", "--task", "passthrough", "-o", tmp_path / "out", "--quiet").returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img_000.png", "img_001.png", "img_002.png"]
    assert run(tmp_path / "in" / "img_001.jpg", "--task", "passthrough", "-o", tmp_path / "one.png").returncode == 0
    assert (tmp_path / "one.png").stat().st_size > 0


def test_sigint_leaves_a_playable_file(tmp_path):
    src = make_clip(tmp_path / "long.mp4", frames=1500, width=320, height=240, codec="mpeg4", audio=True)
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([*_entry(), str(src), "--task", "passthrough", "-o", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not any("partial" in p.name for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130 and "interrupted" in stderr, stderr
    facts = probe(out)
    assert 0 < len(facts["pts"]) < 1500 and f"first {len(facts['pts'])} frames" in stderr
    assert facts["audio"] == 1
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def _torch_backend_available() -> bool:
    return importlib.util.find_spec("streamrestore.backends.torch_backend") is not None


@pytest.mark.skipif(not _torch_backend_available(), reason="streamrestore.backends.torch_backend not written yet")
def test_a_real_model_runs_on_cpu(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3, width=33, height=25, codec="ffv1", audio=False)
    proc = run(src, "--task", "denoise", "--device", "cpu", "-o", tmp_path / "out.mkv", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(probe(tmp_path / "out.mkv")["pts"]) == 3


@pytest.mark.gpu
def test_cuda_path(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or not _torch_backend_available():
        pytest.skip("needs CUDA and the torch backend")
    src = make_clip(tmp_path / "in.mp4", frames=8, audio=True)
    proc = run(src, "--task", "denoise", "--device", "cuda", "--batch", "4", "-o", tmp_path / "out.mp4",
               "--report", tmp_path / "r.json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["device"] == "cuda" and summary["frames"] == 8


def test_builtin_sample_clip_runs_with_no_input_file(tmp_path, tiny_weights):
    """README's first command: `streamrestore run sample --task derain -o restored.mp4`."""
    import av

    from streamrestore.cli import main

    out = tmp_path / "restored.mp4"
    assert main(["run", "sample", "--task", "derain", "-o", str(out), "--weights", str(tiny_weights),
                 "--backend", "torch", "--quiet"]) == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (640, 360)
        assert sum(1 for _ in container.decode(stream)) == 48
