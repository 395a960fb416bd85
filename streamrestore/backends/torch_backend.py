"""PyTorch backend: eager IR-CM sampling on CPU, or on CUDA with FP16 and double buffering.

CUDA path (DESIGN.md section 3): pinned host buffers, an upload stream, a compute stream and a
download stream, two buffer slots in flight, so the upload of batch k+1 and the download of batch
k-1 overlap the restore of batch k; uint8<->float conversion, padding and cropping on the GPU;
stage times from CUDA events.

Colour on the device (`takes_i420`, on by default on CUDA): a batch may come as the frames' decoded
8-bit 4:2:0 planes (I420, (N, 3H/2, W) uint8, coded as `ycbcr`) instead of R'G'B'; it is converted
to R'G'B' where the model runs, restored, and converted back to I420 there
(streamrestore.io.ycbcr_torch), so half the bytes cross PCIe and the host converts nothing.
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from streamrestore.backends.base import BackendBase, LoadedModel, check_batch
from streamrestore.errors import UserError
from streamrestore.io import ycbcr_torch
from streamrestore.io.ycbcr import YCbCrFormat, is_i420
from streamrestore.model.frames import RestoreFrames, noise_shape
from streamrestore.model.sampler import NoisePolicy
from streamrestore.model.tiles import check_tile, restore_tiled, tiled

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to PyTorch; use --device cpu (or install a CUDA build)")
    return device


class FrameRestorer(torch.nn.Module):
    """uint8 (N, H, W, 3) RGB -> uint8 (N, H, W, 3): streamrestore.model.frames.RestoreFrames with the noise of
    the stream's NoisePolicy, compiled or tiled as asked.

    A temporal model also takes `previous`, each frame's previous restored frame (N, H, W, 3) uint8
    (the frame itself where a stream starts afresh, streamrestore.runtime.temporal).

    compile: run `restore` through torch.compile (Inductor; on CUDA with CUDA graphs, mode
    "reduce-overhead"), one static graph per frame size: a batch smaller than the largest seen at
    that size (a file's last one) is padded to it, so it replays the same graph instead of compiling
    anew. If compilation fails, the eager path takes over with one warning line.

    tile: frames of more than streamrestore.model.tiles.TILE_ABOVE pixels are restored eagerly in tiles of
    `tile` pixels (default tiles.TILE), in bounded memory and with the whole-frame result
    (streamrestore.model.tiles); 0: never.
    """

    def __init__(self, model, steps: int, noise: NoisePolicy, compile: bool = False, tile: int | None = None):
        super().__init__()
        self.model, self.steps, self.noise = model, steps, noise
        self.restore = RestoreFrames(model)  # the frame path the ONNX export traces too
        self.tile = check_tile(tile)
        self.multiple = model.network.pad_multiple
        self._compiled = None
        self._batch_at: dict[tuple[int, int], int] = {}
        if compile:
            cuda = next(model.parameters()).is_cuda
            # one graph per (batch, size, steps) and per engine: more than dynamo's default 8 in one process
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self._compiled = torch.compile(self.restore, mode="reduce-overhead" if cuda else None, dynamic=False)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def forward(self, frames: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        padded = noise_shape(1, *frames.shape[:3], self.multiple)[1:]
        if tiled(frames.shape, self.tile):
            # zero noise is cropped per tile as zeros: no whole-frame field for the shipped models' default
            noises = ([None] * self.steps if self.noise.kind == "zero"
                      else self.noise.draw_shaped(self.steps, padded, frames.device))
            history = previous if self.model.is_temporal else None
            return restore_tiled(self.model, frames, noises, history, self.tile)
        if self._compiled is None:
            return self.restore(frames, self.noise.draw_shaped(self.steps, padded, frames.device), previous)
        return self._restore_compiled(frames, previous, padded)

    def restore_coded(self, frames: torch.Tensor, previous: torch.Tensor | None,
                      ycbcr: YCbCrFormat | None) -> torch.Tensor:
        """forward() on R'G'B' frames, or on I420 planes coded as `ycbcr` (converted to R'G'B' and back here)."""
        if ycbcr is None:
            return self(frames, previous)
        return ycbcr_torch.rgb_to_i420(self(ycbcr_torch.i420_to_rgb(frames, ycbcr), previous), ycbcr)

    @torch.inference_mode()
    def _restore_compiled(self, frames: torch.Tensor, previous: torch.Tensor | None, padded: tuple) -> torch.Tensor:
        n, h, w = frames.shape[:3]
        full = self._batch_at.setdefault((h, w), n)
        if n < full:  # the same graph as the full batches: pad with the last frame, drop its outputs
            frames = torch.cat([frames, frames[-1:].expand(full - n, -1, -1, -1)])
            previous = None if previous is None else torch.cat([previous, previous[-1:].expand(full - n, -1, -1, -1)])
        else:
            self._batch_at[(h, w)] = n
        noises = self.noise.draw_shaped(self.steps, (len(frames), *padded[1:]), frames.device)
        if not frames.is_inference():  # one kind of input tensor, so one graph per shape (dynamo guards on it)
            frames = frames.clone()
            previous = None if previous is None else previous.clone()
        try:
            if frames.is_cuda:
                torch.compiler.cudagraph_mark_step_begin()
            # a copy: with CUDA graphs the output lives in the graph's memory, which the next replay reuses
            return self._compiled(frames, noises, previous)[:n].clone()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a compiler failure: say so once and go on eagerly
            log.warning("torch.compile failed (%s: %s); running the eager model",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self._compiled = None
            return self.restore(frames[:n], [z[:n] for z in noises],
                                None if previous is None else previous[:n])


class TorchBackend(BackendBase):
    name = "torch"

    def __init__(self, loaded: LoadedModel, device: str = "auto", fp16: bool | None = None, compile: bool = False,
                 tile: int | None = None, device_colour: bool | None = None):
        """tile: frames above streamrestore.model.tiles.TILE_ABOVE pixels restore in tiles of this side
        (default tiles.TILE; 0: never), in bounded memory and with the whole-frame result.
        device_colour: take I420 batches and convert colour where the model runs (default: on CUDA)."""
        super().__init__(loaded)
        self.device = resolve_device(device)
        if fp16 and self.device == "cpu":
            raise UserError("--fp16 needs --device cuda; on the CPU the torch backend runs FP32")
        model = copy.deepcopy(loaded.model).to(self.device)
        self.fp16 = self.device == "cuda" if fp16 is None else fp16
        if self.fp16:
            model.network.half()  # the consistency-function arithmetic stays float32 (ConsistencyModel)
        self.precision = "fp16" if self.fp16 else "fp32"
        self.restorer = FrameRestorer(model, loaded.steps, NoisePolicy(loaded.noise, loaded.seed), compile=compile,
                                      tile=tile).eval()
        if compile:
            self.model += ", torch.compile"
        self._cuda = _CudaDoubleBuffer(self.restorer) if self.device == "cuda" else None
        self.asynchronous = self._cuda is not None  # submit() returns before the GPU has finished
        self.takes_i420 = (self.device == "cuda" if device_colour is None else device_colour) and not self.temporal

    @torch.inference_mode()
    def submit(self, frames: np.ndarray, previous: np.ndarray | None = None, ycbcr: YCbCrFormat | None = None):
        """Queue a batch (N, H, W, 3) uint8 (and, for a temporal model, each frame's previous restored
        frame, same shape); returns a Pending whose result() is the restored batch. With `ycbcr` the batch
        is I420 planes coded so (N, 3H/2, W), and so is the result (module docstring)."""
        if ycbcr is not None:
            frames = check_i420(frames, ycbcr, self.takes_i420)
            shape = (len(frames), frames.shape[1] * 2 // 3, frames.shape[2], 3)
        else:
            frames = check_batch(frames, previous)
            shape = frames.shape
        if self._cuda is not None and not tiled(shape, self.restorer.tile):
            return self._cuda.submit(frames, previous, ycbcr)
        return self.timed_run(frames, previous, ycbcr)  # the CPU, or a large frame on CUDA: tiled, moved whole

    @torch.inference_mode()
    def run(self, frames: np.ndarray, previous: np.ndarray | None, ycbcr: YCbCrFormat | None = None) -> np.ndarray:
        history = None if previous is None else torch.from_numpy(np.ascontiguousarray(previous)).to(self.device)
        return self.restorer.restore_coded(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device), history,
                                           ycbcr).cpu().numpy()


def check_i420(frames: np.ndarray, ycbcr: YCbCrFormat, takes_i420: bool) -> np.ndarray:
    """`frames` as an array of I420 planes (N, 3H/2, W) uint8, or ValueError saying what is wrong."""
    frames = np.asarray(frames)
    if not takes_i420:
        raise ValueError("this backend takes R'G'B' frames (N, H, W, 3), not I420 planes: its takes_i420 is false")
    if frames.dtype != np.uint8 or frames.ndim != 3 or len(frames) == 0 or frames.shape[1] % 3 or \
            not is_i420(ycbcr, frames.shape[2], frames.shape[1] * 2 // 3):
        raise ValueError(f"expected a batch of I420 planes of shape (N, 3H/2, W) uint8 with N >= 1 and H, W even, "
                         f"coded as 8-bit 4:2:0, got {frames.dtype} {frames.shape} coded as {ycbcr.pix_fmt}")
    return frames


class _Slot:
    """One in-flight buffer: pinned host input/output, device input, and the events that bound its stages."""

    def __init__(self, shape: tuple[int, ...], device: torch.device):
        self.shape = shape
        self.host_in = torch.empty(shape, dtype=torch.uint8).pin_memory()
        self.host_out = torch.empty(shape, dtype=torch.uint8).pin_memory()
        self.device_in = torch.empty(shape, dtype=torch.uint8, device=device)
        self.events = {k: torch.cuda.Event(enable_timing=True) for k in SPAN_EVENTS}
        self.in_use = False


# Each stage is timed between two events on its own stream, recorded after that stream's wait for
# the stage before: "restore" does not include the wait for the previous batch's restore.
SPAN_EVENTS = ("start", "uploaded", "restore_start", "restored", "download_start", "done")


class _CudaPending:
    def __init__(self, slot: _Slot, n: int, origin: torch.cuda.Event):
        self.slot, self.n, self.origin, self.timings, self.spans = slot, n, origin, {}, {}

    def result(self) -> np.ndarray:
        e = self.slot.events
        e["done"].synchronize()
        self.timings = {"upload": e["start"].elapsed_time(e["uploaded"]),
                        "restore": e["restore_start"].elapsed_time(e["restored"]),
                        "download": e["download_start"].elapsed_time(e["done"])}
        # ms since the backend's first batch, per event: what benchmarks/gpu_check.py reads the overlap from
        self.spans = {k: self.origin.elapsed_time(v) for k, v in e.items()}
        out = self.slot.host_out.numpy()[:self.n].copy()
        self.slot.in_use = False
        return out


class _CudaDoubleBuffer:
    """Two slots alternate; upload, compute and download each run on their own CUDA stream."""

    def __init__(self, restorer: FrameRestorer):
        self.restorer = restorer
        self.device = torch.device("cuda")
        self.upload, self.compute, self.download = (torch.cuda.Stream() for _ in range(3))
        self.slots: list[_Slot | None] = [None, None]
        self.turn = 0
        self.origin: torch.cuda.Event | None = None

    def submit(self, frames: np.ndarray, previous: np.ndarray | None = None,
               ycbcr: YCbCrFormat | None = None) -> _CudaPending:
        n = len(frames)
        if previous is not None:  # one upload: the frames, then their previous restored frames
            frames = np.concatenate([frames, previous])
        index, self.turn = self.turn, 1 - self.turn
        slot = self.slots[index]
        if slot is None or slot.shape != frames.shape:
            slot = self.slots[index] = _Slot(frames.shape, self.device)
        slot.events["done"].synchronize()  # the slot's previous batch has left the device
        slot.host_in.numpy()[...] = frames
        with torch.cuda.stream(self.upload):
            if self.origin is None:
                self.origin = torch.cuda.Event(enable_timing=True)
                self.origin.record()
            slot.events["start"].record()
            slot.device_in.copy_(slot.host_in, non_blocking=True)
            slot.events["uploaded"].record()
        with torch.cuda.stream(self.compute), torch.inference_mode():
            self.compute.wait_event(slot.events["uploaded"])
            slot.events["restore_start"].record()
            out = self.restorer.restore_coded(slot.device_in[:n], slot.device_in[n:] if previous is not None else None,
                                              ycbcr)
            slot.events["restored"].record()
        with torch.cuda.stream(self.download):
            self.download.wait_event(slot.events["restored"])
            slot.events["download_start"].record()
            out.record_stream(self.download)
            slot.host_out[:n].copy_(out, non_blocking=True)
            slot.events["done"].record()
        slot.in_use = True
        return _CudaPending(slot, n, self.origin)
