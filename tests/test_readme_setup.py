"""The README's first screen works for a newcomer (issue 13 items 3 and 4): its set-up line installs
what its test command and `benchmarks/latency.py` need, and `.ci/run` installs the same."""
from __future__ import annotations

import re
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_bash_block() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```bash\n(.*?)```", text, re.S).group(1)


def _extras(command: str) -> set[str]:
    """Extras of `pip install -e '.[a,b]'` in a command line ({} for a plain `pip install -e .`)."""
    match = re.search(r"pip install (?:--\S+ )*-e ['\"]?\.(?:\[([\w,-]+)\])?", command)
    assert match, f"no `pip install -e .` in: {command}"
    return set(filter(None, (match.group(1) or "").split(",")))


def _packages_of(extras: set[str]) -> set[str]:
    """Distribution names the streamrestore install brings with `extras` (from its own metadata)."""
    names = set()
    for requirement in requires("streamrestore") or ():
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        marker = re.search(r'extra\s*==\s*"([^"]+)"', requirement)
        if marker is None or marker.group(1) in extras:
            names.add(name)
    return names


def test_readme_set_up_installs_pytest_and_matplotlib():
    setup = next(line for line in _first_bash_block().splitlines() if "pip install" in line)
    installed = _packages_of(_extras(setup))
    # pytest-xdist: the test command's two workers (pyproject.toml addopts)
    assert {"pytest", "pytest-xdist", "matplotlib"} <= installed, f"README set-up `{setup}` installs {sorted(installed)}"


def test_readme_first_screen_keeps_install_run_and_test_commands():
    block = _first_bash_block()
    assert "pip install torch==" in block and "streamrestore run sample" in block
    head = (ROOT / "README.md").read_text()[:1200]
    assert "python3 -m pytest -q" in head


def test_ci_installs_what_the_readme_installs():
    setup = next(line for line in _first_bash_block().splitlines() if "pip install" in line)
    ci = next(line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line and "-e" in line)
    assert _extras(setup) <= _extras(ci), (ci, setup)
    # what CI installs beyond the set-up line (the heavy `cluster` extra) the README's test line names
    tests_line = (ROOT / "README.md").read_text().split("Tests:", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{extra}` extra" in tests_line for extra in _extras(ci) - _extras(setup)), tests_line
