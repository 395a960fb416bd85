"""Issue 19: what `--cluster` costs against `--streams` in one process, at the same load.

    python benchmarks/cluster.py                                   # a few minutes on 2 cores
    python benchmarks/cluster.py --feeds 2 4 8 16 --nodes 1 2 3 --frames 600 --denoise-feeds 2 4

Makes --feeds synthetic 320x240 H.264 files (--frames frames each, PyAV, the tests' content) in a
temporary folder and runs the real CLI on them with `--task passthrough --profile surveillance`:
  - `local`: `streamrestore run --streams` in one process;
  - `N nodes`: the same streams file with `--cluster ray://127.0.0.1:PORT`, on a Ray cluster this
    script starts on 127.0.0.1 (`ray start --head`, then `ray start --address` for each further node;
    every node in its own process group, which is all it stops at the end -- nothing else);
and the same with `--task denoise` (the shipped model, on the CPU here) for --denoise-feeds feeds.
Per run: wall seconds of the command, aggregate FPS (all feeds' frames over the longest feed's own
wall time, start-up excluded), per-feed FPS and end-to-end p50/p99 ms from each feed's report (the
range over feeds), and a check that every feed has no error and wrote as many frames as its input.
Writes cluster.json and cluster.md into --out.

On a 2-core machine every node shares the same two cores: the figures show the cluster path's
overhead (each frame crosses to the engine actor and back through Ray's object store) and that it
is correct, not a speed-up; nodes on one machine cannot add compute.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from ray_cluster import RAY_ENV, LocalRayCluster  # noqa: E402 - the cluster the tests start, from tests/

CLI = [sys.executable, "-m", "streamrestore.cli", "run"]
NOTE = ("On this machine every Ray node shares the same cores: the table shows the cluster path's "
        "overhead and its correctness, not a speed-up (more nodes on one machine add no compute). Loopback KB "
        "per frame: the bytes the loopback interface carried during the command (/proc/net/dev), over the "
        "frames written; every Ray process here talks over 127.0.0.1, so this is all that would cross a real "
        "network between the driver and the nodes, Ray's own control traffic included (and whatever else "
        "the machine sent over loopback meanwhile); a raw 320x240 RGB frame is 225 KB.")


def loopback_bytes() -> int | None:
    """Bytes received on the loopback interface so far (Linux /proc/net/dev), None where there is none."""
    try:
        for line in Path("/proc/net/dev").read_text().splitlines():
            name, _, fields = line.partition(":")
            if name.strip() == "lo":
                return int(fields.split()[0])
    except OSError:
        return None
    return None


def _frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def run_one(label: str, task: str, inputs: list[Path], work: Path, cluster: str | None, frames: int) -> dict:
    """One `streamrestore run --streams` over `inputs`, locally or on `cluster`; its row."""
    out = Path(tempfile.mkdtemp(prefix=f"{label.replace(' ', '-')}-", dir=work))
    lines = [f"  - {{name: f{i}, input: '{src}', output: '{out / f'f{i}.mp4'}', report: '{out / f'f{i}.json'}'}}"
             for i, src in enumerate(inputs)]
    streams = out / "streams.yaml"
    streams.write_text("streams:\n" + "\n".join(lines) + "\n")
    command = [*CLI, "--streams", str(streams), "--task", task, "--profile", "surveillance", "--quiet",
               *(["--cluster", cluster] if cluster else [])]
    started, loopback = time.monotonic(), loopback_bytes()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=RAY_ENV)
    wall = time.monotonic() - started
    loopback = None if loopback is None else loopback_bytes() - loopback
    summaries, problems = [], []
    if proc.returncode != 0:
        problems.append(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    for i in range(len(inputs)):
        report = out / f"f{i}.json"
        if not report.exists():
            problems.append(f"f{i}: no report")
            continue
        summary = json.loads(report.read_text())["summary"]
        summaries.append(summary)
        written = _frames_in(out / f"f{i}.mp4") if (out / f"f{i}.mp4").exists() else 0
        if summary.get("error") or summary["frames"] != frames or written != frames:
            problems.append(f"f{i}: error {summary.get('error')}, {summary['frames']} frames reported, "
                            f"{written} written of {frames}")
    row = {"label": label, "task": task, "feeds": len(inputs), "nodes": None if cluster is None else label,
           "command_wall_s": round(wall, 2), "ok": not problems, "problems": problems}
    if summaries:
        e2e = [s["stages_ms"].get("end_to_end", {}) for s in summaries]
        total = sum(s["frames"] for s in summaries)
        longest = max(s["wall_seconds"] for s in summaries)
        row.update(aggregate_fps=round(total / longest, 1) if longest > 0 else None,
                   per_feed_fps=[s["throughput_fps"] for s in summaries],
                   e2e_p50_ms=[e.get("p50") for e in e2e], e2e_p99_ms=[e.get("p99") for e in e2e],
                   engines=sorted({s.get("engine") for s in summaries if s.get("engine") is not None}),
                   nodes_used=len({s.get("node") for s in summaries if s.get("node")}),
                   backend=summaries[0].get("backend"), precision=summaries[0].get("precision"),
                   threads=summaries[0].get("threads"),
                   loopback_kb_per_frame=None if loopback is None or not total else round(loopback / total / 1e3, 1))
    shutil.rmtree(out, ignore_errors=True)
    return row


def _span(values: list, digits: int = 0) -> str:
    values = [v for v in values or [] if v is not None]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}-{high:.{digits}f}"


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [f"**Command:** `{data['command']}` ({data['wall_seconds']:.0f} s), {data['date']}.",
             f"**Machine:** {m['cpu']}, {m['cores']} cores, no GPU, load average at start {m['load_average']}; "
             f"Ray {data['ray']}; Ray nodes on 127.0.0.1 with {data['cpus_per_node']} CPU each.",
             f"**Feeds:** {data['frames']}-frame 320x240 H.264 files, `--profile surveillance` (batch 8, "
             "30 ms wait), output to a temporary folder.", "",
             "| task | feeds | where | aggregate FPS | per-feed FPS | e2e p50 ms | e2e p99 ms | command wall s | "
             "engines / feed nodes | loopback KB per frame | all frames written |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        where = "one process" if r["nodes"] is None else r["label"]
        placed = "-" if r["nodes"] is None else f"{len(r.get('engines', []))} / {r.get('nodes_used', '-')}"
        task = r["task"] if r["task"] == "passthrough" else f"{r['task']} ({r.get('backend')} {r.get('precision')})"
        lines.append(f"| {task} | {r['feeds']} | {where} | {r.get('aggregate_fps', '-')} | "
                     f"{_span(r.get('per_feed_fps'))} | {_span(r.get('e2e_p50_ms'))} | {_span(r.get('e2e_p99_ms'))} | "
                     f"{r['command_wall_s']:.1f} | {placed} | {r.get('loopback_kb_per_frame', '-')} | "
                     f"{'yes' if r['ok'] else 'NO: ' + '; '.join(r['problems'])} |")
    lines += ["", "Aggregate FPS: all feeds' frames over the longest feed's wall time in its report (start-up "
              "excluded; the command's wall includes Python, Ray client connection and model loading). Per-feed "
              "FPS and e2e (arrival to encoded) p50/p99: the range over the feeds' reports. " + NOTE, ""]
    return "\n".join(lines)


def _machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--denoise-feeds", type=int, nargs="*", default=[2],
                        help="feed counts of the --task denoise rows (one process and 1 node); none: skip")
    parser.add_argument("--cpus-per-node", type=int, default=1, help="what each Ray node advertises")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    from media import make_clip  # tests/media.py: the tests' synthetic clips

    import ray

    started = time.monotonic()
    data = {"command": "python benchmarks/cluster.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                         if (argv if argv is not None else sys.argv[1:]) else ""),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine(),
            "ray": ray.__version__, "frames": args.frames, "cpus_per_node": args.cpus_per_node, "note": NOTE,
            "rows": []}
    work = Path(tempfile.mkdtemp(prefix="sr-cluster-bench-"))
    most = max([*args.feeds, *(args.denoise_feeds or [0])])
    inputs = [make_clip(work / f"in{i}.mp4", width=320, height=240, frames=args.frames, audio=False, qp=18)
              for i in range(most)]
    cluster = None
    try:
        def row(label, task, feeds, address):
            r = run_one(label, task, inputs[:feeds], work, address, args.frames)
            data["rows"].append(r)
            print(f"{task:12} {feeds} feeds {label:12} agg {r.get('aggregate_fps')} FPS, per feed "
                  f"{_span(r.get('per_feed_fps'))}, e2e p50 {_span(r.get('e2e_p50_ms'))} p99 "
                  f"{_span(r.get('e2e_p99_ms'))} ms, wall {r['command_wall_s']} s, ok {r['ok']} {r['problems']}",
                  flush=True)

        for feeds in args.feeds:
            row("one process", "passthrough", feeds, None)
        for feeds in args.denoise_feeds or []:
            row("one process", "denoise", feeds, None)
        for nodes in sorted(args.nodes):
            if cluster is None:
                cluster = LocalRayCluster(args.cpus_per_node)
            cluster.grow(nodes)
            label = f"{nodes} node" + ("s" if nodes > 1 else "")
            for feeds in args.feeds:
                row(label, "passthrough", feeds, cluster.address)
            if nodes == 1:
                for feeds in args.denoise_feeds or []:
                    row(label, "denoise", feeds, cluster.address)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    data["wall_seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "cluster.md").write_text(markdown(data))
    print(markdown(data))
    return 0 if all(r["ok"] for r in data["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
