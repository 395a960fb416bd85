"""A real Ray cluster on 127.0.0.1 for the cluster tests and benchmarks/cluster.py: `ray start --block`
processes of our own (one process group each), without Ray's token authentication (its token file is
per machine), reached through the Ray client (ray://)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtsp_fixtures import free_port

RAY_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class LocalRayCluster:
    """A Ray cluster on 127.0.0.1 of our own `ray start --block` processes (one process group
    each); `grow(n)` adds nodes up to n, `close()` stops exactly those groups."""

    def __init__(self, cpus_per_node: int = 1, object_store_mb: int = 200) -> None:
        self.cpus, self.object_store_mb = cpus_per_node, object_store_mb
        self.temp = tempfile.mkdtemp(prefix="sr-ray-", dir="/tmp")  # short: Ray's socket paths live under it
        self.gcs, self.client = free_port(), free_port()
        self.nodes: list[subprocess.Popen] = []
        self.nodes.append(self._start("--head", "--port", str(self.gcs), "--ray-client-server-port",
                                      str(self.client), "--include-dashboard", "false", "--temp-dir", self.temp,
                                      "--disable-usage-stats"))
        listening(self.gcs, 90)
        self._wait(1)
        listening(self.client, 60)

    @property
    def address(self) -> str:
        return f"ray://127.0.0.1:{self.client}"

    def _start(self, *args: str) -> subprocess.Popen:
        ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
        return subprocess.Popen([ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus",
                                 str(self.cpus), "--object-store-memory", str(self.object_store_mb * 2**20), *args], env=RAY_ENV,
                                cwd=self.temp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def _wait(self, count: int) -> None:
        code = ("import ray, sys, time; ray.init(address=sys.argv[1], logging_level='ERROR')\n"
                "deadline = time.monotonic() + 90\n"
                "alive = lambda: sum(n['Alive'] for n in ray.nodes())\n"
                "while alive() < int(sys.argv[2]) and time.monotonic() < deadline: time.sleep(0.2)\n"
                "sys.exit(alive() < int(sys.argv[2]))")
        subprocess.run([sys.executable, "-c", code, f"127.0.0.1:{self.gcs}", str(count)], check=True, timeout=120,
                       capture_output=True, env=RAY_ENV)

    def grow(self, count: int) -> None:
        while len(self.nodes) < count:
            self.nodes.append(self._start("--address", f"127.0.0.1:{self.gcs}"))
        self._wait(count)

    def kill(self, index: int) -> None:
        """Node `index` (1: the first after the head) dies at once, as a machine that goes down: SIGKILL to its
        process group (its raylet, object store and workers). `grow` can start another in its place."""
        node = self.nodes.pop(index)
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.wait(timeout=30)

    def close(self) -> None:
        for node in reversed(self.nodes):
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(node.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    node.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
            try:
                os.killpg(node.pid, signal.SIGKILL)  # what the group still holds (the node's own processes)
            except ProcessLookupError:
                pass
        self.nodes = []
        shutil.rmtree(self.temp, ignore_errors=True)
