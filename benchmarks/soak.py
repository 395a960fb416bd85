"""Soak test: one live RTSP feed through `streamrestore run` for a set time; reports the RSS slope.

Starts the test camera (tests/rtsp_server.py under the system python, GStreamer; a 320x240 clip
looped at 15 fps) unless --url names a camera, runs the real CLI on it in a child process with
`--duration`, samples the child's resident set size (/proc/PID/status VmRSS) every --every
seconds and fits a line to the samples after --warmup minutes (Theil-Sen, robust to a transient
allocation; least squares also reported): the slope in MB per hour is the figure (issue 14's
target: flat within 2 MB/hour over an hour). Writes JSON with every sample to --out when given.

    python benchmarks/soak.py --minutes 10
    python benchmarks/soak.py --minutes 60 --task denoise --output segmented.mp4 --segment-time 60
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"


def rss_mb(pid: int) -> float | None:
    """Resident set size of `pid` in MB (10^6 bytes), None once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def slope_mb_per_hour(samples: list[tuple[float, float]], warmup_s: float, robust: bool = True) -> float | None:
    """Slope of (seconds, MB) after `warmup_s`, in MB per hour; None with under 3 samples. robust: the
    Theil-Sen estimate (median of the pairwise slopes), which a steady leak moves and a few transient
    allocations (an encoder buffer for a moment) do not; else least squares."""
    kept = np.array([(t, m) for t, m in samples if t >= warmup_s], dtype=np.float64)
    if len(kept) < 3:
        return None
    if not robust:
        return float(np.polyfit(kept[:, 0], kept[:, 1], 1)[0] * 3600.0)
    i, j = np.triu_indices(len(kept), k=1)
    dt = kept[j, 0] - kept[i, 0]
    return float(np.median((kept[j, 1] - kept[i, 1])[dt > 0] / dt[dt > 0]) * 3600.0)


def make_clip(path: Path, width: int = 320, height: int = 240, frames: int = 150, rate: int = 15) -> Path:
    """A clip for the test camera: a ramp with a moving square and noise (so the encoder does real work)."""
    import av

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 96)], -1).astype(np.int16)
            x0 = (4 * i) % (width - 32)
            image[height // 3: height // 3 + 32, x0: x0 + 32] = (230, 40, 160)
            image += rng.integers(-12, 13, image.shape, dtype=np.int16)
            frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def start_camera(folder: Path) -> tuple[subprocess.Popen, str]:
    """tests/rtsp_server.py serving the generated clip; returns the process and the camera URL."""
    sys.path.insert(0, str(ROOT / "tests"))
    from rtsp_fixtures import free_port, gst_rtsp_missing

    reason = gst_rtsp_missing()
    if reason:
        raise SystemExit(f"soak.py: error: no test camera ({reason}); pass --url rtsp://... of a camera")
    clip = make_clip(folder / "camera.mp4")
    port = free_port()
    server = subprocess.Popen([SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_server.py"), "--port", str(port),
                               "--serve", f"cam={clip}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if not server.stdout.readline().startswith("READY"):
        server.kill()
        raise SystemExit("soak.py: error: the test camera did not start")
    return server, f"rtsp://127.0.0.1:{port}/cam"


def soak(url: str, folder: Path, args: argparse.Namespace) -> dict:
    """Run the CLI on `url` for args.minutes; sample its RSS; return the figures."""
    output = args.output or str(folder / "soak.mkv")
    command = [sys.executable, "-m", "streamrestore.cli", "run", url, "--task", args.task, "-o", output,
               "--duration", str(args.minutes * 60), "--reconnect", "forever", "--quiet", "--overwrite",
               *(["--segment-time", str(args.segment_time)] if args.segment_time else []), *args.extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    samples: list[tuple[float, float]] = []
    while child.poll() is None:
        mb = rss_mb(child.pid)
        if mb is not None:
            samples.append((time.monotonic() - started, mb))
            if args.verbose:
                print(f"{samples[-1][0]:8.1f} s  {mb:8.2f} MB", flush=True)
        time.sleep(args.every)
    stderr = child.stderr.read()
    slope = slope_mb_per_hour(samples, args.warmup * 60)
    least_squares = slope_mb_per_hour(samples, args.warmup * 60, robust=False)
    return {"command": " ".join(command), "exit_code": child.returncode, "stderr": stderr.strip()[-2000:],
            "minutes": args.minutes, "warmup_minutes": args.warmup,
            "rss_mb_after_warmup": next((m for t, m in samples if t >= args.warmup * 60), None),
            "rss_mb_last": samples[-1][1] if samples else None,
            "rss_mb_max": max((m for _, m in samples), default=None),
            "slope_mb_per_hour": None if slope is None else round(slope, 2),
            "least_squares_slope_mb_per_hour": None if least_squares is None else round(least_squares, 2),
            "samples": samples}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long the feed runs (default 10)")
    p.add_argument("--warmup", type=float, default=4.0,
                   help="minutes left out of the slope (default 4: a live report's record window, the latest "
                        "3000 frames, fills in 200 s at 15 fps)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    p.add_argument("--url", help="an rtsp:// camera to read (default: the test camera, started here)")
    p.add_argument("--task", default="passthrough", help="the run --task (default passthrough)")
    p.add_argument("--output", help="the run -o (default: a .mkv in a temporary folder, removed after)")
    p.add_argument("--segment-time", type=float, help="the run --segment-time")
    p.add_argument("--out", help="write the figures and every sample as JSON here")
    p.add_argument("--verbose", action="store_true", help="print each sample")
    p.add_argument("extra", nargs="*", help="more `run` options, after --")
    args = p.parse_args(argv)
    if args.minutes <= args.warmup:
        p.error(f"--minutes {args.minutes} must be longer than --warmup {args.warmup}")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        server = None
        try:
            if args.url is None:
                server, url = start_camera(Path(tmp))
            else:
                url = args.url
            result = soak(url, Path(tmp), args)
        finally:
            if server is not None:
                server.kill()
                server.wait(timeout=5)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"RSS {result['rss_mb_after_warmup'] or 0:.1f} MB after {args.warmup:g} min warm-up -> "
          f"{result['rss_mb_last'] or 0:.1f} MB at {args.minutes:g} min (max {result['rss_mb_max'] or 0:.1f}); slope "
          f"after warm-up: {result['slope_mb_per_hour']} MB/hour (Theil-Sen; least squares "
          f"{result['least_squares_slope_mb_per_hour']}); exit code {result['exit_code']}")
    if result["exit_code"]:
        print(result["stderr"], file=sys.stderr)
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
