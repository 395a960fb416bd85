"""Several feeds on a Ray cluster (`streamrestore run --streams streams.yaml --cluster ray://HOST:PORT`, or
`--cluster local` for a Ray started on this machine for the run). Ray (`pip install 'ray[client]'`, the
`cluster` extra) is imported only here, and this module only when --cluster is given.

- Engines: one engine actor per GPU of the cluster, or, on a cluster without GPUs, one per node. Each
  builds the backend on its own node and restores the frames of the feeds it serves, batching the
  requests that arrive together from different feeds (up to `batch` frames, waiting at most
  `batch_wait_ms` for a batch to fill; one backend call per frame size and form). A backend that converts
  colour itself (`takes_i420`: the torch backend on CUDA, passthrough) is sent a feed's frames as their
  decoded I420 planes, half the bytes of R'G'B', as in a local run.
- Feeds: one feed actor per feed, placed on its engine's node when that node has room (FEED_CPUS of its
  advertised CPUs: Ray's soft node affinity, spilling to another node when the node is full). It runs the local runtime
  (streamrestore.runtime.pipeline) for its one feed -- reading, the latest-frame policy, the temporal
  state, encoding, its report -- with the engine actor as its backend (`RemoteEngine`), so the reports
  hold the same figures as a local run; a record's `batch` is the engine's batch, frames of several feeds.
- Faults: a feed actor that dies (its process killed, its node lost) is restarted by Ray, up to
  `restarts` times, and runs again: its camera is connected afresh and its output is begun again
  under NAME.restartN.EXT (an rtsp:// output is published again); the dead one's unfinished file is
  removed, frames it had not finished in a file are lost. facts["restarts"] counts them (tested: a feed
  actor's process killed; its node lost). A call to a feed actor whose node is lost fails in Ray without
  a retry (ActorUnavailableError): the driver sends it again until the restarted actor answers.
  An engine actor is pinned to its node: Ray restarts it there if its process dies and retries its calls
  (tested: its process killed mid-run, every feed wrote all its frames); facts["engine_restarts"] counts
  the restarts of the engines that served the feed, the metrics the restarts of each engine (and keep
  its counters growing across them). When its node is lost Ray cannot restart it (it is declared dead
  once Ray's health checks find the node gone, about 15 s by default): the feeds it served are moved to
  the live engine serving fewest (the run's directory actor, on the head, keeps who serves whom), their
  calls sent again there; facts["engine_moves"] lists each move with the lost node (tested: the second
  node of two killed mid-run, every feed wrote all its frames). Only when no engine is left does a feed
  fail, naming the lost node. A feed that fails for good is named in its report's facts["error"] and
  the others carry on, as in a local run.
- Paths are the feed actors' nodes' paths: a local cluster shares this machine's files; on a real cluster
  inputs and outputs must be reachable at the same path on every node (or be rtsp:// URLs).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from streamrestore.errors import UserError

NAMESPACE = "streamrestore"
_POLL = 0.2
# What a feed actor reserves in Ray's books. Not 0: Ray places an actor that asks for no resources on a random
# node whatever its soft node affinity says (ClusterResourceScheduler::GetBestSchedulableNode: "the zero cpu
# actor is a special case ... except for HARD node affinity"), which put about half the feeds on another node
# than their engine's (measured: 17 of 32 on two nodes; 0 of 32 with a CPU fraction). 1/100 of a CPU: a node
# takes 100 feeds per CPU it advertises before its feeds spill to another node (_spill_on_unavailable).
FEED_CPUS = 0.01


def check_address(address: str) -> str:
    """`local` or ray://HOST:PORT (UserError otherwise)."""
    if address == "local" or (address.startswith("ray://") and ":" in address[len("ray://"):]):
        return address
    raise UserError(f"--cluster {address!r}: give ray://HOST:PORT (the head's Ray client port, 10001 by default) "
                    "or local")


class _Engine:
    """The engine actor's work: requests (frames, previous, future) from any feed, merged into batches.

    A batch is sent when it holds `batch` frames, when `batch_wait_ms` has passed since its first request, or
    as soon as every feed attached to this engine has a request in it: a feed waits for its request before
    sending the next when it keeps a temporal state (one frame in flight), and has already waited for its own
    share of the batch otherwise, so waiting longer would only add latency (it cost denoise on two feeds
    30 ms a frame, 2.5x its FPS, before)."""

    def __init__(self, make_backend: Callable[[], tuple], batch: int, batch_wait_ms: float | None,
                 run: str | None = None, number: int = 0) -> None:
        self.error: Exception | None = None
        self.incarnation = 0  # how many times Ray has restarted this engine actor (the run's directory counts)
        if run is not None:
            import ray

            self.incarnation = ray.get(ray.get_actor(f"{run}/directory").next.remote(f"engine/{number}"))
        try:
            self.backend, self.facts = make_backend()
        except Exception as exc:  # noqa: BLE001 - said by describe(); an actor failing here would be retried
            self.backend, self.error = None, exc
            return
        from streamrestore.runtime.metrics import EngineFigures

        self.batch, self.wait = batch, (batch_wait_ms or 0.0) / 1e3
        self.counts = EngineFigures()
        self.attached: set[str] = set()
        self.requests: queue.Queue = queue.Queue()
        self._held = None  # a request kept for the next batch (it would have taken this one past `batch`)
        threading.Thread(target=self._loop, name="engine", daemon=True).start()

    def describe(self) -> dict:
        """What runs here, or {"error": why the backend could not be built}."""
        if self.error is not None:
            return {"error": self.error}
        b = self.backend
        return {"name": b.name, "device": b.device, "precision": b.precision, "model": b.model,
                "temporal": bool(getattr(b, "temporal", False)), "takes_i420": bool(getattr(b, "takes_i420", False)),
                "facts": self.facts, "node": _node_id(), "pid": os.getpid()}

    def figures(self) -> dict:
        """This engine's backend calls so far (streamrestore.runtime.metrics.EngineFigures) in this incarnation
        (0: the first; ClusterMetrics adds up the incarnations' figures)."""
        return {**self.counts.figures(), "incarnation": self.incarnation}

    def attach(self, feed: str) -> None:
        """`feed` sends requests (the driver attaches every feed at the start; a restarted feed actor again)."""
        self.attached.add(feed)

    def detach(self, feed: str) -> None:
        """`feed` has ended: batches no longer wait for it."""
        self.attached.discard(feed)
        self.requests.put(None)  # wakes a batch that is waiting for it

    def restore(self, frames: np.ndarray, previous: np.ndarray | None = None, feed: str = "", ycbcr=None):
        """(restored frames, timings of the backend call they were part of, with its "batch" size). With
        `ycbcr` (when the backend `takes_i420`) the frames are I420 planes so coded, and so is the result."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self.attached.add(feed)  # a restarted engine learns its feeds again from their requests
        self.requests.put((frames, previous, done, feed, ycbcr))
        return done.result()

    def _loop(self) -> None:
        while True:
            taken = self._take()
            groups: dict[tuple, list] = {}
            for request in taken:  # one backend call per frame size and form (R'G'B', or I420 in one coding)
                groups.setdefault((request[0].shape[1:], request[4]), []).append(request)
            for group in groups.values():
                self._call(group)

    def _take(self) -> list:
        """The next batch's requests (class docstring), at most `batch` frames: a request that would take the
        batch past it waits for the next one (a request of more frames than `batch` goes alone)."""
        first, self._held = self._held, None
        while first is None:
            first = self.requests.get()
        taken, count, deadline = [first], len(first[0]), time.monotonic() + self.wait
        while count < self.batch and not self.attached <= {request[3] for request in taken}:
            remaining = deadline - time.monotonic()
            try:  # what is queued already is taken even after the deadline
                request = self.requests.get(timeout=remaining) if remaining > 0 else self.requests.get_nowait()
            except queue.Empty:
                break
            if request is None:
                continue
            if count + len(request[0]) > self.batch:
                self._held = request
                break
            taken.append(request)
            count += len(request[0])
        return taken

    def _call(self, group: list) -> None:
        try:
            frames, ycbcr = np.concatenate([request[0] for request in group]), group[0][4]
            if ycbcr is not None and not getattr(self.backend, "takes_i420", False):
                # planes from a feed moved here from a lost engine that took them: converted on this node
                from streamrestore.io.ycbcr import frame_to_i420, i420_to_rgb, rgb_to_frame

                restored = self.backend(np.stack([i420_to_rgb(planes, ycbcr) for planes in frames]))
                restored = np.stack([frame_to_i420(rgb_to_frame(image, ycbcr)) for image in restored])
                timings = self.backend.last_timings
            elif ycbcr is not None:
                pending = self.backend.submit(frames, ycbcr=ycbcr)
                restored, timings = pending.result(), pending.timings
            elif getattr(self.backend, "temporal", False):
                restored = self.backend(frames, np.concatenate([request[1] for request in group]))
                timings = self.backend.last_timings
            else:
                restored, timings = self.backend(frames), self.backend.last_timings
            timings = {**timings, "batch": len(frames)}
            self.counts.restored(len(frames), timings)
        except BaseException as exc:  # noqa: BLE001 - each caller gets the error
            for request in group:
                request[2].set_exception(exc)
            return
        at = 0
        for request in group:
            request[2].set_result((restored[at: at + len(request[0])], timings))
            at += len(request[0])


class RemoteEngine:
    """A backend (streamrestore.backends.base) whose calls go to an engine actor: what a feed actor's local
    runtime restores with. `submit` returns at once, so two batches of the feed are in flight; it takes I420
    planes (`takes_i420`) when the engine's backend does.

    `connect(lost)` gives (engine actor, its number): the engine that serves this feed, another one when `lost`
    (the number of an engine found dead for good) is given. A call to an engine that Ray says is unavailable
    (its process or node down, Ray not yet sure which) is sent again every UNAVAILABLE_RETRY s until it is
    answered or the engine is known dead; a dead engine's calls go to the engine `connect` gives."""

    UNAVAILABLE_RETRY = 0.5
    UNAVAILABLE_LIMIT = 300.0  # Ray declares a silent node dead well before this (its health checks: ~15 s)

    def __init__(self, info: dict, feed: str = "", connect: Callable | None = None, engine=None,
                 number: int = 0) -> None:
        self.engine, self.number, self.feed, self.connect = engine, number, feed, connect
        self.name, self.device, self.precision, self.model = info["name"], info["device"], info["precision"], info["model"]
        self.temporal, self.takes_i420 = info["temporal"], info["takes_i420"]
        self.asynchronous = not self.temporal  # a temporal state needs each frame restored before the next
        self.last_timings: dict = {}

    def __call__(self, frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        restored, self.last_timings = self._get(self._send(frames, previous), frames, previous)
        return restored

    def submit(self, frames: np.ndarray, ycbcr=None):
        """Frames on their way to the engine: R'G'B', or I420 planes coded as `ycbcr` when `takes_i420`."""
        return _Pending(self, frames, self._send(frames, None, ycbcr), ycbcr)

    def _send(self, frames: np.ndarray, previous: np.ndarray | None, ycbcr=None):
        return self.engine.restore.remote(frames, previous, self.feed, ycbcr)

    def _get(self, ref, frames: np.ndarray, previous: np.ndarray | None, ycbcr=None):
        import ray

        unavailable_since = None
        while True:
            try:
                return ray.get(ref)
            except ray.exceptions.ActorUnavailableError:  # down for now: restarted, or declared dead, soon
                unavailable_since = unavailable_since or time.monotonic()
                if time.monotonic() - unavailable_since > self.UNAVAILABLE_LIMIT:
                    raise
                time.sleep(self.UNAVAILABLE_RETRY)
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnschedulableError):
                if self.connect is None:  # dead for good (its node lost, or its restarts spent)
                    raise
                self.engine, self.number = self.connect(self.number)
                unavailable_since = None
            ref = self._send(frames, previous, ycbcr)


class _Pending:
    def __init__(self, engine: RemoteEngine, frames: np.ndarray, ref, ycbcr=None) -> None:
        self.engine, self.frames, self.ref, self.ycbcr, self.timings = engine, frames, ref, ycbcr, {}

    def result(self) -> np.ndarray:
        restored, self.timings = self.engine._get(self.ref, self.frames, None, self.ycbcr)
        return restored


class _Directory:
    """The run's book, an actor on the head node that restarted actors find by name: how many times each feed
    and engine actor has started, which engine serves each feed, and the engines lost (dead for good: their
    node lost, or their restarts spent), whose feeds it moves to the live engine serving fewest."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes  # engine number -> its node
        self.started: dict[str, int] = {}
        self.serving: dict[str, int] = {}
        self.lost: set[int] = set()
        self.moves: dict[str, list] = {}

    def next(self, name: str) -> int:
        """How many times `name` ("feed/NAME", "engine/N") had started before (0: this is its first start)."""
        self.started[name] = self.started.get(name, -1) + 1
        return self.started[name]

    def engine_restarts(self, numbers: list[int]) -> int:
        return sum(max(self.started.get(f"engine/{number}", 0), 0) for number in numbers)

    def engine(self, feed: str, first: int, lost: int | None = None) -> int | None:
        """The engine serving `feed` (`first`: its engine at the start), another one if it serves from an engine
        `lost` (the caller found it dead for good); None when every engine is lost."""
        if lost is not None:
            self.lost.add(lost)
        current = self.serving.setdefault(feed, first)
        if current in self.lost:
            live = [number for number in range(len(self.nodes)) if number not in self.lost]
            if not live:
                return None
            load = {number: list(self.serving.values()).count(number) for number in live}
            moved = min(live, key=lambda number: (load[number], number))
            self.moves.setdefault(feed, []).append({"from": current, "to": moved, "lost_node": self.nodes[current]})
            self.serving[feed] = moved
        return self.serving[feed]

    def feed(self, name: str, first: int) -> tuple[list, int]:
        """(the moves of feed `name` from lost engines, restarts of the engines that served it)."""
        moves = list(self.moves.get(name, []))
        return moves, self.engine_restarts(sorted({first, *(move["to"] for move in moves)}))


class _Feed:
    """The feed actor's work: the local runtime for one feed, its backend the engine actor."""

    def __init__(self, spec, open_source, open_sink, run: str, engine: int, infos: list[dict], options: dict) -> None:
        import ray  # the run's directory by name: a restarted actor finds it again

        from streamrestore.backends.threads import ThreadPlan

        self.run_name, self.first, self.infos = run, engine, infos
        self.directory = ray.get_actor(f"{run}/directory")
        self.restarts = ray.get(self.directory.next.remote(f"feed/{spec.name}"))
        self.spec = spec if self.restarts == 0 else _restarted(spec, self.restarts)
        self.open_source, self.open_sink, self.options = open_source, open_sink, options
        from streamrestore.runtime.metrics import FeedFigures

        self.backend = RemoteEngine(infos[engine], spec.name, self._connect, number=engine)
        self.stopping = threading.Event()
        self.lock, self.running = threading.Lock(), None
        self.observer = FeedFigures()
        ThreadPlan(inference=1, opencv=1, spin=False).apply(torch_threads=False)  # the fusion stage's OpenCV,
        # as in a local run (the model's threads are the engine's)

    def _connect(self, lost: int | None = None) -> tuple:
        """(engine actor, its number) serving this feed, attached; `lost`: the engine it served from is dead."""
        import ray

        name = self.spec.name
        number = ray.get(self.directory.engine.remote(name, self.first, lost))
        unavailable_since = None
        while True:
            if number is None:
                node = self.infos[lost if lost is not None else self.first]["node"]
                raise RuntimeError(f"its engine was lost with node {node} and no engine is left on another node")
            try:
                engine = ray.get_actor(f"{self.run_name}/engine/{number}")
                ray.get(engine.attach.remote(name))
                return engine, number
            except ray.exceptions.ActorUnavailableError:
                unavailable_since = unavailable_since or time.monotonic()
                if time.monotonic() - unavailable_since > RemoteEngine.UNAVAILABLE_LIMIT:
                    raise
                time.sleep(RemoteEngine.UNAVAILABLE_RETRY)
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnschedulableError, ValueError):
                lost, unavailable_since = number, None  # ValueError: no actor by that name (gone)
                number = ray.get(self.directory.engine.remote(name, self.first, lost))

    def pid(self) -> int:
        return os.getpid()

    def _detach(self) -> None:
        import ray

        if self.backend.engine is None:
            return
        try:  # awaited: the run may end (and its engines go) as soon as this feed returns
            ray.get(self.backend.engine.detach.remote(self.spec.name), timeout=10)
        except (ray.exceptions.RayError, TimeoutError):
            pass  # the engine is gone: nothing waits for this feed

    def stop(self) -> None:
        self.stopping.set()

    def figures(self) -> dict:
        """This feed's figures so far (streamrestore.runtime.metrics.FeedFigures), for the driver's endpoint,
        with the number of the engine serving it."""
        return {**self.observer.figures(), "engine": self.backend.number}

    def run(self):
        """(report, spec, figures) of this feed. Asked again (the driver could not tell whether this actor was
        lost), it answers with its first run's, never runs the feed twice."""
        with self.lock:
            first, self.running = self.running is None, self.running or concurrent.futures.Future()
        if not first:
            return self.running.result()
        try:
            self.running.set_result(self._run())
        except BaseException as exc:
            self.running.set_exception(exc)
        return self.running.result()

    def _run(self):
        import ray

        from streamrestore.runtime.pipeline import run_streams

        try:
            self.backend.engine, self.backend.number = self._connect()
            (report,) = run_streams([self.spec], self.backend, open_source=self.open_source,
                                    open_sink=self.open_sink, stop=self.stopping, observer=self.observer,
                                    **self.options)
        except Exception as exc:  # noqa: BLE001 - the engine failed: this feed's error
            from streamrestore.runtime.report import LatencyReport

            report = LatencyReport(facts={**self.options.get("facts", {}), "stream": self.spec.name,
                                          "input": self.spec.input, "output": self.spec.output,
                                          "reconnects": 0, "error": f"{exc.__class__.__name__}: {exc}"})
        finally:
            self._detach()
        moves, engine_restarts = ray.get(self.directory.feed.remote(self.spec.name, self.first))
        number = self.backend.number
        if number != self.first:  # moved from a lost engine: the facts of the engine that served it last
            first = self.infos[self.first]["facts"]
            report.facts.update({key: value for key, value in self.infos[number]["facts"].items()
                                 if first.get(key) != value})
        report.facts.update(restarts=self.restarts, node=_node_id(), engine=number,
                            engine_node=self.infos[number]["node"], engine_restarts=engine_restarts,
                            engine_moves=moves)
        return report, self.spec, self.observer.figures()


def _restarted(spec, number: int):
    """The spec of a restarted feed actor: a file output begun again as NAME.restartN.EXT, the dead actor's
    unfinished hidden file (the write guard's .NAME.partial-PID.EXT) removed."""
    if "://" in spec.output:
        return spec
    path = Path(spec.output)
    stale_files = [*path.parent.glob(f".{path.stem}.partial-*{path.suffix}"),
                   *path.parent.glob(f".{path.stem}.restart*.partial-*{path.suffix}")]
    for stale in stale_files:
        pid = stale.name.rsplit(".partial-", 1)[1].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    return dataclasses.replace(spec, output=str(path.with_name(f"{path.stem}.restart{number}{path.suffix}")))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12]


def run_cluster(address: str, specs: list, *, make_backend: Callable[[], tuple],
                open_source: Callable, open_sink: Callable, batch: int = 8, batch_wait_ms: float | None = 30.0,
                fusion: bool = False, stop: threading.Event | None = None, restarts: int = 3,
                metrics=None) -> list:
    """Restore `specs` (StreamSpec) on the Ray cluster at `address` (module docstring): returns one
    LatencyReport per spec, as run_streams does, with its engine's facts and the feed's engine, node and
    restarts. Each callable is sent to the actors (cloudpickle): `make_backend()` runs on each engine's
    node and returns (backend, the facts of the reports of the feeds it serves: backend, threads, ...);
    `open_source(spec)`/`open_sink(spec, info)` run on the feed's. `metrics` (a ClusterMetrics of
    streamrestore.runtime.metrics, or None) is given the feeds' and engines' figures while the run lasts
    (polled every 0.2 s) and each feed's last figures with its report."""
    import logging

    import ray

    check_address(address)
    if ray.is_initialized():
        ray.shutdown()
    for attempt in range(3):  # a Ray client server that is busy (starting the last client's) fails the first try
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR,
                     **({"include_dashboard": False} if address == "local" else {}))  # local: always a new Ray
            break
        except ConnectionAbortedError:
            if attempt == 2:
                raise UserError(f"--cluster {address}: the Ray client server did not start a session for this "
                                "run (3 tries); check the head's logs") from None
            time.sleep(2.0)
        except Exception as exc:  # noqa: BLE001 - a one-line refusal, whatever Ray raised
            raise UserError(f"--cluster {address}: cannot connect ({exc.__class__.__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    try:
        return _run(ray, specs, make_backend, open_source, open_sink, batch, batch_wait_ms, fusion,
                    stop or threading.Event(), restarts, metrics)
    finally:
        ray.shutdown()


def _placements(ray) -> list[dict]:
    """Where engines go: one per GPU where the cluster has GPUs, else one per node; the head's first (engine 0
    is on the head, which a run cannot lose)."""
    nodes = sorted((n for n in ray.nodes() if n.get("Alive")),
                   key=lambda n: "node:__internal_head__" not in n["Resources"])
    gpus = [(n, i) for n in nodes for i in range(int(n["Resources"].get("GPU", 0)))]
    if gpus:
        return [{"node": n["NodeID"], "num_gpus": 1} for n, _ in gpus]
    return [{"node": n["NodeID"], "num_gpus": 0} for n in nodes]


def _head(ray) -> str | None:
    """The head node's id (Ray marks it with the resource node:__internal_head__)."""
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node["Resources"]:
            return node["NodeID"]
    return None


def _run(ray, specs, make_backend, open_source, open_sink, batch, batch_wait_ms, fusion, stop, restarts, metrics):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    run = uuid.uuid4().hex[:12]  # this run's actor names: a cluster may still hold an earlier run's
    engine_class = ray.remote(_Engine)
    feed_class = ray.remote(_Feed)
    places = _placements(ray)[: len(specs)]  # no more engines than feeds
    head = _head(ray)
    on_head = {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=False)} if head else {}
    directory = ray.remote(_Directory).options(num_cpus=0, name=f"{run}/directory", **on_head).remote(
        [p["node"][:12] for p in places])  # on the head: it outlives any other node; found by name, this
    # handle keeps it alive until the run ends
    served = [len(range(at, len(specs), len(places))) for at in range(len(places))]  # feeds per engine
    engines = [engine_class.options(num_cpus=0, num_gpus=p["num_gpus"], max_concurrency=max(64, 4 * len(specs)),
                                    name=f"{run}/engine/{number}",
                                    max_restarts=restarts, max_task_retries=restarts,
                                    scheduling_strategy=NodeAffinitySchedulingStrategy(p["node"], soft=False)
                                    ).remote(make_backend, batch, batch_wait_ms, run, number)
               for number, p in enumerate(places)]
    infos = ray.get([engine.describe.remote() for engine in engines])
    for info in infos:
        if "error" in info:  # the backend could not be built (a UserError says what to do, as a local run does)
            raise info["error"]
    ray.get([engines[number % len(engines)].attach.remote(spec.name) for number, spec in enumerate(specs)])  # every
    # feed from the start: a batch waits (up to the batch wait) for a feed whose actor has not started yet
    feeds = []
    for number, spec in enumerate(specs):
        at = number % len(engines)
        info = infos[at]
        engine_facts = {**info["facts"], "engine": at, "engine_node": info["node"]}
        share = -(-batch // served[at])  # a feed's part of its engine's batch: the engine merges the feeds' parts
        options = {"batch": share, "batch_wait_ms": batch_wait_ms, "facts": engine_facts, "fusion": fusion}
        actor = feed_class.options(num_cpus=FEED_CPUS, max_concurrency=4, max_restarts=restarts,
                                   max_task_retries=restarts, name=f"{run}/feed/{spec.name}",
                                   scheduling_strategy=NodeAffinitySchedulingStrategy(
                                       places[at]["node"], soft=True, _spill_on_unavailable=True)
                                   ).remote(spec, open_source, open_sink, run, at, infos, options)
        feeds.append((spec, actor, actor.run.remote(), engine_facts))
    reports: dict[str, object] = {}
    pending = {ref: (spec, engine_facts, actor, None) for spec, actor, ref, engine_facts in feeds}
    later: list[tuple] = []  # (when, spec, engine_facts, actor, unavailable since): feeds to ask again
    poll = _Poll(ray, metrics, engines, pending, reports)
    stopped = False
    while pending or later:
        poll()
        if stop.is_set() and not stopped:
            stopped = True
            for _, _, actor, _ in pending.values():
                actor.stop.remote()
        for entry in [entry for entry in later if entry[0] <= time.monotonic()]:
            later.remove(entry)
            _, spec, engine_facts, actor, since = entry
            pending[actor.run.remote()] = (spec, engine_facts, actor, since)  # queued until Ray has restarted it
            if stopped:
                actor.stop.remote()
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL) if pending else ([], [])
        if not pending:
            time.sleep(_POLL)
        for ref in ready:
            spec, engine_facts, actor, since = pending.pop(ref)
            try:
                report, spec, figures = ray.get(ref)
                if metrics is not None:
                    metrics.feed(spec.name, report.facts["engine"], figures)  # its last figures: the report's
            except ray.exceptions.ActorUnavailableError as exc:
                # its node lost or out of reach (Ray cannot yet say which): the call is not retried by Ray, but
                # the actor is restarted elsewhere once the node is declared dead; a live actor answers the call
                # sent again with the first call's report (_Feed.run)
                since = since or time.monotonic()
                if time.monotonic() - since < RemoteEngine.UNAVAILABLE_LIMIT:
                    later.append((time.monotonic() + RemoteEngine.UNAVAILABLE_RETRY, spec, engine_facts, actor,
                                  since))
                    continue
                report = _failed(spec, engine_facts, restarts, exc)
            except ray.exceptions.RayError as exc:
                report = _failed(spec, engine_facts, restarts, exc)
            if report.facts.get("error") and "engine_moves" not in report.facts:
                try:
                    moves, report.facts["engine_restarts"] = ray.get(directory.feed.remote(spec.name,
                                                                                           engine_facts["engine"]))
                    report.facts["engine_moves"] = moves
                except ray.exceptions.RayError:
                    pass
                for engine in engines:  # its engine no longer waits for it
                    engine.detach.remote(spec.name)
            reports[spec.name] = report
    poll.last()
    ray.kill(directory)
    return [reports[spec.name] for spec in specs]


class _Poll:
    """The driver's polling of the actors' figures for `metrics` (nothing without): one request in flight per
    actor, taken when answered; a feed whose report is in keeps the figures that came with it."""

    def __init__(self, ray, metrics, engines: list, pending: dict, reports: dict) -> None:
        self.ray, self.metrics, self.engines = ray, metrics, engines
        self.pending, self.reports = pending, reports
        self.asked: dict = {}  # ref -> ("feed", name, engine) or ("engine", number, None)
        self.lost: set[int] = set()  # engines dead for good

    def __call__(self) -> None:
        if self.metrics is None:
            return
        if self.asked:
            ready, _ = self.ray.wait(list(self.asked), num_returns=len(self.asked), timeout=0)
            for ref in ready:
                self._take(ref, *self.asked.pop(ref))
        waiting = {(kind, key) for kind, key, _ in self.asked.values()}
        for spec, facts, actor, _ in list(self.pending.values()):
            if ("feed", spec.name) not in waiting:
                self.asked[actor.figures.remote()] = ("feed", spec.name, facts["engine"])
        for number, engine in enumerate(self.engines):
            if ("engine", number) not in waiting and number not in self.lost:
                self.asked[engine.figures.remote()] = ("engine", number, None)

    def _take(self, ref, kind: str, key, engine) -> None:
        errors = self.ray.exceptions
        try:
            figures = self.ray.get(ref)
        except (errors.ActorDiedError, errors.ActorUnschedulableError):
            if kind == "engine":  # dead for good (its node lost): no longer asked
                self.lost.add(key)
                self.metrics.engine_lost(key)
            return
        except errors.RayError:
            return  # an actor lost or restarting: its next answer counts
        if kind == "engine":
            self.metrics.engine(key, figures)
        elif key not in self.reports:
            self.metrics.feed(key, figures.get("engine", engine), figures)

    def last(self) -> None:
        """Every engine's figures once its feeds have ended (the engines' last calls are in them)."""
        if self.metrics is None:
            return
        errors = self.ray.exceptions
        for number, engine in enumerate(self.engines):
            if number in self.lost:
                continue
            try:
                self.metrics.engine(number, self.ray.get(engine.figures.remote(), timeout=30))
            except (errors.ActorDiedError, errors.ActorUnschedulableError):
                self.metrics.engine_lost(number)
            except (errors.RayError, TimeoutError):
                pass


def _failed(spec, facts: dict, restarts: int, exc: Exception):
    from streamrestore.runtime.report import LatencyReport

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return LatencyReport(facts={**facts, "stream": spec.name, "input": spec.input, "output": spec.output,
                                "reconnects": 0, "restarts": restarts,
                                "error": f"the feed's actor died and was not restarted ({first})"})
