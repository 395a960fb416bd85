"""Several feeds on one engine (`streamrestore run --streams streams.yaml`).

One reader thread per feed fills that feed's small queue (its live policy already dropped what is
stale); the engine loop takes the ready frames of all feeds, up to `batch`, waiting at most
`batch_wait_ms` to fill a batch, and restores each same-size group in one backend call; one
writer thread per feed encodes into that feed's own output and report. A feed that fails (cannot
connect, reconnects exhausted, bad output) is closed and reported; the others carry on.

streams.yaml:

    streams:
      - name: front                       # optional, defaults to stream1, stream2, ...
        input: rtsp://cam1:8554/live
        output: front.mp4                 # file or rtsp:// URL
        live_policy: latest               # optional: latest | all
        reconnect: forever                # optional: N | forever
        segment_time: 60                  # optional: file output in segments
        report: front.json                # optional: this feed's latency report
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import yaml

from streamrestore.errors import UserError
from streamrestore.io.base import FrameSink, FrameSource, StreamInfo

_KEYS = {"name", "input", "output", "live_policy", "reconnect", "segment_time", "report"}


@dataclass
class StreamSpec:
    name: str
    input: str
    output: str
    live_policy: str | None = None
    reconnect: str | None = None
    segment_time: float | None = None
    report: str | None = None


def load_streams(path: str) -> list[StreamSpec]:
    """Parse streams.yaml (see the module docstring); UserError names the bad entry."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); check the --streams path") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file (byte {exc.start} is not UTF-8); --streams takes a YAML file "
                        "like streams.yaml in the README") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    entries = data.get("streams") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: needs a non-empty 'streams:' list of {{input, output}} entries")
    specs = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not {"input", "output"} <= entry.keys() or entry.keys() - _KEYS:
            raise UserError(f"{path}: stream {number} needs 'input' and 'output' and only the keys "
                            f"{', '.join(sorted(_KEYS))}")
        specs.append(_checked(path, StreamSpec(**{"name": f"stream{number}", **{k: entry[k] for k in entry}})))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: stream names must be unique (got {', '.join(names)})")
    return specs


def _checked(path: str, spec: StreamSpec) -> StreamSpec:
    """The entry's values checked as the command-line options are (--reconnect, --live-policy, --segment-time)."""
    from streamrestore.io.rtsp import LIVE_POLICIES
    from streamrestore.options import attempts_or_forever, positive_float

    where = f"{path}: stream {spec.name}"
    for key in ("name", "input", "output", "report"):
        value = getattr(spec, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(spec, key, value := str(value))
        if not isinstance(value, str) and not (key == "report" and value is None):  # '' is the write guard's
            raise UserError(f"{where}: {key} {value!r}: give a file name or URL")
    if spec.live_policy is not None and spec.live_policy not in LIVE_POLICIES:
        raise UserError(f"{where}: live_policy {spec.live_policy!r}: use one of {', '.join(LIVE_POLICIES)}")
    for key, check in (("reconnect", attempts_or_forever), ("segment_time", positive_float)):
        value = getattr(spec, key)
        try:
            setattr(spec, key, None if value is None else check(key)(str(value)))
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{where}: {exc}") from None
    return spec


def check_outputs(args, specs: list[StreamSpec]) -> None:
    """Refuse the run before any feed starts when a feed's output or report would destroy a file or
    is written by another feed (the guard of streamrestore.outputs)."""
    from streamrestore.outputs import Read, Write, check_writes, weights_reads

    writes, reads = [], [Read("the --streams file", args.streams), *weights_reads(args.weights)]
    for spec in specs:
        where = f"--streams {args.streams} [{spec.name}]"
        writes += [Write(f"{where} output", "" if spec.output is None else str(spec.output), frames=True,
                         segmented=(spec.segment_time or args.segment_time) is not None),
                   Write(f"{where} report", None if spec.report is None else str(spec.report))]
        reads.append(Read(f"the input of [{spec.name}]", str(spec.input)))
    check_writes(writes, reads, overwrite=args.overwrite)


def run_command(args, specs: list[StreamSpec], backend, facts: dict) -> int:
    """`streamrestore run --streams streams.yaml`: 0 when every feed ran cleanly, else 1."""
    from streamrestore import io
    from streamrestore.pipeline import run_streams
    from streamrestore.profiles import live_source_options, open_output

    def open_source(spec: StreamSpec) -> FrameSource:
        return io.open_source(spec.input, **live_source_options(args, spec.input, spec.live_policy,
                                                                  None if spec.reconnect is None else str(spec.reconnect)))

    def open_sink(spec: StreamSpec, info: StreamInfo) -> FrameSink:
        return open_output(lambda p, i: io.open_sink(p, i, codec=args.codec, crf=args.crf, preset=args.preset,
                                                    tune=args.tune), spec.output, info,
                           spec.segment_time or args.segment_time)

    reports = run_streams(specs, backend, open_source=open_source, open_sink=open_sink, batch=args.batch,
                          batch_wait_ms=args.batch_wait_ms, facts=facts, fusion=args.temporal)
    failed = 0
    for spec, report in zip(specs, reports):
        if spec.report:
            report.write_json(spec.report)
        if not args.quiet:
            print(f"[{spec.name}] {spec.input} -> {spec.output}\n{report.table()}")
        if report.facts.get("error"):
            failed += 1
            print(f"streamrestore: error: [{spec.name}] {report.facts['error']}", file=sys.stderr)
    return 1 if failed else 0
