"""`--cluster`: the feeds of --streams as Ray actors (streamrestore.runtime.cluster) on a real local cluster --
a head and a second node started with `ray start` on 127.0.0.1 -- reached through the Ray client
(ray://). Without Ray the option is refused in one line; the cluster tests skip."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from media import make_clip, probe
from ray_cluster import RAY_ENV, LocalRayCluster
from rtsp_fixtures import free_port, rtsp_clip, rtsp_server_factory  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "streamrestore.cli", "run"]
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray not installed (pip install 'ray[client]')")


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def _streams(tmp_path: Path, inputs: dict) -> Path:
    lines = [f"  - {{name: {name}, input: '{source}', output: '{tmp_path / (name + '.mp4')}', "
             f"report: '{tmp_path / (name + '.json')}'}}" for name, source in inputs.items()]
    (tmp_path / "s.yaml").write_text("streams:\n" + "\n".join(lines) + "\n")
    return tmp_path / "s.yaml"


def test_without_ray_the_option_is_refused_in_one_line(tmp_path):
    streams = _streams(tmp_path, {"a": make_clip(tmp_path / "in.mp4", frames=3, audio=False)})
    code = ("import sys; sys.modules['ray'] = None  # as if it were not installed\n"
            "from streamrestore.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "run", "--streams", str(streams), "--task", "passthrough",
                           "--cluster", "local"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    _one_line_error(proc, "pip install 'ray[client]")
    assert not (tmp_path / "a.mp4").exists()


@needs_ray
@pytest.mark.parametrize("extra, needle", [(["--cluster", "cluster.example:10001"], "ray://HOST:PORT"),
                                           (["--cluster", "ray://"], "ray://HOST:PORT"),
                                           (["--cluster", "local", "--metrics-port", "70000"], "--metrics-port")])
def test_bad_cluster_options_are_one_line(tmp_path, extra, needle):
    streams = _streams(tmp_path, {"a": make_clip(tmp_path / "in.mp4", frames=3, audio=False)})
    proc = subprocess.run([*CLI, "--streams", str(streams), "--task", "passthrough", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    _one_line_error(proc, needle)


def test_an_engine_sends_a_batch_as_soon_as_every_attached_feed_is_in():
    """The engine actor's batching (its class in this process): a feed that keeps a temporal state has one
    frame in flight, so waiting for the rest of --batch would only add the batch wait to every frame."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from streamrestore.backends.base import PassthroughBackend
    from streamrestore.runtime.cluster import _Engine

    frames = np.zeros((1, 8, 8, 3), np.uint8)
    engine = _Engine(lambda: (PassthroughBackend(), {}), batch=8, batch_wait_ms=5000)
    engine.attach("a")
    engine.attach("b")
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        calls = list(pool.map(lambda feed: engine.restore(frames, None, feed), ["a", "b"]))
    assert time.monotonic() - started < 2.0  # not the 5 s batch wait
    assert [timings["batch"] for _, timings in calls] == [2, 2]  # one call for both feeds' frames
    engine.detach("b")  # ended: a batch no longer waits for it
    started = time.monotonic()
    assert engine.restore(frames, None, "a")[1]["batch"] == 1 and time.monotonic() - started < 2.0
    engine = _Engine(lambda: (PassthroughBackend(), {}), batch=8, batch_wait_ms=300)
    engine.attach("a")
    engine.attach("b")
    started = time.monotonic()
    assert engine.restore(frames, None, "a")[1]["batch"] == 1
    assert time.monotonic() - started >= 0.3  # b attached and silent: the batch wait still bounds the wait


@pytest.fixture(scope="module")
def cluster():
    """ray://127.0.0.1:PORT of a two-node Ray cluster on this machine (head + one more node, 1 CPU each)."""
    if not HAVE_RAY:
        pytest.skip("Ray not installed (pip install 'ray[client]')")
    nodes = LocalRayCluster(cpus_per_node=1, object_store_mb=100)
    try:
        nodes.grow(2)
        yield nodes.address
    finally:
        nodes.close()


def _summary(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    return data["summary"], data["frames"]


def test_feeds_on_two_nodes_share_engines(cluster, tmp_path):
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=200, audio=False) for name in ("a", "b", "c")}
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--profile", "surveillance", "--cluster", cluster, "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=RAY_ENV)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    summaries = {}
    for name in inputs:
        summary, records = _summary(tmp_path / f"{name}.json")
        assert summary["error"] is None and summary["restarts"] == 0, summary
        assert summary["frames"] == len(records) == len(probe(tmp_path / f"{name}.mp4")["pts"]) == 200
        summaries[name] = (summary, records)
    assert [s["engine"] for s, _ in summaries.values()] == [0, 1, 0]
    assert len({s["engine_node"] for s, _ in summaries.values()}) == 2  # one engine per node
    # engine 0 serves a and c: each sends at most 4 frames a call (its half of --batch 8), the engine
    # restores them together
    shared = [r["batch"] for name in ("a", "c") for r in summaries[name][1]]
    assert 4 < max(shared) <= 8, sorted(set(shared))
    assert not list(tmp_path.glob(".*partial*"))


def test_metrics_of_a_cluster_run_equal_the_reports(cluster, tmp_path):
    """--metrics-port with --cluster: this process serves the figures of the feed and engine actors on two
    nodes, scraped over HTTP while the run goes and at its end, checked against each feed's report."""
    pytest.importorskip("prometheus_client")
    from test_metrics import _Run, check_engine, check_feed, value

    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=600, audio=False) for name in ("a", "b", "c")}
    reports = [tmp_path / f"{name}.json" for name in inputs]
    run = _Run("--streams", _streams(tmp_path, inputs), "--task", "passthrough", "--profile", "surveillance",
               "--cluster", cluster, "--quiet", reports=reports, env=RAY_ENV)
    samples = run.final(timeout=120)
    code, _, stderr = run.end()
    assert code == 0 and "Traceback" not in stderr, stderr
    by_engine: dict[int, list] = {}
    for name in inputs:
        summary, records = _summary(tmp_path / f"{name}.json")
        assert summary["error"] is None and summary["frames"] == len(probe(tmp_path / f"{name}.mp4")["pts"]) == 600
        check_feed(samples, name, summary, records)
        assert value(samples, "streamrestore_frames_decoded_total", stream=name) == 600  # a file: no drops
        by_engine.setdefault(summary["engine"], []).extend(records)
    assert sorted(by_engine) == [0, 1]
    for engine, records in by_engine.items():
        check_engine(samples, records, engine=str(engine))
    # scraped while the actors ran: figures came from them before the end, only grew, never passed the last
    out = [[s.get(("streamrestore_frames_encoded_total", frozenset({("stream", n)})), 0) for n in inputs]
           for s in run.during]
    assert any(0 < x < 600 for row in out for x in row), sorted({tuple(row) for row in out})
    assert all(a <= b for earlier, later in zip(out, out[1:]) for a, b in zip(earlier, later))


def _actor_pids(kind: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(kind):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_killed_engine_actor_is_restarted_and_its_feeds_carry_on(cluster, tmp_path):
    # 320x240: long enough (several seconds) that the restart happens while both feeds still run
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=1500, width=320, height=240, audio=False)
              for name in ("a", "b")}
    seen: dict[str, list[int]] = {}

    def kill_one():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(tmp_path.glob(".*partial*"))) < 2:
            time.sleep(0.05)  # both feeds are writing
        seen["before"] = _actor_pids(b"ray::_Engine")
        if seen["before"]:
            os.kill(seen["before"][0], signal.SIGKILL)
        while time.monotonic() < deadline:  # until a new engine process stands in for the killed one
            now = _actor_pids(b"ray::_Engine")
            if len(now) == len(seen["before"]) and seen["before"][0] not in now:
                seen["after"] = now
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--profile", "surveillance", "--cluster", cluster, "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, env=RAY_ENV)
    killer.join(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(seen.get("before", [])) == 2, seen  # one engine per node, one of them killed mid-run
    assert "after" in seen and len(seen["after"]) == 2, seen  # restarted: a new process for the killed one
    for name in inputs:
        summary, records = _summary(tmp_path / f"{name}.json")
        assert summary["error"] is None, summary
        assert summary["frames"] == len(records) == len(probe(tmp_path / f"{name}.mp4")["pts"]) == 1500
    assert not list(tmp_path.glob(".*partial*"))


@needs_ray
def test_cluster_local_starts_a_ray_for_the_run(tmp_path):
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=20, audio=False) for name in ("a", "b")}
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--cluster", "local", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=RAY_ENV)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # Ray's own messages stay in its logs
    for name in inputs:
        summary, _ = _summary(tmp_path / f"{name}.json")
        assert summary["frames"] == len(probe(tmp_path / f"{name}.mp4")["pts"]) == 20 and summary["engine"] == 0


def _feed_actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::_Feed"):
                pids.append(int(entry.name))
    return pids


@pytest.mark.rtsp
def test_a_killed_feed_actor_is_restarted_and_its_camera_reconnected(cluster, rtsp_server_factory, tmp_path):
    servers = [rtsp_server_factory(), rtsp_server_factory()]
    inputs = {f"cam{i}": server.url("cam") for i, server in enumerate(servers)}
    killed: list[int] = []

    def kill_one():
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(list(tmp_path.glob(".cam*partial*"))) < 2:
            time.sleep(0.1)  # both feeds are writing
        time.sleep(1.0)
        pids = _feed_actor_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    threading.Thread(target=kill_one, daemon=True).start()
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--profile", "surveillance", "--duration", "4", "--stall-timeout", "1", "--reconnect",
                           "forever", "--cluster", cluster, "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=RAY_ENV)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert killed, "no feed actor was found to kill"
    summaries = {name: _summary(tmp_path / f"{name}.json")[0] for name in inputs}
    assert sorted(s["restarts"] for s in summaries.values()) == [0, 1], summaries
    for name, summary in summaries.items():
        output = tmp_path / (f"{name}.restart1.mp4" if summary["restarts"] else f"{name}.mp4")
        assert summary["error"] is None and summary["output"] == str(output)
        assert 20 <= summary["frames"] == len(probe(output)["pts"])  # a valid file: 15 fps for 4 s after (re)start
    assert not list(tmp_path.glob(".*partial*"))  # the killed actor's unfinished file was removed
