"""Deployment profiles for live feeds: named defaults for `streamrestore run --profile NAME`.

driving: one camera, batch 1, latest-frame policy, short timeouts: the lowest latency.
surveillance: many cameras, frames batched across streams, every frame kept: throughput first.
Both encode with x264 `veryfast` and `zerolatency` (streamrestore.io.encoding). Options given on
the command line win over the profile.
"""
from __future__ import annotations

from streamrestore.errors import UserError
from streamrestore.io.encoding import LIVE_DEFAULT, check_speed

PROFILES: dict[str, dict] = {
    "driving": {"batch": 1, "live_policy": "latest", "stall_timeout": 2.0, "batch_wait_ms": 0.0, **LIVE_DEFAULT},
    "surveillance": {"batch": 8, "live_policy": "all", "stall_timeout": 5.0, "batch_wait_ms": 30.0, **LIVE_DEFAULT},
}
# preset/tune None: the sink picks the live default for live sources, x264's `medium` for files.
DEFAULTS = {"batch": 1, "live_policy": "latest", "stall_timeout": 3.0, "batch_wait_ms": 0.0, "preset": None,
            "tune": None}


def profile_settings(name: str | None) -> dict:
    """The settings of profile `name` (None: the plain defaults)."""
    if name is None:
        return dict(DEFAULTS)
    if name not in PROFILES:
        raise UserError(f"--profile {name!r} is not known; use one of {', '.join(PROFILES)}")
    return {**DEFAULTS, **PROFILES[name]}


def add_live_arguments(parser) -> None:
    """The `run` options for live feeds (rtsp:// INPUT or OUTPUT, several feeds)."""
    from streamrestore.io.rtsp import LIVE_POLICIES, TRANSPORTS
    from streamrestore.options import attempts_or_forever, positive_float

    # Each checked when parsed, whatever the INPUT: a file does not use them, but a bad value is still refused.
    g = parser.add_argument_group("live feeds (rtsp:// INPUT or OUTPUT)")
    g.add_argument("--profile", choices=tuple(PROFILES),
                   help="driving: batch 1, latest frame, lowest latency; surveillance: batched, every frame")
    g.add_argument("--live-policy", choices=LIVE_POLICIES,
                   help="latest (default): drop stale frames, bounded latency; all: restore every frame")
    g.add_argument("--reconnect", default="5", type=attempts_or_forever("--reconnect"), metavar="N|forever",
                   help="after a drop or stall: quick probes (every 0.25 s) for 30 s, then N attempts with "
                        "backoff (0.5, 1, 2, 4, 8 s); a first connection gets the N attempts (default 5)")
    g.add_argument("--rtsp-transport", choices=TRANSPORTS, default="tcp", help="RTSP transport (default tcp)")
    g.add_argument("--stall-timeout", type=positive_float("--stall-timeout"), metavar="S",
                   help="no frame for S seconds -> reconnect (default 3)")
    g.add_argument("--duration", type=positive_float("--duration"), metavar="S", help="stop a live feed after S seconds")
    g.add_argument("--segment-time", type=positive_float("--segment-time"), metavar="S",
                   help="file OUTPUT in segments of about S seconds (NAME_00000.mp4, ...)")
    g.add_argument("--streams", metavar="YAML", help="several feeds on one engine (INPUT and -o not used)")


def apply_profile(args) -> None:
    """Fill the options left unset from the profile (command-line values win)."""
    check_encoder_speed(args)
    settings = profile_settings(args.profile)
    args.batch = args.batch or settings["batch"]
    args.live_policy = args.live_policy or settings["live_policy"]
    args.stall_timeout = args.stall_timeout or settings["stall_timeout"]
    args.batch_wait_ms = settings["batch_wait_ms"]
    args.preset = getattr(args, "preset", None) or settings["preset"]
    args.tune = getattr(args, "tune", None) or settings["tune"]


def check_encoder_speed(args) -> None:
    """UserError when the --preset / --tune given do not fit the encoder of OUTPUT."""
    from streamrestore.io import is_live
    from streamrestore.io.video import default_codec

    preset, tune = getattr(args, "preset", None), getattr(args, "tune", None)
    if preset is None and tune is None:
        return
    output = args.output or ""
    check_speed(args.codec or ("libx264" if is_live(output) else default_codec(output)), preset, tune)


def live_source_options(args, spec: str, policy: str | None = None, reconnect: str | None = None) -> dict:
    """Keyword options for `streamrestore.io.open_source(spec, ...)`; {} unless spec is rtsp://."""
    from streamrestore.io import is_live
    from streamrestore.io.rtsp import ReconnectPolicy

    if not is_live(spec):
        return {}
    return {"policy": policy or args.live_policy, "transport": args.rtsp_transport,
            "reconnect": ReconnectPolicy.parse(reconnect if reconnect is not None else args.reconnect),
            "stall_timeout": args.stall_timeout, "duration": args.duration}


def open_output(open_one, path: str, info, segment_time: float | None):
    """`open_one(path, info)`, or segments of it when `segment_time` is set for a file OUTPUT."""
    from streamrestore.io import is_live
    from streamrestore.io.rtsp import SegmentedSink

    if segment_time is None or is_live(path):
        return open_one(path, info)
    return SegmentedSink(path, info, segment_time, open_segment=open_one)
