"""Colour on the device (streamrestore.io.ycbcr_torch, the torch backend's `takes_i420`): the tensor maths
against the host path, and whole runs on real H.264 files and a real RTSP camera whose frames travel as
their decoded planes. Run here on the CPU; the same code runs on CUDA (benchmarks/gpu_check.py)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from media import BT601, BT709, FULL, LIMITED, make_clip, synth_image
from rtsp_fixtures import rtsp_clip, rtsp_server  # noqa: F401
from streamrestore.backends.registry import create_backend
from streamrestore.io import ycbcr, ycbcr_torch
from streamrestore.io.images import ImageSink
from streamrestore.io.rtsp import RtspSource
from streamrestore.io.video import VideoFileSink, VideoFileSource
from streamrestore.runtime.pipeline import run_pipeline

CODINGS = [(BT709, LIMITED, "yuv420p"), (BT601, LIMITED, "yuv420p"), (BT709, FULL, "yuvj420p"), (9, LIMITED, "yuv420p")]


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A picture with edges, gradients and noise (saturated corners too): what rounding differences show in."""
    rng = np.random.default_rng(seed)
    image = synth_image(width, height, seed).astype(np.int16) + rng.normal(0, 25, (height, width, 3)).astype(np.int16)
    image[: height // 5, : width // 5] = (255, 0, 255)
    return image.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("matrix,colour_range,pix_fmt", CODINGS)
@pytest.mark.parametrize("width,height", [(96, 64), (54, 38)])  # 54x38: odd chroma width and height
def test_device_maths_is_the_host_maths(matrix, colour_range, pix_fmt, width, height):
    fmt = ycbcr.YCbCrFormat.of(pix_fmt, matrix, colour_range)
    image = photo(width, height)
    frame = ycbcr._general_rgb_to_frame(image, fmt)
    planes = ycbcr.frame_to_i420(frame)
    # decoding: the same float maths as the host's general path, and within the fixed-point path's rounding
    device_rgb = ycbcr_torch.i420_to_rgb(torch.from_numpy(planes)[None], fmt)[0].numpy().astype(int)
    assert np.array_equal(device_rgb, ycbcr._general_frame_to_rgb(frame, fmt))
    fast = device_rgb - ycbcr.frame_to_rgb(frame, fmt)
    assert np.abs(fast).max() <= 1 and abs(fast.mean()) < 0.01 and (fast != 0).mean() < 0.05
    # encoding: the host's planes (general and fixed-point), within one level at float rounding ties
    device_planes = ycbcr_torch.rgb_to_i420(torch.from_numpy(image)[None], fmt)[0].numpy().astype(int)
    assert device_planes.shape == (height * 3 // 2, width)
    for host in (planes, ycbcr.frame_to_i420(ycbcr.rgb_to_frame(image, fmt))):
        diff = device_planes - host
        assert np.abs(diff).max() <= 1 and abs(diff.mean()) < 0.01 and (diff != 0).mean() < 0.01


def test_batches_convert_frame_by_frame():
    fmt = ycbcr.YCbCrFormat.of("yuv420p", BT709, LIMITED)
    images = np.stack([photo(64, 48, seed) for seed in range(3)])
    planes = ycbcr_torch.rgb_to_i420(torch.from_numpy(images), fmt)
    for image, plane in zip(images, planes):
        assert torch.equal(plane, ycbcr_torch.rgb_to_i420(torch.from_numpy(image)[None], fmt)[0])
    back = ycbcr_torch.i420_to_rgb(planes, fmt)
    assert back.shape == images.shape and torch.equal(back[1], ycbcr_torch.i420_to_rgb(planes[1:2], fmt)[0])


def decoded_planes(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray() for frame in container.decode(video=0)])


@pytest.mark.parametrize("batch", [1, 3])
def test_a_file_restored_with_colour_on_the_device(tmp_path, weights, batch):
    """Lossless in and out (x264 qp 0): the output's planes are exactly the model's on FFmpeg's decode of the
    input, converted the device's way; the host-colour run differs only by conversion rounding."""
    clip = make_clip(tmp_path / "in.mp4", width=96, height=64, frames=7, audio=False)
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(weights), noise="zero",
                            device_colour=True)
    assert engine.takes_i420
    source = VideoFileSource(str(clip))
    result = run_pipeline(source, engine, VideoFileSink(str(tmp_path / "dev.mp4"), source.info, crf=0), batch=batch)
    assert result.frames == 7 and source.i420

    fmt = ycbcr.YCbCrFormat.of("yuv420p", BT709, LIMITED)
    planes = torch.from_numpy(decoded_planes(clip))
    with torch.inference_mode():  # in the run's batches (a file's batches are full but the last)
        expected = np.concatenate([engine.restorer.restore_coded(planes[i: i + batch], None, fmt).numpy()
                                   for i in range(0, len(planes), batch)])
    assert np.array_equal(decoded_planes(tmp_path / "dev.mp4"), expected)

    host_engine = create_backend("denoise", backend="torch", device="cpu", weights=str(weights), noise="zero",
                                 device_colour=False)
    host_source = VideoFileSource(str(clip))
    run_pipeline(host_source, host_engine, VideoFileSink(str(tmp_path / "host.mp4"), host_source.info, crf=0), batch=batch)
    assert not host_source.i420
    diff = decoded_planes(tmp_path / "dev.mp4").astype(int) - decoded_planes(tmp_path / "host.mp4")
    assert abs(diff.mean()) < 0.02 and np.abs(diff).mean() < 0.3 and np.abs(diff).max() <= 8


def test_odd_sizes_and_other_outputs_take_the_rgb_path(tmp_path, weights):
    """An odd-sized clip has no I420 form: its frames go as R'G'B' (4:4:4 out). A folder of images gets
    R'G'B' from I420 frames."""
    clip = make_clip(tmp_path / "odd.mp4", width=65, height=49, frames=3, audio=False, pix_fmt="yuv444p")
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(weights), device_colour=True)
    source = VideoFileSource(str(clip))
    assert run_pipeline(source, engine, VideoFileSink(str(tmp_path / "odd-out.mp4"), source.info)).frames == 3

    even = make_clip(tmp_path / "even.mp4", width=64, height=48, frames=2, audio=False)
    source = VideoFileSource(str(even))
    source.i420 = True
    frames = list(source)
    source.close()
    assert all(f.ycbcr is not None and f.image.shape == (72, 64) for f in frames)  # 48 rows + 2 x 12
    sink = ImageSink(str(tmp_path / "pngs"), single=False)
    for frame in frames:
        sink.write(frame.image, frame)
    written = av.open(str(sink.written[0])).decode(video=0).__next__().to_ndarray(format="rgb24")
    assert np.abs(written.astype(int) - frames[0].rgb()).max() == 0


def test_a_backend_without_device_colour_refuses_planes(weights):
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(weights))
    assert not engine.takes_i420  # on the CPU the host converts (OpenCV's fixed-point path is faster there)
    fmt = ycbcr.YCbCrFormat.of("yuv420p", BT709, LIMITED)
    with pytest.raises(ValueError, match="takes_i420"):
        engine.submit(np.zeros((1, 72, 64), np.uint8), ycbcr=fmt)
    device = create_backend("denoise", backend="torch", device="cpu", weights=str(weights), device_colour=True)
    with pytest.raises(ValueError, match="3H/2"):
        device.submit(np.zeros((1, 71, 64), np.uint8), ycbcr=fmt)


@pytest.mark.rtsp
def test_a_camera_restored_with_colour_on_the_device(rtsp_server, tmp_path, weights):
    engine = create_backend("denoise", backend="torch", device="cpu", weights=str(weights), device_colour=True)
    source = RtspSource(rtsp_server.url("cam"), duration=1.5)
    out = tmp_path / "cam.mp4"
    result = run_pipeline(source, engine, VideoFileSink(str(out), source.info), batch=1)
    assert source.i420 and result.frames >= 10
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == result.frames and frames[0].shape == (48, 64, 3)
