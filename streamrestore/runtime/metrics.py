"""A run's metrics for a monitoring system: an HTTP endpoint in the Prometheus text format
(`streamrestore run ... --metrics-port PORT`, README "Metrics"), through the optional `prometheus-client`
package (`pip install prometheus-client`, or the `metrics` extra), imported when a RunMetrics is made (this
module imports without it, as every module of the wheel does). Each run has its own CollectorRegistry
(never the global one), so runs and tests do not clash.

`RunMetrics` is the run's observer (streamrestore.runtime.pipeline.RunObserver): it is told of each frame
decoded, each backend call and each frame written, where the reports are fed. The counters the sources
keep (dropped, skipped, reconnects), the current FPS and the engine's queue depth are read when scraped.

With --cluster (streamrestore.runtime.cluster) the feeds and engines run in Ray actors: each keeps its
figures in plain Python (FeedFigures, EngineFigures: the nodes need no prometheus-client), and the driver's
ClusterMetrics serves the latest it polled, under the same names (`engine`: the engine actor's number).

Per feed (label `stream`):
  streamrestore_frames_decoded_total       frames in (decoded, before the latest policy may drop them)
  streamrestore_frames_encoded_total       frames out (written to the output and the report)
  streamrestore_frames_dropped_total       dropped by the latest-frame policy (the report's dropped)
  streamrestore_frames_skipped_total       undecodable frames skipped (the report's skipped)
  streamrestore_reconnects_total           reconnects of a live feed (the report's facts["reconnects"])
  streamrestore_fps                        frames written per second over the last FPS_WINDOW seconds
  streamrestore_end_to_end_seconds         histogram: decoded (or captured, for RTSP) -> encoded
  streamrestore_stage_seconds              histogram per `stage`: network, decode, upload, restore,
                                           download, fusion, encode (a batch's frames share its figures)
Per engine (label `engine`):
  streamrestore_batch_size                 histogram: frames per backend call
  streamrestore_engine_queue_depth         frames decoded and waiting for the engine
  streamrestore_engine_restore_seconds_total   time in backend calls (upload + restore + download, as the
                                           backend measures it: GPU time on CUDA)
  streamrestore_engine_restarts_total      (--cluster) times Ray restarted the engine actor
  streamrestore_engine_up                  (--cluster) 1, or 0 once the engine actor is lost for good
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import itertools
import threading
import time

from streamrestore.errors import UserError
from streamrestore.runtime.pipeline import Feed, RunObserver
from streamrestore.runtime.report import STAGES

# Seconds. End to end: a frame within a 200 fps budget up to a stalled feed's 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
FPS_WINDOW = 5.0  # seconds the current FPS is measured over
ENGINE = "0"  # the engine label of a run's one engine


class RunMetrics(RunObserver):
    """One run's metrics in `registry` (its own). `serve_metrics` puts them on an HTTP endpoint.

    Each feed keeps a FeedFigures and the engine an EngineFigures, as a cluster's actors do; a scrape reads
    them and serves them through the same collector as a cluster run (ClusterMetrics), so both serve one
    set of names, figures and help texts."""

    def __init__(self) -> None:
        self.served = ClusterMetrics(poll=self._poll)
        self.registry = self.served.registry
        self._feeds: dict[str, FeedFigures] = {}
        self._engine = EngineFigures()

    def started(self, feeds: list[Feed]) -> None:
        figures = {}
        for feed in feeds:  # every series exists (at 0) from the start
            figures[feed.name] = FeedFigures()
            figures[feed.name].started([feed])
        self._feeds = figures

    def decoded(self, feed: Feed, frame) -> None:
        self._feeds[feed.name].decoded(feed, frame)

    def restored(self, frames: int, timings: dict) -> None:
        self._engine.restored(frames, timings)

    def written(self, feed: Feed, frame) -> None:
        self._feeds[feed.name].written(feed, frame)

    def _poll(self) -> None:
        """The figures now, handed to the collector before each scrape."""
        for name, figures in self._feeds.items():
            self.served.feed(name, int(ENGINE), figures.figures())
        self.served.engine(int(ENGINE), self._engine.figures())


def _rate(instants: collections.deque) -> float:
    """Instants per second over the last FPS_WINDOW s (over their age, when younger); drops older ones but
    one, which says how long the feed has run."""
    now = time.monotonic()
    _trim(instants, now)
    if len(instants) < 2:
        return 0.0
    recent = sum(1 for t in instants if t >= now - FPS_WINDOW)
    return recent / min(FPS_WINDOW, now - instants[0])


def _trim(instants: collections.deque, now: float) -> None:
    """Drop the instants older than FPS_WINDOW s, keeping at least one (memory stays flat between scrapes)."""
    while len(instants) > 1 and instants[0] < now - FPS_WINDOW:
        instants.popleft()


class _Histogram:
    """A histogram's counts per bucket (the last: above every bound) and sum, in plain Python: what an actor
    keeps without prometheus-client."""

    def __init__(self, bounds: tuple) -> None:
        self.bounds, self.counts, self.sum = bounds, [0] * (len(bounds) + 1), 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in it
        self.sum += value

    def figures(self) -> tuple[list[int], float]:
        return list(self.counts), self.sum


class FeedFigures(RunObserver):
    """One feed's figures where it runs (a feed actor of streamrestore.runtime.cluster), in plain Python:
    `figures()` is what the driver's ClusterMetrics serves for it. The same figures as RunMetrics."""

    def __init__(self) -> None:
        self.feed: Feed | None = None
        self.decoded_frames = self.encoded_frames = 0
        self.end_to_end = _Histogram(LATENCY_BUCKETS)
        self.stages = {stage: _Histogram(STAGE_BUCKETS) for stage in STAGES[:-1]}
        self._written: collections.deque = collections.deque()
        self._lock = threading.Lock()

    def started(self, feeds: list[Feed]) -> None:
        (self.feed,) = feeds

    def decoded(self, feed: Feed, frame) -> None:
        self.decoded_frames += 1

    def written(self, feed: Feed, frame) -> None:
        timings = frame.timings
        with self._lock:
            self.encoded_frames += 1
            self.end_to_end.observe(timings.get("end_to_end", 0.0) / 1e3)
            for stage, histogram in self.stages.items():
                histogram.observe(timings.get(stage, 0.0) / 1e3)
            now = time.monotonic()
            self._written.append(now)
            _trim(self._written, now)

    def figures(self) -> dict:
        """The feed's figures now (counters since this actor started)."""
        source = self.feed.source if self.feed is not None else None
        with self._lock:
            return {"decoded": self.decoded_frames, "encoded": self.encoded_frames,
                    **{key: getattr(source, key, 0) for key in ("dropped", "skipped", "reconnects")},
                    "fps": _rate(self._written), "queue": self.feed.decoded.qsize() if self.feed else 0,
                    "end_to_end": self.end_to_end.figures(),
                    "stages": {stage: h.figures() for stage, h in self.stages.items()}}


class EngineFigures:
    """An engine actor's backend calls, in plain Python: frames per call and seconds in them."""

    def __init__(self) -> None:
        self.batch = _Histogram(BATCH_BUCKETS)
        self.restore_seconds = 0.0
        self._lock = threading.Lock()

    def restored(self, frames: int, timings: dict) -> None:
        with self._lock:
            self.batch.observe(frames)
            self.restore_seconds += sum(timings.get(stage, 0.0) for stage in ("upload", "restore", "download")) / 1e3

    def figures(self) -> dict:
        with self._lock:
            return {"batch": self.batch.figures(), "restore_seconds": self.restore_seconds}


class ClusterMetrics:
    """The collector of every run's metrics: the latest figures of each feed (FeedFigures, labelled `stream`,
    with its `engine`) and each engine (EngineFigures). A local run's RunMetrics hands them in before each
    scrape (`poll`); in a --cluster run, the driver's, the run updates them (streamrestore.runtime.cluster polls the actors; a
    feed's last figures come with its report). A restarted feed actor's counters begin again from 0, as a
    restarted process's do (its report, too, counts only its last start's frames).

    An engine actor's figures say its incarnation (how many times Ray restarted it): a restarted engine's
    counters begin again from 0 in its new process, so this keeps the totals of its earlier incarnations (their
    last figures polled) and serves their sum, which keeps growing across a restart; what a dead incarnation
    did after its last poll (at most the poll interval, 0.2 s) is not counted. Also per engine:
    streamrestore_engine_restarts_total and streamrestore_engine_up (0 once the engine is lost for good)."""

    def __init__(self, poll=None) -> None:
        """poll: called before each scrape to hand in the figures of the moment (RunMetrics: a run in this
        process, which has no engine restarts or lost engines to serve)."""
        from prometheus_client import CollectorRegistry

        self._poll = poll
        self.feeds: dict[str, tuple[str, dict]] = {}  # name -> (engine, figures)
        self.engines: dict[str, dict] = {}  # number -> its current incarnation's figures
        self._earlier: dict[str, dict] = {}  # number -> its earlier incarnations' figures added up
        self.lost: set[str] = set()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def feed(self, name: str, engine: int, figures: dict) -> None:
        with self._lock:
            self.feeds[name] = (str(engine), figures)

    def engine(self, number: int, figures: dict) -> None:
        """The figures of engine `number` now: those of its current incarnation (EngineFigures, "incarnation")."""
        key = str(number)
        with self._lock:
            last = self.engines.get(key)
            incarnation = figures.get("incarnation", 0)
            if last is not None and incarnation < last.get("incarnation", 0):
                return  # a late answer of an earlier incarnation
            if last is not None and incarnation > last.get("incarnation", 0):  # restarted: its counters began again
                self._earlier[key] = _added(self._earlier.get(key), last)
            self.engines[key] = figures

    def engine_lost(self, number: int) -> None:
        """Engine `number` is dead for good (its node lost): its figures stay, streamrestore_engine_up says 0."""
        with self._lock:
            self.lost.add(str(number))

    def engine_totals(self, number: int) -> dict:
        """Engine `number`'s figures over all its incarnations, with "restarts"."""
        key = str(number)
        with self._lock:
            current = self.engines.get(key, {"batch": ([0] * (len(BATCH_BUCKETS) + 1), 0.0), "restore_seconds": 0.0})
            return {**_added(self._earlier.get(key), current), "restarts": current.get("incarnation", 0)}

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        if self._poll is not None:
            self._poll()
        with self._lock:
            feeds, numbers, lost = dict(self.feeds), list(self.engines), set(self.lost)
        engines = {number: self.engine_totals(number) for number in numbers}
        counters = [CounterMetricFamily(f"streamrestore_{name}", text, labels=["stream"])
                    for name, text in (("frames_decoded", "Frames decoded (frames in)"),
                                       ("frames_encoded", "Frames encoded (frames out)"),
                                       ("frames_dropped", "Frames dropped by the latest-frame policy"),
                                       ("frames_skipped", "Undecodable frames skipped"),
                                       ("reconnects", "Reconnects of a live feed"))]
        fps = GaugeMetricFamily("streamrestore_fps", f"Frames written per second over the last {FPS_WINDOW:g} s",
                                labels=["stream"])
        end_to_end = HistogramMetricFamily("streamrestore_end_to_end_seconds", "Latency of a frame, decoded (an "
                                           "RTSP feed: captured) to encoded", labels=["stream"])
        stages = HistogramMetricFamily("streamrestore_stage_seconds", "Seconds a frame spent in each stage",
                                       labels=["stream", "stage"])
        depth = GaugeMetricFamily("streamrestore_engine_queue_depth", "Frames decoded and waiting for the engine",
                                  labels=["engine"])
        queued: dict[str, int] = {number: 0 for number in engines}
        for name, (engine, f) in feeds.items():
            for family, key in zip(counters, ("decoded", "encoded", "dropped", "skipped", "reconnects")):
                family.add_metric([name], f[key])
            fps.add_metric([name], f["fps"])
            end_to_end.add_metric([name], *_buckets(LATENCY_BUCKETS, *f["end_to_end"]))
            for stage, figures in f["stages"].items():
                stages.add_metric([name, stage], *_buckets(STAGE_BUCKETS, *figures))
            queued[engine] = queued.get(engine, 0) + f["queue"]
        batch = HistogramMetricFamily("streamrestore_batch_size", "Frames per backend call", labels=["engine"])
        seconds = CounterMetricFamily("streamrestore_engine_restore_seconds", "Seconds in backend calls (upload, "
                                      "restore, download as the backend measures them)", labels=["engine"])
        restarts = CounterMetricFamily("streamrestore_engine_restarts", "Times the engine actor was restarted",
                                       labels=["engine"])
        up = GaugeMetricFamily("streamrestore_engine_up", "1 while the engine actor lives or can be restarted, 0 "
                               "once it is lost for good (its node lost)", labels=["engine"])
        for number, f in engines.items():
            batch.add_metric([number], *_buckets(BATCH_BUCKETS, *f["batch"]))
            seconds.add_metric([number], f["restore_seconds"])
            restarts.add_metric([number], f["restarts"])
            up.add_metric([number], 0 if number in lost else 1)
        for number, count in queued.items():
            depth.add_metric([number], count)
        yield from (*counters, fps, end_to_end, stages, batch, seconds, depth)
        if self._poll is None:  # a cluster's actors
            yield from (restarts, up)


def _added(earlier: dict | None, figures: dict) -> dict:
    """EngineFigures' figures added up (None: nothing yet)."""
    if earlier is None:
        return {"batch": (list(figures["batch"][0]), figures["batch"][1]),
                "restore_seconds": figures["restore_seconds"]}
    counts = [a + b for a, b in zip(earlier["batch"][0], figures["batch"][0])]
    return {"batch": (counts, earlier["batch"][1] + figures["batch"][1]),
            "restore_seconds": earlier["restore_seconds"] + figures["restore_seconds"]}


def _buckets(bounds: tuple, counts: list[int], total: float) -> tuple[list, float]:
    """HistogramMetricFamily.add_metric's cumulative (le, count) buckets and sum, from counts per bucket."""
    from prometheus_client.utils import floatToGoString

    les = [floatToGoString(bound) for bound in bounds] + ["+Inf"]
    return list(zip(les, itertools.accumulate(counts))), total


@contextlib.contextmanager
def serve_metrics(port: int, host: str = "127.0.0.1", announce=None, metrics=None):
    """`metrics` (a RunMetrics unless given: a ClusterMetrics) served on http://host:port/metrics (port 0: a
    free one; `announce(url)` is called once with the address) until the block ends. UserError when the
    address cannot be listened on."""
    from prometheus_client import start_http_server

    metrics = metrics if metrics is not None else RunMetrics()
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise UserError(f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                        "pick another port, or 0 for a free one") from None
    metrics.port = server.server_address[1]
    metrics.url = f"http://{_url_host(host)}:{metrics.port}/metrics"
    if announce is not None:
        announce(metrics.url)
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
