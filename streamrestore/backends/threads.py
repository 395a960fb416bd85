"""One thread plan for the pipeline's stages on the CPU (`run --threads N`, issue 16).

The pipeline's stages run at once (decode, restore, fusion, encode), each with its own thread pool:
FFmpeg's decoder (frame threads) and x264 (about 1.5 per core), the inference runtime (one per
core, spinning between operators in ONNX Runtime), OpenCV inside the fusion stage (one per core,
per call). Left alone they ask for several times the cores. The plan gives the model N threads
(default: the cores other processes leave idle) and keeps the other pools from fighting it:

- inference: N threads (onnxruntime intra-op, OpenVINO INFERENCE_NUM_THREADS, torch.set_num_threads);
  ONNX Runtime's workers do not spin-wait between operators (the spinning took the decoder's and
  encoder's time slices);
- OpenCV: 1 thread per call (the fusion stage's optical flow and remap run once per frame, beside
  the model; on a 16-core GPU machine 16 1080p feeds ran 12 % faster with OpenCV at 1 thread);
- decode and encode: FFmpeg's own thread counts (frame threads wait on the model most of the time).

Threads that wait for each other at every operator stall when another process holds one of
their cores: on the shared 2-core machine (load average ~4), model-only 480p p50 with 2 threads
against 1 (benchmarks/latency.py --profile model --plan [--threads 1]): onnxruntime fp32 107 -> 75
ms, openvino fp32 112 -> 67, bf16 102 -> 46, int8 124 -> 52. Hence the default: the idle cores.

`streamrestore run` applies it always (`--threads N`, default the idle cores). Measured with
benchmarks/latency.py --fusion, 480p, 30 frames, two runs each, on the shared 2-core machine (load
average 3-6): onnxruntime's pipeline ran 6.39 and 6.13 FPS with the plan against 3.64 and 3.37
with the libraries' defaults (model p50 138 ms against 235 ms); openvino's 5.60 and 5.75 against
7.60 and 4.97 (no clear difference). torch at 2 threads on those busy cores ran the naive loop at
0.7-1.3 FPS against 4.2-6.1 at 1 thread: on a shared machine give `--threads` the idle cores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPlan:
    inference: int  # the runtime's intra-op threads
    opencv: int  # cv2.setNumThreads
    spin: bool  # onnxruntime workers spin-wait between operators

    def apply(self, torch_threads: bool = True) -> None:
        """Set the process-wide pools (OpenCV; torch unless torch_threads=False); the runtimes take
        `inference` when built."""
        import cv2

        cv2.setNumThreads(self.opencv)
        if torch_threads:
            import torch

            torch.set_num_threads(self.inference)


def idle_cores() -> int:
    """Usable cores less those other processes keep busy (1-minute load average), at least 1."""
    cores = usable_cores()
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(cores, cores - busy))


def plan(threads: int | None = None) -> ThreadPlan:
    """The plan for `threads` inference threads (None: the idle cores, idle_cores())."""
    return ThreadPlan(inference=threads or idle_cores(), opencv=1, spin=False)
