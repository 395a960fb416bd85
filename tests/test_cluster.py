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

import numpy as np
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


def test_an_engine_batch_never_holds_more_than_batch_frames():
    """Requests of 4 and 6 frames with --batch 8: two calls (4, then 6), not one of 10; each caller gets its own
    frames back."""
    from concurrent.futures import ThreadPoolExecutor

    from streamrestore.backends.base import PassthroughBackend
    from streamrestore.runtime.cluster import _Engine

    engine = _Engine(lambda: (PassthroughBackend(), {}), batch=8, batch_wait_ms=2000)
    for feed in ("a", "b", "c"):
        engine.attach(feed)  # c stays silent: the batch waits for frames until it is full or the wait ends
    sent = {"a": np.full((4, 8, 8, 3), 1, np.uint8), "b": np.full((6, 8, 8, 3), 2, np.uint8)}
    with ThreadPoolExecutor(2) as pool:
        calls = dict(zip(sent, pool.map(lambda feed: engine.restore(sent[feed], None, feed), sent)))
    assert sorted(timings["batch"] for _, timings in calls.values()) == [4, 6]
    assert all(np.array_equal(calls[feed][0], sent[feed]) for feed in sent)


def test_an_engine_calls_its_backend_once_per_form():
    """R'G'B' frames and I420 planes arriving together: one backend call each, each caller gets its own back
    in its own form (a passthrough backend takes both)."""
    from concurrent.futures import ThreadPoolExecutor

    from streamrestore.backends.base import PassthroughBackend
    from streamrestore.io.ycbcr import YCbCrFormat
    from streamrestore.runtime.cluster import _Engine

    engine = _Engine(lambda: (PassthroughBackend(), {}), batch=8, batch_wait_ms=2000)
    engine.attach("a")
    engine.attach("b")
    rgb, planes = np.full((2, 8, 8, 3), 1, np.uint8), np.full((2, 12, 8), 2, np.uint8)
    coding = YCbCrFormat.of("yuv420p", 1, 1)  # BT.709, limited range
    with ThreadPoolExecutor(2) as pool:
        rgb_call = pool.submit(engine.restore, rgb, None, "a")
        planes_call = pool.submit(engine.restore, planes, None, "b", coding)
        (rgb_out, rgb_timings), (planes_out, planes_timings) = rgb_call.result(), planes_call.result()
    assert np.array_equal(rgb_out, rgb) and np.array_equal(planes_out, planes)
    assert rgb_timings["batch"] == planes_timings["batch"] == 2  # not one call of 4


def test_an_engine_that_takes_rgb_converts_planes_sent_to_it():
    """A feed moved from a lost engine that took I420 planes keeps sending planes: an engine whose backend takes
    R'G'B' only (the torch backend on a CPU refuses planes) converts them there and back (the host's colour
    maths), so the feed goes on with the model's restoration of its frames."""
    from streamrestore.backends.registry import create_backend
    from streamrestore.io.ycbcr import YCbCrFormat, frame_to_i420, i420_to_rgb, rgb_to_frame
    from streamrestore.runtime.cluster import _Engine

    coding = YCbCrFormat.of("yuv420p", 1, 1)
    y, x = np.mgrid[0:32, 0:48]
    image = np.stack([60 + 3 * x, 80 + 4 * y, 140 - x - y], axis=-1).astype(np.uint8)
    planes = frame_to_i420(rgb_to_frame(image, coding))[None]
    engine = _Engine(lambda: (create_backend("denoise", backend="torch", device="cpu"), {}), batch=8, batch_wait_ms=0)
    assert not engine.backend.takes_i420
    restored, timings = engine.restore(planes, None, "a", coding)
    model = engine.backend(i420_to_rgb(planes[0], coding)[None])[0]
    assert restored.shape == planes.shape and timings["batch"] == 1
    assert np.array_equal(restored[0], frame_to_i420(rgb_to_frame(model, coding)))


def test_the_directory_moves_the_feeds_of_a_lost_engine_to_the_live_engine_serving_fewest():
    """The run's directory (an actor in a run; its class here): which engine serves each feed."""
    from streamrestore.runtime.cluster import _Directory

    directory = _Directory(["node0", "node1", "node2"])
    assert [directory.next("engine/1"), directory.next("engine/1"), directory.next("feed/a")] == [0, 1, 0]
    assert [directory.engine(feed, first) for feed, first in (("a", 0), ("b", 1), ("c", 2), ("d", 0))] == [0, 1, 2, 0]
    assert directory.engine("b", 1, lost=1) == 2  # engine 2 serves one feed, engine 0 two
    assert directory.engine("b", 1) == 2 and directory.engine("a", 0) == 0  # kept; the others unmoved
    assert directory.feed("b", 1) == ([{"from": 1, "to": 2, "lost_node": "node1"}], 1)  # engine 1 restarted once
    assert directory.engine("c", 2, lost=2) == 0 and directory.engine("b", 1) == 0  # both on the last engine
    assert directory.feed("b", 1)[0] == [{"from": 1, "to": 2, "lost_node": "node1"},
                                         {"from": 2, "to": 0, "lost_node": "node2"}]
    assert directory.engine("a", 0, lost=0) is None  # no engine left


@pytest.fixture(scope="module")
def ray_nodes():
    """A two-node Ray cluster on this machine (head + one more node, 1 CPU each): tests/ray_cluster.py."""
    if not HAVE_RAY:
        pytest.skip("Ray not installed (pip install 'ray[client]')")
    nodes = LocalRayCluster(cpus_per_node=1, object_store_mb=100)
    try:
        nodes.grow(2)
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def cluster(ray_nodes):
    """ray://127.0.0.1:PORT of the two-node cluster."""
    if len(ray_nodes.nodes) < 2:
        ray_nodes.grow(2)  # a test that killed a node left one
    return ray_nodes.address


def _on_their_engines_nodes(summaries: list[dict]) -> None:
    """Every feed actor ran on its engine's node (the nodes have room: 1 CPU each, a feed reserves 1/100). A
    feed actor asking Ray for no resources went to a random node whatever its soft node affinity said, about
    half of them on the other node (runtime/cluster.py, FEED_CPUS)."""
    placed = [(s.get("stream"), s["engine"], s["node"], s["engine_node"]) for s in summaries]
    assert all(node == engine_node for _, _, node, engine_node in placed), placed


def _summary(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    return data["summary"], data["frames"]


def test_feeds_on_two_nodes_share_engines(cluster, tmp_path):
    """Three feeds on two engines, batched together; lossless in and out (x264 qp 0, --crf 0), the planes
    written are the planes read: a passthrough engine is sent the decoded I420 planes, so no colour is
    converted (through R'G'B' and back, a level changes here and there)."""
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=200, audio=False) for name in ("a", "b", "c")}
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--profile", "surveillance", "--crf", "0", "--cluster", cluster, "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, env=RAY_ENV)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    summaries = {}
    for name in inputs:
        summary, records = _summary(tmp_path / f"{name}.json")
        assert summary["error"] is None and summary["restarts"] == 0, summary
        written, read = probe(tmp_path / f"{name}.mp4"), probe(inputs[name])
        assert summary["frames"] == len(records) == len(written["pts"]) == 200
        assert all(np.array_equal(a, b) for out, into in zip(written["planes"], read["planes"])
                   for a, b in zip(out, into))
        summaries[name] = (summary, records)
    assert [s["engine"] for s, _ in summaries.values()] == [0, 1, 0]
    assert len({s["engine_node"] for s, _ in summaries.values()}) == 2  # one engine per node
    _on_their_engines_nodes([s for s, _ in summaries.values()])
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

    # each feed read as a camera at 100 fps for 6 s (--realtime): a run over before the driver's first polls
    # answered left no figure scraped mid-run on a loaded machine
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=600, rate=100, width=320, height=240,
                              audio=False) for name in ("a", "b", "c")}
    reports = [tmp_path / f"{name}.json" for name in inputs]
    run = _Run("--streams", _streams(tmp_path, inputs), "--task", "passthrough", "--profile", "surveillance",
               "--realtime", "--cluster", cluster, "--quiet", reports=reports, env=RAY_ENV)
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
    _on_their_engines_nodes([_summary(tmp_path / f"{name}.json")[0] for name in inputs])
    for engine, records in by_engine.items():
        check_engine(samples, records, engine=str(engine))
    # scraped while the actors ran: figures came from them before the end, only grew, never passed the last
    out = [[s.get(("streamrestore_frames_encoded_total", frozenset({("stream", n)})), 0) for n in inputs]
           for s in run.during]
    assert any(0 < x < 600 for row in out for x in row), sorted({tuple(row) for row in out})
    assert all(a <= b for earlier, later in zip(out, out[1:]) for a, b in zip(earlier, later))


# the feeds of the tests that kill an engine or a node mid-run: FRAMES at 100 fps read as cameras (--realtime);
# the killed-engine test kills once each engine has restored KILL_AT
FRAMES, KILL_AT = 800, 200


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


def _engine_sums(run) -> list[tuple[float, float]]:
    """(frames restored by engine 0, by engine 1) in each scrape made while the run went (0 before any)."""
    return [tuple(s.get(("streamrestore_batch_size_sum", frozenset({("engine", e)})), 0.0) for e in ("0", "1"))
            for s in list(run.during)]


def test_a_killed_engine_actor_is_restarted_and_its_feeds_carry_on(cluster, tmp_path):
    """An engine actor's process killed mid-run: Ray restarts it, its feeds lose no frame, the reports and the
    metrics count the restart, and the engine's served counters keep growing across it."""
    pytest.importorskip("prometheus_client")
    from test_metrics import _Run, check_engine, check_feed, value

    # one feed per engine, each read as a camera at 100 fps for 8 s (--realtime): the kill comes once each
    # engine has restored (and the driver polled) 200 frames, about 6 s before either feed can end (without
    # the pacing, a feed on a fast engine had ended before the kill)
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=FRAMES, rate=100, width=320, height=240,
                              audio=False) for name in ("a", "b")}
    reports = [tmp_path / f"{name}.json" for name in inputs]
    run = _Run("--streams", _streams(tmp_path, inputs), "--task", "passthrough", "--profile", "surveillance",
               "--realtime", "--cluster", cluster, "--quiet", reports=reports, env=RAY_ENV)
    seen: dict[str, list[int]] = {}

    def kill_one():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(min(sums) >= KILL_AT for sums in _engine_sums(run)):
            time.sleep(0.05)
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
    samples = run.final(timeout=180)
    killer.join(timeout=60)
    code, _, stderr = run.end()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert len(seen.get("before", [])) == 2, seen  # one engine per node, one of them killed mid-run
    assert "after" in seen and len(seen["after"]) == 2, seen  # restarted: a new process for the killed one
    summaries = {}
    for name in inputs:
        summary, records = _summary(tmp_path / f"{name}.json")
        assert summary["error"] is None, summary
        assert summary["frames"] == len(records) == len(probe(tmp_path / f"{name}.mp4")["pts"]) == FRAMES
        assert summary["restarts"] == 0 and summary["engine_moves"] == []
        check_feed(samples, name, summary, records)
        summaries[name] = (summary, records)
    assert sorted(s["engine"] for s, _ in summaries.values()) == [0, 1]
    _on_their_engines_nodes([s for s, _ in summaries.values()])  # a restarted engine stays on its node
    assert sorted(s["engine_restarts"] for s, _ in summaries.values()) == [0, 1]  # the killed one's feed: 1
    for summary, records in summaries.values():
        engine = str(summary["engine"])
        assert value(samples, "streamrestore_engine_restarts_total", engine=engine) == summary["engine_restarts"]
        assert value(samples, "streamrestore_engine_up", engine=engine) == 1
        restored = value(samples, "streamrestore_batch_size_sum", engine=engine)
        if summary["engine_restarts"] == 0:
            check_engine(samples, records, engine=engine)  # exact: never restarted
        else:  # >= KILL_AT frames polled before the kill: the new process alone restores at most the rest (and
            # the calls it was sent again, 2 x 8 frames); the totals also hold what the first one did (all but what
            # it restored after the driver's last poll of it, 0.2 s: 20 frames at 100 fps, 100 allowed)
            assert FRAMES - 100 <= restored <= FRAMES + 16, restored
    sums = _engine_sums(run)
    assert all(a <= b for earlier, later in zip(sums, sums[1:]) for a, b in zip(earlier, later)), sums  # only grew
    assert not list(tmp_path.glob(".*partial*"))


def test_a_lost_node_moves_its_feeds_to_an_engine_on_another_node(ray_nodes, cluster, tmp_path):
    """The second node dies mid-run (its raylet, object store and workers SIGKILLed): the feed of its engine
    carries on with the head's engine, feed actors that ran on it are restarted on the head (a file output
    begun again as NAME.restart1), every feed ends with all its frames in a valid file and no error."""
    pytest.importorskip("prometheus_client")
    from test_metrics import _Run, check_feed, value

    # each feed read as a camera at 100 fps for 8 s (--realtime), so none can end before the kill
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=FRAMES, rate=100, width=320, height=240,
                              audio=False) for name in ("a", "b", "c")}  # engines: a and c on 0, b on 1
    reports = [tmp_path / f"{name}.json" for name in inputs]
    run = _Run("--streams", _streams(tmp_path, inputs), "--task", "passthrough", "--profile", "surveillance",
               "--realtime", "--cluster", cluster, "--quiet", reports=reports, env=RAY_ENV)
    killed = threading.Event()

    def kill_node():
        # as soon as every feed is writing (so every engine restores), well before any feed ends: a kill timed
        # on scraped counts came after feed b had finished on a loaded machine
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(tmp_path.glob(".*partial*"))) < len(inputs):
            time.sleep(0.05)
        if not any(summary_path.exists() for summary_path in reports):  # no feed has ended yet
            ray_nodes.kill(1)
            killed.set()

    killer = threading.Thread(target=kill_node, daemon=True)
    killer.start()
    samples = run.final(timeout=300)
    killer.join(timeout=60)
    code, _, stderr = run.end()
    assert killed.is_set()
    assert code == 0 and "Traceback" not in stderr, stderr
    summaries = {name: _summary(tmp_path / f"{name}.json") for name in inputs}
    head = summaries["a"][0]["engine_node"]
    for name, (summary, records) in summaries.items():
        assert summary["error"] is None, summary
        assert summary["engine"] == 0 and summary["engine_node"] == head and summary["node"] == head, summary
        output = tmp_path / (f"{name}.restart1.mp4" if summary["restarts"] else f"{name}.mp4")
        assert summary["restarts"] in (0, 1) and summary["output"] == str(output), summary
        pts = probe(output)["pts"]
        assert summary["frames"] == len(records) == len(pts) == FRAMES  # a file: every frame, begun again or not
        assert all(a < b for a, b in zip(pts, pts[1:]))
        check_feed(samples, name, summary, records)
    (move,) = summaries["b"][0]["engine_moves"]
    assert move["from"] == 1 and move["to"] == 0 and move["lost_node"] not in ("", head), move
    assert summaries["a"][0]["engine_moves"] == summaries["c"][0]["engine_moves"] == []
    assert value(samples, "streamrestore_engine_up", engine="1") == 0
    assert value(samples, "streamrestore_engine_up", engine="0") == 1
    assert not list(tmp_path.glob(".*partial*"))


@needs_ray
def test_cluster_local_starts_a_ray_for_the_run(tmp_path):
    inputs = {name: make_clip(tmp_path / f"in_{name}.mp4", frames=20, audio=False) for name in ("a", "b")}
    # The timeout guards against a hang only: Ray's first start in a fresh install took 100 s on a loaded 2-core machine
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--cluster", "local", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300,
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


def _writing(pid: int) -> bool:
    """Whether process `pid` holds an unfinished output open (the write guard's hidden .NAME.partial-PID file)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if ".partial-" in os.readlink(fd):
                return True
        except OSError:  # closed meanwhile
            continue
    return False


@pytest.mark.rtsp
def test_a_killed_feed_actor_is_restarted_and_its_camera_reconnected(cluster, rtsp_server_factory, tmp_path):
    servers = [rtsp_server_factory(), rtsp_server_factory()]
    inputs = {f"cam{i}": server.url("cam") for i, server in enumerate(servers)}
    killed: list[int] = []

    def kill_one():
        deadline = time.monotonic() + 40
        started: set[str] = set()
        while time.monotonic() < deadline and len(started) < 2:
            started |= {path.name.split(".")[1] for path in tmp_path.glob(".cam*partial*")}
            time.sleep(0.05)  # both feeds have begun writing
        time.sleep(0.5)
        while time.monotonic() < deadline:  # on a loaded machine an actor may show up a moment late
            pids = [pid for pid in _feed_actor_pids() if _writing(pid)]  # not one whose feed has already ended
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    threading.Thread(target=kill_one, daemon=True).start()
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--profile", "surveillance", "--duration", "6", "--stall-timeout", "1", "--reconnect",
                           "forever", "--cluster", cluster, "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=RAY_ENV)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert killed, "no feed actor was found to kill"
    summaries = {name: _summary(tmp_path / f"{name}.json")[0] for name in inputs}
    assert sorted(s["restarts"] for s in summaries.values()) == [0, 1], summaries
    for name, summary in summaries.items():
        output = tmp_path / (f"{name}.restart1.mp4" if summary["restarts"] else f"{name}.mp4")
        assert summary["error"] is None and summary["output"] == str(output)
        assert 30 <= summary["frames"] == len(probe(output)["pts"])  # a valid file: 15 fps for 6 s after (re)start
    assert not list(tmp_path.glob(".*partial*"))  # the killed actor's unfinished file was removed


@pytest.mark.rtsp
def test_live_cameras_carry_on_when_a_node_is_lost(ray_nodes, cluster, rtsp_server_factory, tmp_path):
    """Three GStreamer RTSP cameras on two nodes (cam0 and cam2 on the head's engine, cam1 on the second node's,
    each feed actor on its engine's node); the second node's process group is SIGKILLed once every feed writes.
    cam1's feed actor and engine die with it: Ray restarts the feed on the head, it connects to its camera
    again and goes on with the head's engine in a new file; cam0 and cam2 never stop. Every output is a valid
    file with increasing timestamps and no feed reports an error."""
    duration = 6  # seconds a feed runs from its (re)start: cam1's restart comes after Ray declares the node dead
    servers = [rtsp_server_factory() for _ in range(3)]
    inputs = {f"cam{i}": server.url("cam") for i, server in enumerate(servers)}
    killed: dict[str, float] = {}

    def kill_node():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(tmp_path.glob(".cam*partial*"))) < len(inputs):
            time.sleep(0.05)  # every feed is writing
        if not any((tmp_path / f"{name}.json").exists() for name in inputs):
            ray_nodes.kill(1)
            killed["at"] = time.time()

    killer = threading.Thread(target=kill_node, daemon=True)
    killer.start()
    proc = subprocess.run([*CLI, "--streams", str(_streams(tmp_path, inputs)), "--task", "passthrough",
                           "--profile", "surveillance", "--duration", str(duration), "--stall-timeout", "1",
                           "--reconnect", "forever", "--cluster", cluster, "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, timeout=150, env=RAY_ENV)
    killer.join(timeout=10)
    assert "at" in killed, "the second node was not killed while every feed ran"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    summaries = {name: _summary(tmp_path / f"{name}.json")[0] for name in inputs}
    head = summaries["cam0"]["engine_node"]
    for name, summary in summaries.items():
        assert summary["error"] is None, summary
        assert summary["engine"] == 0 and summary["engine_node"] == head and summary["node"] == head, summary
        lost = name == "cam1"  # its feed actor ran on the lost node, with its engine
        assert summary["restarts"] == (1 if lost else 0), summary
        output = tmp_path / (f"{name}.restart1.mp4" if lost else f"{name}.mp4")
        assert summary["output"] == str(output), summary
        facts = probe(output)
        pts, seconds = facts["pts"], float(facts["time_base"])
        # a valid file of the feed's whole duration at the cameras' 15 fps (a loaded machine drops some frames)
        assert 0.5 * 15 * duration <= summary["frames"] == len(pts), (name, summary["frames"], len(pts))
        assert all(a < b for a, b in zip(pts, pts[1:])), name
        # carried on: no gap of a second in the file (cam0 and cam2 across the node's loss, cam1 after it)
        assert max(b - a for a, b in zip(pts, pts[1:])) * seconds < 1.0, (name, summary)
        assert (tmp_path / f"{name}.json").stat().st_mtime > killed["at"]  # ran on after the kill
    (move,) = summaries["cam1"]["engine_moves"]
    assert move["from"] == 1 and move["to"] == 0 and move["lost_node"] not in ("", head), move
    assert summaries["cam0"]["engine_moves"] == summaries["cam2"]["engine_moves"] == []
    assert not (tmp_path / "cam1.mp4").exists()  # the dead actor's unfinished file was removed
    assert not list(tmp_path.glob(".*partial*"))
