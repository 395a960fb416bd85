"""The write guard (streamrestore.io.outputs), as a user meets it: real files, the real CLI in a subprocess.

Every path a command writes is checked before any work starts: never an input (symlinks and hard
links count), never another output, never an existing file without --overwrite, a folder that
exists. A refusal is one line naming the option and the file, exit code 2, and every file in the
folder byte-identical afterwards, with nothing new written (issue 14).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from media import make_clip, make_images, probe

CLI = [sys.executable, "-m", "streamrestore.cli"]


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256 (or "folder")} of everything under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


def cli(folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], cwd=folder, capture_output=True, text=True, timeout=120)


def refused(folder: Path, args: list, *needles: str) -> str:
    """Run in `folder`; assert exit 2, one line holding every needle, no traceback, nothing changed."""
    before = snapshot(folder)
    proc = cli(folder, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(lines) == 1 and all(n in lines[0] for n in needles), proc.stderr
    assert snapshot(folder) == before
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    """in.mp4, a symlink and a hard link to it, an empty sub-folder `reports/`, a file `old.mp4`."""
    make_clip(tmp_path / "in.mp4", frames=3, audio=False)
    (tmp_path / "link.mp4").symlink_to("in.mp4")
    os.link(tmp_path / "in.mp4", tmp_path / "hard.mp4")
    (tmp_path / "reports").mkdir()
    (tmp_path / "old.mp4").write_bytes(b"an earlier result")
    return tmp_path


RUN = ["run", "in.mp4", "--task", "passthrough", "--quiet"]


@pytest.mark.parametrize("extra, needles", [
    (["-o", "out.mp4", "--report", "in.mp4"], ["--report in.mp4", "INPUT"]),
    (["-o", "out.mp4", "--csv", "in.mp4", "--overwrite"], ["--csv in.mp4", "INPUT"]),
    (["-o", "out.mp4", "--report", "out.mp4"], ["--report out.mp4", "also written by -o"]),
    (["-o", "out.mp4", "--report", "r.json", "--csv", "r.json"], ["--csv r.json", "--report"]),
    (["-o", ""], ["-o ''", "empty"]),
    (["-o", "out.mp4", "--report", ""], ["--report ''", "empty"]),
    (["-o", "out.mp4", "--report", "nodir/r.json"], ["--report nodir/r.json", "does not exist"]),
    (["-o", "out.mp4", "--csv", "reports"], ["--csv reports", "is a folder"]),
    (["-o", "link.mp4", "--overwrite"], ["-o link.mp4", "INPUT"]),
    (["-o", "hard.mp4", "--overwrite"], ["-o hard.mp4", "INPUT"]),
    (["-o", "out.mp4", "--report", "link.mp4", "--overwrite"], ["--report link.mp4", "INPUT"]),
    (["-o", "out.mp4", "--csv", "hard.mp4", "--overwrite"], ["--csv hard.mp4", "INPUT"]),
    (["-o", "old.mp4"], ["-o old.mp4", "exists", "--overwrite"]),
    (["-o", "out.mp4", "--report", "old.mp4"], ["--report old.mp4", "exists", "--overwrite"]),
])
def test_run_refuses_before_writing(folder, extra, needles):
    refused(folder, [*RUN, *extra], *needles)


def test_run_refuses_a_segment_that_is_the_input(folder):
    os.link(folder / "in.mp4", folder / "x_00000.mp4")
    refused(folder, [*RUN, "-o", "x.mp4", "--segment-time", "1", "--overwrite"], "x.mp4 (segment x_00000.mp4)", "INPUT")


def test_image_outputs_never_replace_input_images(tmp_path):
    make_images(tmp_path / "photos", count=2)
    first = sorted((tmp_path / "photos").iterdir())[0].name
    base = ["run", "--task", "passthrough", "--quiet", "--overwrite"]
    refused(tmp_path, [*base, "photos", "-o", "photos/"], "-o photos/", "INPUT")
    refused(tmp_path, [*base, f"photos/{first}", "-o", "photos"], "-o photos", "holds the INPUT")
    refused(tmp_path, [*base, "photos", "-o", f"photos/{first}"], f"-o photos/{first}", "an image of the INPUT")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_run_refuses_a_folder_it_cannot_write(folder):
    (folder / "locked").mkdir(mode=0o555)
    refused(folder, [*RUN, "-o", "out.mp4", "--report", "locked/r.json"], "--report locked/r.json", "not writable")


def test_guard_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    """The same rule in-process, where the test runs as root: os.access is what the guard asks."""
    from streamrestore.errors import UserError
    from streamrestore.io import outputs

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="--report .*r.json: folder .* is not writable"):
        outputs.check_writes([outputs.Write("--report", str(tmp_path / "r.json"))], [], overwrite=False)


def test_overwrite_replaces_outputs_but_never_the_input(folder):
    (folder / "r.json").write_text("old report")
    kept = snapshot(folder)["in.mp4"]
    proc = cli(folder, *RUN, "-o", "old.mp4", "--report", "r.json", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert len(probe(folder / "old.mp4")["pts"]) == 3
    assert json.loads((folder / "r.json").read_text())["summary"]["frames"] == 3
    assert snapshot(folder)["in.mp4"] == kept


def _streams(folder: Path, *feeds: dict) -> str:
    lines = ["streams:"]
    for feed in feeds:
        lines += [f"  - {k}: {v}" if i == 0 else f"    {k}: {v}" for i, (k, v) in enumerate(feed.items())]
    (folder / "s.yaml").write_text("\n".join(lines) + "\n")
    return "s.yaml"


@pytest.mark.parametrize("feeds, needles", [
    ([{"name": "a", "input": "in.mp4", "output": "in.mp4"}], ["[a] output in.mp4", "the input of [a]"]),
    ([{"name": "a", "input": "in.mp4", "output": "link.mp4"}], ["[a] output link.mp4", "input"]),
    ([{"name": "a", "input": "in.mp4", "output": "same.mp4"}, {"name": "b", "input": "hard.mp4", "output": "same.mp4"}],
     ["[b] output same.mp4", "also written by", "[a] output"]),
    ([{"name": "a", "input": "in.mp4", "output": "o1.mp4", "report": "o2.mp4"},
      {"name": "b", "input": "in.mp4", "output": "o2.mp4"}], ["[b] output o2.mp4", "[a] report"]),
    ([{"name": "a", "input": "in.mp4", "output": "o1.mp4"}, {"name": "b", "input": "old.mp4", "output": "hard.mp4"}],
     ["[b] output hard.mp4", "the input of [a]"]),
    ([{"name": "a", "input": "in.mp4", "output": "o1.mp4", "report": "s.yaml"}],
     ["[a] report s.yaml", "--streams file"]),
    ([{"name": "a", "input": "in.mp4", "output": "old.mp4"}], ["[a] output old.mp4", "exists", "--overwrite"]),
    ([{"name": "a", "input": "in.mp4", "output": "''"}], ["[a] output ''", "empty"]),
])
def test_streams_refused_before_any_feed_starts(folder, feeds, needles):
    refused(folder, ["run", "--streams", _streams(folder, *feeds), "--task", "passthrough", "--quiet"], *needles)


@pytest.fixture
def weights(folder):
    """A file named like a checkpoint and its card: the guard refuses before anything loads them."""
    (folder / "w.safetensors").write_bytes(b"weights, never to be replaced")
    (folder / "w.json").write_text("{}\n")
    return "w.safetensors"


@pytest.mark.parametrize("extra, needles", [
    (["-o", "w.safetensors", "--overwrite"], ["-o w.safetensors", "--weights file"]),
    (["-o", "w.json", "--overwrite"], ["-o w.json", "--weights model card"]),
    (["-o", "old.mp4"], ["-o old.mp4", "exists", "--overwrite"]),
    (["-o", ""], ["-o ''", "empty"]),
    (["-o", "nodir/x.onnx"], ["-o nodir/x.onnx", "does not exist"]),
])
def test_export_refuses_before_loading(folder, weights, extra, needles):
    refused(folder, ["export", "--task", "denoise", "--weights", weights, *extra], *needles)


def test_export_overwrite_gets_past_the_guard(folder, weights):
    """With --overwrite an existing -o is allowed: the run goes on to read the (fake) weights."""
    proc = cli(folder, "export", "--task", "denoise", "--weights", weights, "-o", "old.mp4", "--overwrite")
    assert proc.returncode == 2 and "is not a streamrestore checkpoint" in proc.stderr, proc.stderr
    assert (folder / "old.mp4").read_bytes() == b"an earlier result"


@pytest.fixture
def photos(folder):
    make_images(folder / "photos", count=2, width=64, height=64)
    (folder / "empty").mkdir()
    return "photos"


TRAIN = ["train", "--task", "denoise", "--iters", "1", "--batch", "1", "--patch", "32", "--quiet"]


@pytest.mark.parametrize("extra, needles", [
    (["--out", "w.safetensors"], ["--out w.safetensors", "exists", "--overwrite"]),
    (["--out", "w.safetensors", "--init", "w.safetensors", "--overwrite"], ["--out w.safetensors", "--init"]),
    (["--out", "w.safetensors", "--init", "w.safetensors", "--resume"], ["--out w.safetensors", "--init"]),
    (["--out", "x.safetensors", "--perceptual-weights", "x.json", "--overwrite"],
     ["--out (its model card) x.json", "--perceptual-weights"]),
    (["--out", "nodir/x.safetensors"], ["--out nodir/x.safetensors", "does not exist"]),
])
def test_train_refuses_before_training(folder, weights, photos, extra, needles):
    (folder / "x.json").write_text("{}\n")
    refused(folder, [*TRAIN, "--data", photos, *extra], *needles)


def test_train_state_needs_resume_or_overwrite(folder, weights, photos):
    (folder / "w.safetensors.train.pt").write_bytes(b"state")
    refused(folder, [*TRAIN, "--data", photos, "--out", "w.safetensors"], "--out", "--resume", "--overwrite")
    for flag in ("--resume", "--overwrite"):  # both get past the guard, to the empty --data folder
        proc = cli(folder, *TRAIN, "--data", "empty", "--out", "w.safetensors", flag)
        assert proc.returncode == 2 and "holds no images" in proc.stderr, proc.stderr
    (folder / "z.safetensors").write_bytes(b"no training state beside it")  # --resume has nothing to continue
    refused(folder, [*TRAIN, "--data", photos, "--out", "z.safetensors", "--resume"], "--out z.safetensors", "exists")
