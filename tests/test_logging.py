"""One log channel: every module logs under `streamrestore` and the command line prints it once, prefixed."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
from streamrestore.cli import setup_logging
setup_logging(quiet=sys.argv[1] == "quiet")
setup_logging(quiet=sys.argv[1] == "quiet")  # a second call adds no second handler
import streamrestore.backends.registry, streamrestore.io.rtsp
logging.getLogger("streamrestore.backends.registry").info("onnxruntime backend is not available on cuda here")
logging.getLogger("streamrestore.io.rtsp").warning("rtsp://cam: reconnected, frames flowing again")
"""


def run(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_info_and_warnings_reach_stderr_once_with_the_prefix():
    assert run("loud").splitlines() == ["streamrestore: onnxruntime backend is not available on cuda here",
                                        "streamrestore: rtsp://cam: reconnected, frames flowing again"]


def test_quiet_keeps_only_warnings():
    assert run("quiet").splitlines() == ["streamrestore: rtsp://cam: reconnected, frames flowing again"]


def test_every_module_logs_under_its_own_name():
    """No module picks a logger name of its own: `getLogger(__name__)` puts each under `streamrestore`."""
    import re
    from pathlib import Path

    import streamrestore

    root = Path(streamrestore.__file__).parent
    named = [str(p.relative_to(root)) for p in root.rglob("*.py") if re.search(r"getLogger\([\"']", p.read_text())]
    assert named == ["cli/__init__.py"]  # the one place that sets the channel up
