"""The `run` command's options for live feeds and several feeds (`--streams`): the argparse group, the
profile (streamrestore.runtime.profiles) filled into what the command line left unset, the source and output
options they make, and the write guard of a streams.yaml run."""
from __future__ import annotations

from streamrestore.cli.options import attempts_or_forever, positive_float
from streamrestore.io import is_live
from streamrestore.io.encoding import check_speed
from streamrestore.io.outputs import Read, Write, check_writes, weights_reads
from streamrestore.io.rtsp import LIVE_POLICIES, RECONNECT_ATTEMPTS, STALL_TIMEOUT, TRANSPORTS, ReconnectPolicy, SegmentedSink
from streamrestore.io.video import default_codec
from streamrestore.runtime.profiles import PROFILES, profile_settings
from streamrestore.runtime.streams import StreamSpec


def add_live_arguments(parser) -> None:
    """The `run` options for live feeds (rtsp:// INPUT or OUTPUT, several feeds)."""
    # Each checked when parsed, whatever the INPUT: a file does not use them, but a bad value is still refused.
    g = parser.add_argument_group("live feeds (rtsp:// INPUT or OUTPUT)")
    g.add_argument("--profile", choices=tuple(PROFILES),
                   help="driving: batch 1, latest frame, lowest latency; surveillance: batched, every frame")
    g.add_argument("--live-policy", choices=LIVE_POLICIES,
                   help="latest (default): drop stale frames, bounded latency; all: restore every frame")
    g.add_argument("--reconnect", default=str(RECONNECT_ATTEMPTS), type=attempts_or_forever("--reconnect"),
                   metavar="N|forever", help="after a drop or stall: quick probes (every 0.25 s) for 30 s, then N "
                   f"attempts with backoff (0.5, 1, 2, 4, 8 s); a first connection gets the N attempts (default "
                   f"{RECONNECT_ATTEMPTS})")
    g.add_argument("--rtsp-transport", choices=TRANSPORTS, default="tcp", help="RTSP transport (default tcp)")
    g.add_argument("--stall-timeout", type=positive_float("--stall-timeout"), metavar="S",
                   help=f"no frame for S seconds -> reconnect (default {STALL_TIMEOUT:g})")
    g.add_argument("--realtime", action="store_true",
                   help="read a video file INPUT (each file feed of --streams) at its own frame rate, as a camera "
                   "sends it (ffmpeg's -re): to try a live set-up on a recording")
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
    preset, tune = getattr(args, "preset", None), getattr(args, "tune", None)
    if preset is None and tune is None:
        return
    output = args.output or ""
    check_speed(args.codec or ("libx264" if is_live(output) else default_codec(output)), preset, tune)


def live_source_options(args, spec: str, policy: str | None = None, reconnect: str | None = None) -> dict:
    """Keyword options for `streamrestore.io.open_source(spec, ...)`; {} unless spec is rtsp://."""
    if not is_live(spec):
        return {}
    return {"policy": policy or args.live_policy, "transport": args.rtsp_transport,
            "reconnect": ReconnectPolicy.parse(reconnect if reconnect is not None else args.reconnect),
            "stall_timeout": args.stall_timeout, "duration": args.duration}


def open_output(open_one, path: str, info, segment_time: float | None):
    """`open_one(path, info)`, or segments of it when `segment_time` is set for a file OUTPUT."""
    if segment_time is None or is_live(path):
        return open_one(path, info)
    return SegmentedSink(path, info, segment_time, open_segment=open_one)


def check_outputs(args, specs: list[StreamSpec]) -> None:
    """Refuse the run before any feed starts when a feed's output or report would destroy a file or
    is written by another feed (the guard of streamrestore.io.outputs)."""
    writes, reads = [], [Read("the --streams file", args.streams), *weights_reads(args.weights)]
    for spec in specs:
        where = f"--streams {args.streams} [{spec.name}]"
        writes += [Write(f"{where} output", "" if spec.output is None else str(spec.output), frames=True,
                         segmented=(spec.segment_time or args.segment_time) is not None),
                   Write(f"{where} report", None if spec.report is None else str(spec.report))]
        reads.append(Read(f"the input of [{spec.name}]", str(spec.input)))
    check_writes(writes, reads, overwrite=args.overwrite)
