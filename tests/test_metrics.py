"""`--metrics-port`: the Prometheus endpoint of a run (streamrestore.runtime.metrics), scraped over HTTP from
real runs and checked figure by figure against the per-feed reports."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media import make_clip, probe
from rtsp_fixtures import rtsp_clip, rtsp_server_factory  # noqa: F401

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "streamrestore.cli", "run"]


def scrape(url: str) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def check_feed(samples: dict, stream: str, summary: dict, records: list[dict]) -> None:
    """Every figure of one feed against its report (its summary and per-frame records)."""
    frames = summary["frames"]
    assert frames == len(records) > 0
    assert value(samples, "streamrestore_frames_encoded_total", stream=stream) == frames
    assert value(samples, "streamrestore_frames_dropped_total", stream=stream) == summary["dropped_frames"]
    assert value(samples, "streamrestore_frames_skipped_total", stream=stream) == summary["skipped_frames"]
    assert value(samples, "streamrestore_reconnects_total", stream=stream) == summary["reconnects"]
    assert value(samples, "streamrestore_end_to_end_seconds_count", stream=stream) == frames
    assert value(samples, "streamrestore_end_to_end_seconds_sum", stream=stream) == pytest.approx(
        sum(r["end_to_end"] for r in records) / 1e3, abs=1e-6 * frames)  # the report rounds to 1 us
    late = sum(r["end_to_end"] > 10_000 for r in records)
    assert value(samples, "streamrestore_end_to_end_seconds_bucket", stream=stream, le="10.0") == frames - late
    assert value(samples, "streamrestore_end_to_end_seconds_bucket", stream=stream, le="+Inf") == frames
    for stage in ("network", "decode", "upload", "restore", "download", "fusion", "encode"):
        assert value(samples, "streamrestore_stage_seconds_count", stream=stream, stage=stage) == frames
        assert value(samples, "streamrestore_stage_seconds_sum", stream=stream, stage=stage) == pytest.approx(
            sum(r[stage] for r in records) / 1e3, abs=1e-6 * frames)
    assert value(samples, "streamrestore_fps", stream=stream) >= 0


def check_engine(samples: dict, records: list[dict], engine: str = "0") -> None:
    """The batch histogram against the records of every feed of `engine`: each frame carries its call's batch
    size."""
    calls = sum(Fraction(1, r["batch"]) for r in records)
    assert calls.denominator == 1
    assert value(samples, "streamrestore_batch_size_count", engine=engine) == calls
    assert value(samples, "streamrestore_batch_size_sum", engine=engine) == len(records)
    singles = sum(r["batch"] == 1 for r in records)
    assert value(samples, "streamrestore_batch_size_bucket", engine=engine, le="1.0") == singles
    assert value(samples, "streamrestore_engine_queue_depth", engine=engine) == 0  # the run has ended


class _Run:
    """`streamrestore run ... --metrics-port 0 --metrics-linger 60` in a subprocess: its endpoint is scraped
    while it runs (by a thread) and once its reports are written, then SIGTERM ends the linger."""

    def __init__(self, *args, reports: list[Path], env: dict | None = None) -> None:
        self.reports = reports
        self.proc = subprocess.Popen([*CLI, *map(str, args), "--metrics-port", "0", "--metrics-linger", "60"],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stderr_lines: list[str] = []
        self.url = self._announced()
        self.during: list[dict] = []
        self._running = threading.Event()
        self._running.set()
        self._scraper = threading.Thread(target=self._scrape_while_running, daemon=True)
        self._scraper.start()

    def _announced(self) -> str:
        for line in self.proc.stderr:  # the address is announced once, before the engine is built
            self.stderr_lines.append(line)
            found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
            if found:
                return found.group(1)
        raise AssertionError(f"no metrics address on stderr: {self.stderr_lines}")

    def _scrape_while_running(self) -> None:
        while self._running.is_set() and not all(p.exists() for p in self.reports):
            try:
                self.during.append(scrape(self.url))
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)

    def final(self, timeout: float) -> dict:
        """The scrape after the run: once every report is written, while the endpoint lingers."""
        deadline = time.monotonic() + timeout
        while not all(p.exists() for p in self.reports):
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.05)
        self._running.clear()
        self._scraper.join(timeout=15)
        return scrape(self.url)

    def end(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)  # ends the linger; the run's exit code stays
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, "".join(self.stderr_lines) + err


def _report(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    return data["summary"], data["frames"]


def test_streams_run_metrics_equal_the_reports(tmp_path):
    inputs = {"front": make_clip(tmp_path / "front.mp4", frames=150, audio=False),
              "back": make_clip(tmp_path / "back.mp4", frames=97, audio=False)}
    lines = [f"  - {{name: {n}, input: '{p}', output: '{tmp_path / (n + '_out.mp4')}', report: '{tmp_path / (n + '.json')}'}}"
             for n, p in inputs.items()]
    (tmp_path / "s.yaml").write_text("streams:\n" + "\n".join(lines) + "\n")
    reports = [tmp_path / f"{n}.json" for n in inputs]
    run = _Run("--streams", tmp_path / "s.yaml", "--task", "passthrough", "--profile", "surveillance", "--quiet",
               reports=reports)
    samples = run.final(timeout=120)
    code, _, stderr = run.end()
    assert code == 0 and "Traceback" not in stderr, stderr
    every = []
    for name, path in zip(inputs, reports):
        summary, records = _report(path)
        assert summary["frames"] == len(probe(tmp_path / f"{name}_out.mp4")["pts"]) == {"front": 150, "back": 97}[name]
        check_feed(samples, name, summary, records)
        assert value(samples, "streamrestore_frames_decoded_total", stream=name) == summary["frames"]  # a file: no drops
        every += records
    check_engine(samples, every)
    assert max(r["batch"] for r in every) > 1  # batches were really formed
    # scraped while running (a feed's series appear when the run starts): the counters only grow, and never
    # pass the final figures
    out = [[s.get(("streamrestore_frames_encoded_total", frozenset({("stream", n)})), 0) for n in inputs]
           for s in run.during]
    assert out and all(a <= b for earlier, later in zip(out, out[1:]) for a, b in zip(earlier, later))
    assert all(x <= value(samples, "streamrestore_frames_encoded_total", stream=n)
               for row in out for x, n in zip(row, inputs))
    with pytest.raises(urllib.error.URLError):  # the server stops with the run
        scrape(run.url)


def test_one_feed_run_serves_metrics_too(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=30, audio=False)
    run = _Run(src, "--task", "passthrough", "-o", tmp_path / "out.mp4", "--report", tmp_path / "r.json", "--quiet",
               reports=[tmp_path / "r.json"])
    samples = run.final(timeout=60)
    code, _, stderr = run.end()
    assert code == 0, stderr
    summary, records = _report(tmp_path / "r.json")
    stream = next(dict(labels)["stream"] for name, labels in samples if name == "streamrestore_frames_encoded_total")
    check_feed(samples, stream, summary, records)
    check_engine(samples, records)


def test_in_process_drops_and_engine_time_equal_the_reports():
    """Two feeds on one engine, one live with the latest-frame policy behind a slow engine: the drops and
    the engine's time in backend calls, scraped over HTTP at the end of the run."""
    from streamrestore.backends.base import PassthroughBackend
    from streamrestore.io.base import DecodedFrame, StreamInfo
    from streamrestore.runtime.metrics import serve_metrics
    from streamrestore.runtime.pipeline import run_streams
    from streamrestore.runtime.streams import StreamSpec

    class Source:
        def __init__(self, frames, live):
            self.n, self.live = frames, live
            self.info = StreamInfo(width=8, height=8, time_base=Fraction(1, 25), average_rate=Fraction(25),
                                   is_live=live, name="memory")
            self.policy = "latest" if live else None
            self.skipped = self.dropped = self.reconnects = 0

        def __iter__(self):
            for i in range(self.n):
                time.sleep(0.002 if self.live else 0)
                yield DecodedFrame(np.zeros((8, 8, 3), np.uint8), i, pts=i, time_base=self.info.time_base)

        def close(self):
            pass

    class Sink:
        def write(self, image, frame):
            pass

        def close(self, complete=True):
            return 0

        def abort(self):
            pass

    class Slow(PassthroughBackend):  # 10 ms a call, as a backend measures it
        def __call__(self, frames):
            time.sleep(0.01)
            out = super().__call__(frames)
            self.last_timings = {"upload": 1.0, "restore": 10.0, "download": 0.5}
            return out

    sources = {"live": Source(120, live=True), "file": Source(40, live=False)}
    specs = [StreamSpec(name, f"in-{name}", f"out-{name}") for name in sources]
    with serve_metrics(0) as metrics:
        reports = run_streams(specs, Slow(), open_source=lambda spec: sources[spec.name],
                              open_sink=lambda spec, info: Sink(), batch=2, batch_wait_ms=5, observer=metrics)
        samples = scrape(metrics.url)
    records = []
    for spec, report in zip(specs, reports):
        summary = report.summary()
        check_feed(samples, spec.name, summary, report.records)
        decoded = value(samples, "streamrestore_frames_decoded_total", stream=spec.name)
        assert decoded == sources[spec.name].n == summary["frames"] + summary["dropped_frames"]
        records += report.records
    assert reports[0].dropped > 0 and reports[1].dropped == 0  # the figures checked are not all zeros
    check_engine(samples, records)
    calls = value(samples, "streamrestore_batch_size_count", engine="0")
    assert value(samples, "streamrestore_engine_restore_seconds_total", engine="0") == pytest.approx(calls * 0.0115)


@pytest.mark.rtsp
def test_rtsp_feeds_reconnects_equal_the_reports(rtsp_server_factory, tmp_path):
    """Two real RTSP cameras, one restarted mid-run: its reconnect counts on the endpoint and in its report."""
    servers = [rtsp_server_factory(), rtsp_server_factory()]
    lines = [f"  - {{name: cam{i}, input: '{s.url('cam')}', output: '{tmp_path / f'cam{i}.mp4'}', "
             f"report: '{tmp_path / f'cam{i}.json'}'}}" for i, s in enumerate(servers)]
    (tmp_path / "s.yaml").write_text("streams:\n" + "\n".join(lines) + "\n")
    reports = [tmp_path / f"cam{i}.json" for i in range(2)]
    run = _Run("--streams", tmp_path / "s.yaml", "--task", "passthrough", "--profile", "surveillance",
               "--duration", "8", "--stall-timeout", "1", "--reconnect", "forever", "--quiet", reports=reports)

    def restart():
        # once cam1 is being written, not at a fixed time: on a busy machine (the other test worker) the run
        # had not connected 2 s after its start, and a restart before the first connection is no reconnect
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(tmp_path.glob(".cam1.partial-*")):
            time.sleep(0.05)
        time.sleep(0.5)
        servers[1].stop()
        time.sleep(0.5)
        servers[1].start()

    threading.Thread(target=restart, daemon=True).start()
    samples = run.final(timeout=60)
    code, _, stderr = run.end()
    assert code == 0, stderr
    for i, path in enumerate(reports):
        summary, records = _report(path)
        check_feed(samples, f"cam{i}", summary, records)
        assert summary["frames"] == len(probe(tmp_path / f"cam{i}.mp4")["pts"])
        decoded = value(samples, "streamrestore_frames_decoded_total", stream=f"cam{i}")
        assert decoded == summary["frames"] + summary["dropped_frames"]
    assert _report(reports[1])[0]["reconnects"] >= 1 and _report(reports[0])[0]["reconnects"] == 0
    assert value(samples, "streamrestore_stage_seconds_count", stream="cam0", stage="network") > 0


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_without_prometheus_client_the_option_is_refused_in_one_line(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3, audio=False)
    out = tmp_path / "out.mp4"
    code = ("import sys; sys.modules['prometheus_client'] = None  # as if it were not installed\n"
            "from streamrestore.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "run", str(src), "--task", "passthrough", "-o", str(out),
                           "--metrics-port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    _one_line_error(proc, "pip install prometheus-client")
    assert not out.exists()


def test_a_run_without_the_option_does_not_import_prometheus_client(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3, audio=False)
    code = ("import sys; from streamrestore.cli import main\n"
            "assert main(sys.argv[1:]) == 0\n"
            "print('prometheus_client' in sys.modules, 'streamrestore.runtime.metrics' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, "run", str(src), "--task", "passthrough", "-o",
                           str(tmp_path / "out.mp4"), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_a_port_in_use_is_refused_before_any_work(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3, audio=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([*CLI, str(src), "--task", "passthrough", "-o", str(tmp_path / "out.mp4"),
                               "--metrics-port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    _one_line_error(proc, f"--metrics-port {port}")
    assert not (tmp_path / "out.mp4").exists()


def test_cluster_engine_counters_keep_growing_across_a_restart():
    """ClusterMetrics (the driver's, with --cluster): an engine actor's figures say its incarnation; a restarted
    one's counters begin again from 0 in its new process, the served ones add the earlier incarnations'."""
    from prometheus_client import generate_latest

    from streamrestore.runtime.metrics import BATCH_BUCKETS, ClusterMetrics

    def figures(calls: int, frames_each: int, seconds: float, incarnation: int) -> dict:
        counts = [0] * (len(BATCH_BUCKETS) + 1)
        counts[BATCH_BUCKETS.index(frames_each)] = calls
        return {"batch": (counts, float(calls * frames_each)), "restore_seconds": seconds, "incarnation": incarnation}

    def served(metrics) -> dict:
        return {(s.name, frozenset(s.labels.items())): s.value for family in
                text_string_to_metric_families(generate_latest(metrics.registry).decode()) for s in family.samples}

    metrics = ClusterMetrics()
    metrics.engine(0, figures(10, 4, 1.0, 0))
    metrics.engine(1, figures(3, 2, 0.5, 0))
    metrics.engine(0, figures(2, 8, 0.25, 1))  # restarted: its new process has made 2 calls
    metrics.engine(0, figures(9, 4, 0.9, 0))  # a late answer of the first process: ignored
    now = served(metrics)
    assert value(now, "streamrestore_batch_size_count", engine="0") == 12
    assert value(now, "streamrestore_batch_size_sum", engine="0") == 40 + 16
    assert value(now, "streamrestore_batch_size_bucket", engine="0", le="4.0") == 10
    assert value(now, "streamrestore_engine_restore_seconds_total", engine="0") == pytest.approx(1.25)
    assert value(now, "streamrestore_engine_restarts_total", engine="0") == 1
    assert value(now, "streamrestore_engine_restarts_total", engine="1") == 0
    metrics.engine(0, figures(5, 8, 0.5, 2))  # restarted again
    metrics.engine_lost(1)
    now = served(metrics)
    assert value(now, "streamrestore_batch_size_sum", engine="0") == 40 + 16 + 40
    assert value(now, "streamrestore_engine_restarts_total", engine="0") == 2
    assert value(now, "streamrestore_batch_size_sum", engine="1") == 6  # a lost engine's figures stay
    assert [value(now, "streamrestore_engine_up", engine=e) for e in ("0", "1")] == [1, 0]
