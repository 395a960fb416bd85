"""`streamrestore run INPUT --task TASK -o OUTPUT`: restore a video file, an image or a folder of images;
`streamrestore run --streams streams.yaml`: several feeds on one engine (streamrestore.runtime.pipeline)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path

import av

from streamrestore.backends.registry import BACKEND_NAMES, PRECISION_NAMES, check_precision, create_backend
from streamrestore.cli.live import add_live_arguments, apply_profile, check_outputs, live_source_options, open_output
from streamrestore.errors import UserError
from streamrestore.io import is_live, open_sink, open_source
from streamrestore.io.encoding import ALL_TUNES, PRESETS
from streamrestore.io.images import is_image_path
from streamrestore.io.video import default_codec
from streamrestore.cli.options import add_second_time, add_self_ensemble, choice, positive_float, positive_int, sampling_steps
from streamrestore.io.outputs import Read, Write, check_writes, weights_reads
from streamrestore.runtime.pipeline import run_pipeline, run_streams
from streamrestore.runtime.report import LatencyReport
from streamrestore.runtime.streams import StreamSpec, load_streams
from streamrestore.tasks import check_task

CRF_MAX = {"libx264": 51, "libx265": 51}  # other encoders (vp9, av1) take 0-63


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="restore a video file, an image or a folder of images",
                              description=__doc__)
    p.add_argument("input", metavar="INPUT", nargs="?", help="video file, image file, folder of images, rtsp:// URL, or `sample` (the built-in clip)")
    p.add_argument("--task", required=True, help="derain, denoise, deblur, lowlight, or passthrough (identity)")
    p.add_argument("-o", "--output", metavar="OUTPUT",
                   help="video file (.mp4, .mkv, ...), image file, folder (PNG), folder/*.jpg, or rtsp:// URL")
    p.add_argument("--steps", type=sampling_steps("--steps"), default=1, help="sampling steps (default 1)")
    add_second_time(p)
    add_self_ensemble(p)
    p.add_argument("--backend", choices=BACKEND_NAMES, default="auto")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--compile", action="store_true",
                   help="torch backend through torch.compile (CUDA graphs on CUDA): faster once compiled, "
                        "which takes tens of seconds per frame size")
    p.add_argument("--precision", type=choice("--precision", PRECISION_NAMES),
                   help="fp32, fp16, bf16 or int8 (default: fp16 on CUDA, fp32 on the CPU); bf16: --backend openvino "
                        "on a CPU with AVX-512 BF16 or AMX; int8: openvino or onnxruntime, calibrated on the "
                        "training photographs (--calibration-data)")
    p.add_argument("--calibration-data", metavar="FOLDER",
                   help="clean photographs int8 calibrates on (default: $STREAMRESTORE_CALIBRATION_DATA, else the "
                        "checkout's ../shared/data/clean); every 6th by name is held out, as in train")
    p.add_argument("--threads", type=positive_int("--threads"),
                   help="inference threads (default: the cores other processes leave idle, by the 1-minute load "
                        "average); the thread plan (streamrestore.backends.threads) "
                        "also keeps OpenCV at 1 thread per call and onnxruntime's workers from spin-waiting")
    p.add_argument("--batch", type=positive_int("--batch"), help="frames per model call (default 1: lowest latency)")
    p.add_argument("--noise", choices=("fixed", "fresh", "zero"),
                   help="sampling noise: fixed per stream, fresh per frame, or zero (default: the policy the "
                        "model card recommends, measured to flicker least)")
    p.add_argument("--weights", help="checkpoint file instead of the task's shipped one")
    p.add_argument("--temporal", choices=("auto", "on", "off"), default="auto",
                   help="use the frames before this one: the motion-compensated recursive fusion stage after the "
                        "model, and the task's video model where one is shipped (auto: on for video files, "
                        "live feeds and the sample clip, off for images)")
    p.add_argument("--codec", help="video encoder (default libx264; libvpx-vp9 for .webm)")
    p.add_argument("--crf", type=positive_int("--crf", minimum=0, maximum=63), help="encoder quality, 0 = lossless (default: the encoder's)")
    p.add_argument("--preset", type=choice("--preset", PRESETS),
                   help="x264/x265 speed: ultrafast ... placebo (default: veryfast for live feeds, medium for files)")
    p.add_argument("--tune", type=choice("--tune", ALL_TUNES),
                   help="x264/x265 tune, e.g. zerolatency, film, grain (default: zerolatency for live feeds, none for files)")
    p.add_argument("--report", metavar="JSON", help="write per-frame latencies and the summary as JSON")
    p.add_argument("--csv", metavar="CSV", help="write per-frame latencies as CSV")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    m = p.add_argument_group("metrics (needs prometheus-client)")
    m.add_argument("--metrics-port", type=positive_int("--metrics-port", minimum=0, maximum=65535), metavar="PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics while the run lasts "
                        "(0: a free port, printed on stderr)")
    m.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address the metrics endpoint listens on (default 127.0.0.1: this machine only)")
    c = p.add_argument_group("cluster (needs Ray)")
    c.add_argument("--cluster", metavar="ADDRESS",
                   help="run the --streams feeds on a Ray cluster: ray://HOST:PORT (its head's client port), or "
                        "local (a Ray started on this machine for the run); one engine per GPU, or per node")
    m.add_argument("--metrics-linger", type=positive_float("--metrics-linger"), metavar="S",
                   help=argparse.SUPPRESS)  # keep serving S s after the run (a last scrape); a signal ends it
    add_live_arguments(p)
    p.set_defaults(handler=main)


def check_codec(name: str | None, crf: int | None, output: str | None = None, option: str = "-o") -> None:
    """UserError unless `name` is a video encoder PyAV has, the container of the video file `output` can
    hold the encoder used (`name`, else the one its suffix picks) and `crf` is within that encoder's range."""
    if name is not None:
        try:
            codec = av.Codec(name, "w")
        except (av.FFmpegError, ValueError):
            raise UserError(f"--codec {name!r}: no such encoder in this FFmpeg; try libx264, libx265, "
                            "libvpx-vp9, mpeg4 or ffv1") from None
        if codec.type != "video":
            raise UserError(f"--codec {name!r} is a {codec.type} encoder; give a video encoder such as libx264")
    encoder = name or ("libx264" if not output or is_live(output) else default_codec(output))
    if output and _video_file(output):
        _check_container(encoder, output, option, given=name is not None)
    limit = CRF_MAX.get(encoder, 63)
    if crf is not None and crf > limit:
        raise UserError(f"--crf {crf} is out of range for {encoder}{'' if name else f' (the encoder for {output})'}"
                        f"; use 0 to {limit}")


def _video_file(output: str) -> bool:
    """OUTPUT names a video file (not rtsp://, an image, a folder of images or a name without suffix)."""
    path = Path(output)
    return not (is_live(output) or is_image_path(output) or output.endswith(("/", os.sep)) or path.is_dir()
                or path.name.startswith("*.") or not path.suffix)


def _holds(encoder: str, output: str) -> bool | None:
    """Whether FFmpeg's muxer for `output`'s suffix takes `encoder` (PyAV asks it when adding the stream;
    nothing is written); None when FFmpeg has no muxer for that suffix (the sink says so in one line)."""
    try:
        container = av.open(output, "w")
    except (av.FFmpegError, ValueError, OSError):
        return None
    try:
        container.add_stream(encoder)
        return True
    except ValueError:  # "'mp4' format does not support 'rawvideo' codec"
        return False
    finally:
        container.close()


def _check_container(encoder: str, output: str, option: str, given: bool) -> None:
    if _holds(encoder, output) is not False:
        return
    kind = Path(output).suffix
    other = default_codec(output)
    hint = f"use --codec {other}" if other != encoder and _holds(other, output) else "leave --codec out"
    if _holds(encoder, "x.mkv"):
        hint += " or a .mkv OUTPUT"
    what = f"--codec {encoder}" if given else f"its default encoder {encoder}"
    raise UserError(f"{option} {output}: a {kind} file cannot hold {what}; {hint}")


def main(args: argparse.Namespace) -> int:
    check_metrics(args)  # before any work
    check_cluster(args)
    check_task(args.task)
    check_precision(args.backend, args.precision, args.compile)  # before any input is opened
    if args.streams:
        check_codec(args.codec, None)  # the container and --crf range: per feed output, in _run_streams
    else:
        check_codec(args.codec, args.crf, args.output)
    apply_profile(args)
    if args.streams:
        return _run_streams(args)
    return _run_one(args)


def _run_one(args: argparse.Namespace) -> int:
    """One feed: INPUT restored into -o OUTPUT."""
    if args.input is None or args.output is None:
        raise UserError("give INPUT and -o OUTPUT (or --streams streams.yaml)")
    if args.input == "sample" and not os.path.exists(args.input):
        args.input = f"sample:{args.task}"  # the built-in sample clip, degraded for this task
    check_writes([Write("-o", args.output, frames=True, segmented=args.segment_time is not None),
                  Write("--report", args.report), Write("--csv", args.csv)],
                 [Read("the INPUT", args.input), *weights_reads(args.weights)], overwrite=args.overwrite)
    with _metrics(args) as metrics:  # before the input is opened: a port in use is refused first
        code = _restore_one(args, metrics)
        _linger(args)
    return code


def _restore_one(args: argparse.Namespace, metrics) -> int:
    """Open INPUT, the engine and OUTPUT, then restore (`metrics`: the run observer, or None)."""
    source = open_source(args.input, realtime=args.realtime, **live_source_options(args, args.input))
    try:
        args.temporal = _temporal(args, video=source.info.time_base is not None)
        backend = _create_backend(args)
        sink = open_output(lambda path, info: open_sink(path, info, source=args.input, codec=args.codec,
                                                        crf=args.crf, preset=args.preset, tune=args.tune),
                           args.output, source.info, args.segment_time)
    except ModuleNotFoundError as exc:
        source.close()
        raise UserError(f"--task {args.task}: its backend is not available in this build "
                        f"({exc.name} is missing); use --task passthrough or install it") from None
    except BaseException:
        source.close()
        raise
    report = LatencyReport(facts=_facts(args, backend))
    progress = _progress_bar(source.info.frames, args.quiet)
    try:
        result = run_pipeline(source, backend, sink, batch=args.batch, progress=progress, report=report,
                              fusion=args.temporal, observer=metrics)
    except av.FFmpegError as exc:
        raise UserError(f"{args.output}: encoding failed ({exc}); try another --codec or OUTPUT format") from None
    finally:
        if progress is not None:
            progress.close()
    _write_reports(args, result.report)
    if result.interrupted:
        sys.stderr.write(f"streamrestore: interrupted: {args.output} holds the first {result.frames} frames "
                         "and is complete and playable under its final name\n")
        return 130
    return 0


def _run_streams(args: argparse.Namespace) -> int:
    """Several feeds on one engine: 0 when every feed ran cleanly, 1 when one failed (each named on stderr),
    130 when a signal ended the run."""
    specs = load_streams(args.streams)
    check_outputs(args, specs)  # before the engine is built: nothing is written on a refusal
    for spec in specs:
        check_codec(args.codec, args.crf, str(spec.output), f"--streams {args.streams} [{spec.name}] output")
    with _metrics(args) as metrics:  # before the engine is built: a port in use is refused first
        code = _restore_streams(args, specs, metrics)
        _linger(args)
    return code


def _restore_streams(args: argparse.Namespace, specs: list[StreamSpec], metrics) -> int:
    """Build the engine and restore every feed of `specs` on it (`metrics`: the run observer, or None)."""
    args.temporal = _temporal(args, video=True)  # feeds are video
    if args.cluster:
        return _report_streams(args, specs, _cluster_streams(args, specs, metrics))
    backend = _create_backend(args)

    reports = run_streams(specs, backend, open_source=functools.partial(_open_feed, args),
                          open_sink=functools.partial(_open_feed_output, args), batch=args.batch,
                          batch_wait_ms=args.batch_wait_ms, facts=_facts(args, backend), fusion=args.temporal,
                          observer=metrics)
    return _report_streams(args, specs, reports)


def _open_feed(args: argparse.Namespace, spec: StreamSpec):
    reconnect = None if spec.reconnect is None else str(spec.reconnect)
    return open_source(spec.input, realtime=args.realtime,
                       **live_source_options(args, spec.input, spec.live_policy, reconnect))


def _open_feed_output(args: argparse.Namespace, spec: StreamSpec, info):
    return open_output(lambda path, i: open_sink(path, i, codec=args.codec, crf=args.crf, preset=args.preset,
                                                 tune=args.tune), spec.output, info, spec.segment_time or args.segment_time)


def _cluster_streams(args: argparse.Namespace, specs: list[StreamSpec], metrics) -> list[LatencyReport]:
    """The feeds on the Ray cluster of --cluster (streamrestore.runtime.cluster); file paths made absolute, since
    the actors do not run in this folder. The first signal stops the feeds, which finish their outputs.
    metrics: the ClusterMetrics this process serves (--metrics-port), or None."""
    from streamrestore.runtime.cluster import run_cluster

    def absolute(path):
        return path if path is None or is_live(str(path)) else os.path.abspath(str(path))

    def make_backend():  # on each engine's node: its backend and its feeds' facts (the thread plan it applied)
        backend = _create_backend(args)
        return backend, _facts(args, backend)

    specs = [dataclasses.replace(s, input=absolute(s.input), output=absolute(s.output)) for s in specs]
    with _signals_set(threading.Event()) as stop:
        return run_cluster(args.cluster, specs, make_backend=make_backend,
                           open_source=functools.partial(_open_feed, args),
                           open_sink=functools.partial(_open_feed_output, args), batch=args.batch,
                           batch_wait_ms=args.batch_wait_ms, fusion=args.temporal, stop=stop,
                           metrics=metrics)


@contextlib.contextmanager
def _signals_set(event: threading.Event):
    """While active (main thread only), SIGINT and SIGTERM set `event` instead of raising."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: event.set())
    try:
        yield event
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _report_streams(args: argparse.Namespace, specs: list[StreamSpec], reports: list[LatencyReport]) -> int:
    """Each feed's report file, table and error; the exit code of the --streams run."""
    for spec, report in zip(specs, reports):
        if spec.report:
            report.write_json(spec.report)
        if not args.quiet:
            print(f"[{spec.name}] {spec.input} -> {spec.output}\n{report.table()}", flush=True)
        if report.facts["error"]:
            print(f"streamrestore: error: [{spec.name}] {report.facts['error']}", file=sys.stderr, flush=True)
    if any(report.facts["error"] for report in reports):
        return 1
    if reports[0].interrupted:
        sys.stderr.write("streamrestore: interrupted: each output holds the frames restored before the signal "
                         "and is complete and playable under its final name\n")
        return 130
    return 0


def check_cluster(args: argparse.Namespace) -> None:
    """UserError when --cluster cannot be used: without Ray or without --streams."""
    if args.cluster is None:
        return
    if importlib.util.find_spec("ray") is None:
        raise UserError("--cluster needs Ray: pip install 'ray[client]>=2.9' (or pip install 'streamrestore[cluster]')")
    from streamrestore.runtime.cluster import check_address

    check_address(args.cluster)
    if not args.streams:
        raise UserError("--cluster runs the feeds of --streams streams.yaml; give one (INPUT and -o run here)")


def check_metrics(args: argparse.Namespace) -> None:
    """UserError when --metrics-port is given without the prometheus-client package."""
    if args.metrics_port is not None and importlib.util.find_spec("prometheus_client") is None:
        raise UserError("--metrics-port needs the prometheus-client package: pip install prometheus-client "
                        "(or pip install 'streamrestore[metrics]')")


def _metrics(args: argparse.Namespace):
    """The run's metrics endpoint (streamrestore.runtime.metrics, imported only here) while the block lasts: the
    observer to give the run, or None without --metrics-port. Its address goes to stderr once (unless --quiet
    and the port was given). With --cluster this process serves the figures the run's actors send: the
    observer is then a ClusterMetrics."""
    if args.metrics_port is None:
        return contextlib.nullcontext(None)
    from streamrestore.runtime.metrics import ClusterMetrics, serve_metrics

    def announce(url: str) -> None:
        if not (args.quiet and args.metrics_port):
            print(f"streamrestore: metrics on {url}", file=sys.stderr, flush=True)

    return serve_metrics(args.metrics_port, args.metrics_host, announce,
                         ClusterMetrics() if getattr(args, "cluster", None) else None)


def _linger(args: argparse.Namespace) -> None:
    """Keep the metrics endpoint up --metrics-linger seconds after the run; SIGINT or SIGTERM end the wait."""
    if args.metrics_port is None or not args.metrics_linger:
        return
    with _signals_set(threading.Event()) as done:
        done.wait(args.metrics_linger)


def _create_backend(args: argparse.Namespace):
    return create_backend(args.task, backend=args.backend, device=args.device, steps=args.steps, noise=args.noise,
                          weights=args.weights, temporal=args.temporal, compile=args.compile, **_engine_options(args))


def _engine_options(args: argparse.Namespace) -> dict:
    """create_backend's precision, threads and calibration; the thread plan is applied first."""
    from streamrestore.backends.threads import plan

    args.thread_plan = plan(args.threads)
    args.thread_plan.apply()
    return {"precision": args.precision, "threads": args.thread_plan.inference, "calibration": args.calibration_data,
            "second_time": args.second_time, "self_ensemble": args.self_ensemble}


def _temporal(args: argparse.Namespace, video: bool) -> bool:
    """--temporal: auto is on for video (files, live feeds, the sample clip); passthrough stays the identity."""
    return args.task != "passthrough" and (args.temporal == "on" or (args.temporal == "auto" and video))


def _facts(args: argparse.Namespace, backend) -> dict:
    return {"input": args.input, "output": args.output, "task": args.task, "backend": backend.name,
            "device": backend.device, "precision": backend.precision, "model": backend.model,
            "batch": args.batch, "steps": args.steps, "noise": args.noise, "self_ensemble": args.self_ensemble,
            "temporal": {"fusion": args.temporal, "video_model": getattr(backend, "temporal", False)},
            "auto_choice": getattr(backend, "auto_choice", None),
            "threads": vars(args.thread_plan) if getattr(args, "thread_plan", None) else None}  # --backend auto on the CPU: what was measured


def _progress_bar(total: int | None, quiet: bool):
    """A tqdm bar (frames, FPS, ETA) on a terminal; None when quiet or stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", dynamic_ncols=True, leave=False)


def _write_reports(args: argparse.Namespace, report: LatencyReport) -> None:
    if args.report:
        report.write_json(args.report)
    if args.csv:
        report.write_csv(args.csv)
    for count, what in ((report.skipped, "frames skipped (undecodable)"), (report.dropped, "frames dropped")):
        if count:
            sys.stderr.write(f"streamrestore: warning: {args.input}: {count} {what}\n")
    if not args.quiet:
        print(report.table())


if __name__ == "__main__":  # `python -m streamrestore.cli.run ...`: this command alone
    from streamrestore import cli

    cli.COMMANDS = {"run": "run"}
    raise SystemExit(cli.main(["run", *sys.argv[1:]]))
