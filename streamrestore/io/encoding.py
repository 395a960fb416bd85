"""Encoder speed settings: the x264 / x265 `preset` and `tune` options behind `run --preset/--tune`.

Presets trade encode time for compression at the same quality (x264 `--fullhelp`, x265 `--help`:
ultrafast ... placebo, default medium); `tune zerolatency` turns off frame look-ahead and B-frames,
so each frame leaves the encoder as soon as it is encoded. Live feeds default to a fast zero-latency
setting, files to x264's own quality default. Other encoders (libvpx-vp9, mpeg4, ffv1, ...) have no
presets and are left as they are.
"""
from __future__ import annotations

from streamrestore.errors import UserError

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
           "placebo")
TUNES = {"libx264": ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"),
         "libx265": ("psnr", "ssim", "grain", "zerolatency", "fastdecode", "animation")}
ALL_TUNES = tuple(dict.fromkeys(t for tunes in TUNES.values() for t in tunes))
LIVE_DEFAULT = {"preset": "veryfast", "tune": "zerolatency"}  # live feeds: latency first
FILE_DEFAULT = {"preset": "medium", "tune": None}  # files: x264's own default, quality first


def check_speed(codec: str, preset: str | None, tune: str | None) -> None:
    """UserError unless `codec` takes presets (when one is given) and `tune` is one of its tunes."""
    if preset is None and tune is None:
        return
    given = "--preset" if preset is not None else "--tune"
    if codec not in TUNES:
        raise UserError(f"{given}: {codec} has no presets or tunes; use them with libx264 or libx265, "
                        "or leave them out")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: unknown; use one of {', '.join(PRESETS)}")
    if tune is not None and tune not in TUNES[codec]:
        raise UserError(f"--tune {tune!r}: not a {codec} tune; use one of {', '.join(TUNES[codec])}")


def speed_options(codec: str, preset: str | None, tune: str | None, live: bool) -> dict[str, str]:
    """The encoder's AVOptions: the given preset and tune, each one not given taken from the live or
    file default ({} for encoders without presets)."""
    if codec not in TUNES:
        return {}
    default = LIVE_DEFAULT if live else FILE_DEFAULT
    chosen = {"preset": preset or default["preset"], "tune": tune or default["tune"]}
    return {key: value for key, value in chosen.items() if value}
