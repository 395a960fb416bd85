"""The wheel holds every module of the package and the shipped weights, and each module imports from it."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import streamrestore
assert streamrestore.__file__.startswith(sys.argv[1]), streamrestore.__file__  # the wheel's, not the checkout's
names = [m.name for m in pkgutil.walk_packages(streamrestore.__path__, "streamrestore.")
         if not m.name.endswith("__main__")]  # `python -m streamrestore.cli` runs the command line
for name in names:
    importlib.import_module(name)
from streamrestore.tasks import shipped_weights
assert shipped_weights("derain").is_file() and str(shipped_weights("derain")).startswith(sys.argv[1])
print(len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (the build backend)")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return next(out.glob("streamrestore-*.whl"))


def test_wheel_holds_every_module_and_the_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "streamrestore").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set()
    shipped = {f"streamrestore/weights/{p.name}" for p in (ROOT / "engines").iterdir() if p.suffix in (".safetensors", ".json")}
    assert shipped and shipped <= names


def test_every_module_imports_from_the_wheel(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 60  # modules and subpackages walked
