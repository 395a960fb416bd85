"""streams.yaml: the feeds of `streamrestore run --streams`, each with its own input, output, live
policy and report (one engine restores them all: streamrestore.runtime.pipeline.run_streams).

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
from dataclasses import dataclass

from streamrestore.errors import UserError

_KEYS = {"name", "input", "output", "live_policy", "reconnect", "segment_time", "report"}


@dataclass
class StreamSpec:
    """One feed of streams.yaml; an optional value left None takes the run's command-line option."""

    name: str
    input: str
    output: str
    live_policy: str | None = None
    reconnect: str | None = None
    segment_time: float | None = None
    report: str | None = None


def load_streams(path: str) -> list[StreamSpec]:
    """Parse streams.yaml (see the module docstring); UserError names the bad entry."""
    import yaml  # here, not at import: `streamrestore run --help` does not pay for it

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
    from streamrestore.cli.options import attempts_or_forever, positive_float
    from streamrestore.io.rtsp import LIVE_POLICIES

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
