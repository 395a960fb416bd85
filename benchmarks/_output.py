"""What benchmarks/latency.py writes: the Markdown tables and the PNG plot, from its JSON dict; and the
JSON + Markdown pair the smaller benchmarks (flicker.py, step_times.py) write."""
from __future__ import annotations

import json
from pathlib import Path


def write_table(out: Path, data: dict, lines: list[str]) -> None:
    """`out`.json (every figure) and `out`.md (the table's lines), making the folder if needed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _ms(figures: dict, key: str) -> str:
    value = figures.get(key)
    return "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(data: dict) -> str:
    """Header (machine, command, weights), the single-stream table, the surveillance table, skips."""
    m, c = data["machine"], data["configuration"]
    lines = [f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM"
             + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU")
             + f"; load average at start {m['load_average']}; "
             + (f"thread plan: {c['inference_threads']} onnxruntime/openvino threads, OpenCV 1, no spinning; "
                if c.get("plan") else "") + f"torch threads {c['threads']}.",
             f"**Command:** `{c['command']}` ({data['wall_seconds']:.0f} s).",
             f"**Model:** {data['weights']['note']}; task {c['task']}; {data['versions_line']}.", ""]
    if data.get("model_only"):
        lines += _model_only_table(data) + [""]
    if data["baseline"] or data["driving"]:
        lines += _single_stream_table(data) + [""]
    if data["surveillance"]:
        lines += _surveillance_table(data) + [""]
    if data.get("encoder"):
        lines += _encoder_table(data) + [""]
    for skip in data["skipped"]:
        lines.append(f"- skipped: {skip['backend']} {skip['precision']} {skip['steps']}-step: {skip['reason']}")
    lines += ["", "Speed-up: pipeline FPS over the naive baseline (sequential decode, PyTorch eager FP32 one "
              "frame at a time, encode, no overlap) measured in the same run; ratios hold on a shared "
              "machine, absolute times do not. Model: one backend call on one frame. Pipeline: the threaded "
              "file pipeline (its e2e includes queueing, the decoder runs ahead). Driving: batch 1 on a feed "
              "paced at 30 fps, latest frame kept, e2e from frame arrival (decode included) to encoded."]
    return "\n".join(lines) + "\n"


def _single_stream_table(data: dict) -> list[str]:
    lines = ["| backend | precision | res | steps | model p50 ms | model p99 ms | pipeline FPS | e2e p50 ms "
             "| e2e p99 ms | speed-up | driving p99 ms | fits 33 ms | host peak MB | GPU peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in data["baseline"]:
        lines.append(f"| naive baseline (torch eager) | fp32 | {b['resolution']} | {b['steps']} | - | - | "
                     f"{_num(b['fps'])} | {_ms(b['end_to_end_ms'], 'p50')} | {_ms(b['end_to_end_ms'], 'p99')} | "
                     f"1.00 | - | - | {_num(b['host_peak_mb'], 0)} | {_num(b['gpu_peak_mb'], 0)} |")
    for r in data["driving"]:
        p, d = r["pipeline"], r.get("driving") or {}
        fits = "-" if not d else "yes" if d["fits_frame_interval"] else "no"
        lines.append(f"| {r['backend']} | {r['precision']} | {r['resolution']} | {r['steps']} | "
                     f"{_ms(r['model_ms'], 'p50')} | {_ms(r['model_ms'], 'p99')} | {_num(p['fps'])} | "
                     f"{_ms(p['end_to_end_ms'], 'p50')} | {_ms(p['end_to_end_ms'], 'p99')} | "
                     f"{_num(r['speedup'])} | {_ms(d.get('end_to_end_ms', {}), 'p99')} | {fits} | "
                     f"{_num(r['host_peak_mb'], 0)} | {_num(r['gpu_peak_mb'], 0)} |")
    return lines


def _model_only_table(data: dict) -> list[str]:
    """--profile model: every backend x precision called in turn on the same frame."""
    lines = ["| backend | precision | res | steps | batch | model p50 ms | model p99 ms | min ms | vs onnxruntime fp32 "
             "| set-up s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["model_only"]:
        lines.append(f"| {r['backend']} | {r['precision']} | {r['resolution']} | {r['steps']} | {r['batch']} | "
                     f"{_ms(r['model_ms'], 'p50')} | {_ms(r['model_ms'], 'p99')} | {_ms(r['model_ms'], 'min')} | "
                     f"{_num(r['vs_onnxruntime_fp32'])} | {_num(r['setup_s'])} |")
    return lines


def _encoder_table(data: dict) -> list[str]:
    """libx264 alone: what each --preset / --tune costs per frame (CPU ms: all encoder threads)."""
    lines = ["| encoder (libx264, crf 23) | res | preset | tune | wall ms/frame | CPU ms/frame | kB/frame |",
             "|---|---|---|---|---|---|---|"]
    for r in data["encoder"]:
        lines.append(f"| libx264 | {r['resolution']} | {r['preset']} | {r['tune'] or '-'} | "
                     f"{_num(r['wall_ms_per_frame'], 1)} | {_num(r['cpu_ms_per_frame'], 1)} | "
                     f"{_num(r['kbytes_per_frame'], 1)} |")
    return lines


def _surveillance_table(data: dict) -> list[str]:
    lines = ["| surveillance | precision | res | steps | streams | aggregate FPS | per-stream FPS (min) "
             "| e2e p99 ms | speed-up | host peak MB | GPU peak MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["surveillance"]:
        s = r["result"]
        lines.append(f"| {r['backend']} | {r['precision']} | {r['resolution']} | {r['steps']} | {s['streams']} | "
                     f"{_num(s['aggregate_fps'])} | {_num(s['per_stream_fps_min'])} | "
                     f"{_ms(s['end_to_end_ms'], 'p99')} | {_num(r['speedup'])} | {_num(r['host_peak_mb'], 0)} | "
                     f"{_num(r['gpu_peak_mb'], 0)} |")
    return lines


PLOT_NEEDS = "matplotlib is not installed: no latency.png (pip install matplotlib, or pip install -e '.[test]')"


def plot(data: dict, path: Path) -> bool:
    """FPS by resolution per backend (baseline dashed), and the latency distribution per config.
    False, and nothing written, when matplotlib is not installed (it is optional: the `test` extra)."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        return False

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (fps_ax, lat_ax) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=80)
    order = list(dict.fromkeys(r["resolution"] for r in data["baseline"] + data["driving"]))
    series: dict[str, dict] = {}
    for b in data["baseline"]:
        series.setdefault(f"naive baseline {b['steps']}-step", {})[b["resolution"]] = b["fps"]
    for r in data["driving"]:
        name = f"{r['backend']} {r['precision']} {r['steps']}-step"
        series.setdefault(name, {})[r["resolution"]] = r["pipeline"]["fps"]
    for r in data["surveillance"]:
        name = f"{r['backend']} {r['precision']} {r['steps']}-step x{r['result']['streams']} streams (aggregate)"
        series.setdefault(name, {})[r["resolution"]] = r["result"]["aggregate_fps"]
        order += [r["resolution"]] if r["resolution"] not in order else []
    for name, points in series.items():
        xs = [order.index(k) for k in points]
        fps_ax.plot(xs, list(points.values()), "k--o" if name.startswith("naive") else "-o", label=name)
    fps_ax.set_xticks(range(len(order)), order)
    fps_ax.set(title="throughput by resolution", ylabel="frames per second", yscale="log")
    fps_ax.legend(fontsize=7)
    samples, labels = _latency_samples(data)
    if samples:
        lat_ax.boxplot(samples, whis=(1, 99), showfliers=False)
        lat_ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=7)
    lat_ax.set(title="end-to-end latency per frame (whiskers p1-p99)", ylabel="ms", yscale="log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _latency_samples(data: dict) -> tuple[list, list]:
    samples, labels = [], []
    for b in data["baseline"]:
        samples.append(b["end_to_end_samples_ms"])
        labels.append(f"baseline {b['resolution']} {b['steps']}s")
    for r in data["driving"]:
        run = r.get("driving") or r["pipeline"]
        samples.append(run["end_to_end_samples_ms"])
        labels.append(f"{r['backend']} {r['precision']} {r['resolution']} {r['steps']}s"
                      + (" driving" if r.get("driving") else ""))
    for r in data["surveillance"]:
        samples.append(r["result"]["end_to_end_samples_ms"])
        labels.append(f"{r['backend']} {r['precision']} x{r['result']['streams']} surveillance")
    keep = [i for i, s in enumerate(samples) if s]
    return [samples[i] for i in keep], [labels[i] for i in keep]
