"""streamrestore.atomic: every file the package writes whole goes through one helper."""
from __future__ import annotations

import pytest

from streamrestore.atomic import atomic_path, atomic_write, temporary_path


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "card.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


def test_a_finished_write_replaces_the_file(tmp_path):
    target = tmp_path / "graph.onnx"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".onnx"
        assert target.read_bytes() == b"old"  # the target is untouched while the block writes
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert atomic_write(tmp_path / "t.txt", "héllo").read_bytes() == "héllo".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.onnx", "t.txt"]


def test_temporary_name_stays_within_the_file_system_limit(tmp_path):
    long = tmp_path / ("x" * 250 + ".mp4")
    assert len(temporary_path(long).name.encode()) <= 255 and temporary_path(long).suffix == ".mp4"


def test_the_package_has_no_other_rename_into_place():
    """One helper: no module but streamrestore.atomic (and the video sink, which keeps its temporary
    file open while it encodes) renames a temporary file over its target."""
    from pathlib import Path

    import streamrestore

    root = Path(streamrestore.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "os.replace(" in p.read_text())
    assert users == ["atomic.py", "io/video.py"]
