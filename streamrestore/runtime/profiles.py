"""Deployment profiles for live feeds: named defaults for `streamrestore run --profile NAME`.

driving: one camera, batch 1, latest-frame policy, short timeouts: the lowest latency.
surveillance: many cameras, frames batched across streams, every frame kept: throughput first.
Both encode with x264 `veryfast` and `zerolatency` (streamrestore.io.encoding). Options given on
the command line win over the profile (streamrestore.cli.live.apply_profile).
"""
from __future__ import annotations

from streamrestore.errors import UserError
from streamrestore.io.encoding import LIVE_DEFAULT
from streamrestore.io.rtsp import STALL_TIMEOUT

PROFILES: dict[str, dict] = {
    "driving": {"batch": 1, "live_policy": "latest", "stall_timeout": 2.0, "batch_wait_ms": 0.0, **LIVE_DEFAULT},
    "surveillance": {"batch": 8, "live_policy": "all", "stall_timeout": 5.0, "batch_wait_ms": 30.0, **LIVE_DEFAULT},
}
# preset/tune None: the sink picks the live default for live sources, x264's `medium` for files.
DEFAULTS = {"batch": 1, "live_policy": "latest", "stall_timeout": STALL_TIMEOUT, "batch_wait_ms": 0.0, "preset": None,
            "tune": None}


def profile_settings(name: str | None) -> dict:
    """The settings of profile `name` (None: the plain defaults)."""
    if name is None:
        return dict(DEFAULTS)
    if name not in PROFILES:
        raise UserError(f"--profile {name!r} is not known; use one of {', '.join(PROFILES)}")
    return {**DEFAULTS, **PROFILES[name]}
