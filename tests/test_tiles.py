"""Large frames restore in tiles (streamrestore.model.tiles): the whole-frame result in bounded memory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrestore.backends.registry import create_backend
from streamrestore.model import tiles
from streamrestore.model.network import SIZES, ConditionalNAFUNet, NAFBlock
from streamrestore.restorer import Restorer
from streamrestore.tasks import shipped_weights


def photo(h: int, w: int, n: int = 1, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with sigma-20 noise: a frame with content at every scale."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([128 + 90 * np.sin(9 * x + 3 * y), 128 + 80 * np.cos(7 * y - 2 * x), 255 * x * y], -1)
    return np.clip(base + rng.normal(0, 20, (n, h, w, 3)), 0, 255).astype(np.uint8)


def compare(tiled: np.ndarray, whole: np.ndarray) -> tuple[int, float]:
    """(max |difference|, signed mean difference) in levels."""
    assert tiled.shape == whole.shape and tiled.dtype == whole.dtype == np.uint8
    d = tiled.astype(int) - whole
    return int(np.abs(d).max()), float(d.mean())


@pytest.fixture(autouse=True)
def small_frames_are_large(monkeypatch, tmp_path_factory):
    """Tile frames above 10 000 pixels, so test frames of ~0.03 MP take the tiled path."""
    monkeypatch.setattr(tiles, "TILE_ABOVE", 10_000)
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path_factory.getbasetemp() / "engines"))


def windows_seen(backend) -> list[tuple[int, int]]:
    """Record the (H, W) of every input the backend's network is run on."""
    seen: list[tuple[int, int]] = []
    backend.restorer.model.network.intro.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2:]))
    return seen


@pytest.mark.parametrize("temporal", [False, True], ids=["denoise", "denoise-temporal"])
def test_tiles_give_the_whole_frame_result_with_bounded_windows(temporal):
    weights = str(shipped_weights("denoise", temporal=temporal))
    frames = photo(157, 221)  # padded to 160x224: partial tiles at the right and bottom
    previous = photo(157, 221, seed=1) if temporal else None
    whole = create_backend("denoise", backend="torch", device="cpu", weights=weights, tile=0)(frames, previous)
    backend = create_backend("denoise", backend="torch", device="cpu", weights=weights, tile=96)
    seen = windows_seen(backend)
    out = backend(frames, previous)
    worst, mean = compare(out, whole)
    assert worst <= 1 and abs(mean) < 0.05
    assert np.abs(out.astype(int) - frames).mean() > 3  # it did restore (not a copy of the input)
    halo = -(-backend.restorer.model.network.receptive_radius // 16) * 16
    assert max(h * w for h, w in seen) <= (96 + 2 * halo) ** 2  # no network input is the whole frame


def test_tiles_with_two_steps_fixed_noise_and_a_batch():
    weights = str(shipped_weights("denoise"))
    frames = photo(80, 120, n=2)
    kw = dict(device="cpu", weights=weights, steps=2, noise="fixed")
    whole = create_backend("denoise", backend="torch", tile=0, **kw)(frames)
    worst, mean = compare(create_backend("denoise", backend="torch", tile=64, **kw)(frames), whole)
    assert worst <= 1 and abs(mean) < 0.05


def test_default_cpu_backends_send_large_frames_to_torch_tiles():
    weights = str(shipped_weights("denoise"))
    backend = create_backend("denoise", backend="onnxruntime", device="cpu", weights=weights)
    small, large = photo(64, 96), photo(120, 130)
    assert backend.name == "onnxruntime" and "MP: torch in 512-pixel tiles" in backend.model
    graph_saw = []
    whole_graph = backend.inner.submit
    backend.inner.submit = lambda frames, *a: graph_saw.append(frames.shape) or whole_graph(frames, *a)
    reference = create_backend("denoise", backend="torch", device="cpu", weights=weights, tile=0)
    assert compare(backend(small), reference(small))[0] <= 1
    worst, mean = compare(backend(large), reference(large))
    assert worst <= 1 and abs(mean) < 0.05
    assert graph_saw == [small.shape]  # the large frame never reached the whole-frame graph
    assert set(backend.last_timings) >= {"upload", "restore", "download"}


def test_restorer_tiles_large_frames_too():
    r = Restorer("denoise", device="cpu", backend="torch", weights=str(shipped_weights("denoise")))
    frame = photo(120, 130)[0]
    whole = create_backend("denoise", backend="torch", device="cpu", weights=str(shipped_weights("denoise")), tile=0)(frame[None])[0]
    assert compare(r(frame), whole)[0] <= 1


@pytest.mark.parametrize("tile", [-1, 2.5, "big", True])
def test_a_bad_tile_is_one_line(tile):
    with pytest.raises(ValueError, match=r"^tile=.*0 to restore whole frames$"):
        create_backend("denoise", backend="torch", device="cpu", tile=tile)


def test_receptive_radius_is_what_gradients_measure():
    """With the channel means held fixed, an output pixel depends on inputs at most receptive_radius
    away, and on some that far (so the tiles' halo is neither short nor wasteful)."""
    torch.manual_seed(0)
    net = ConditionalNAFUNet(SIZES["small"])
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    for block in net.modules():
        if isinstance(block, NAFBlock):
            block.channel_mean = lambda y: torch.ones(y.shape[0], y.shape[1], 1, 1)
    size, reach = 160, 0
    for offset in (0, 7):
        x = torch.randn(1, 3, size, size, requires_grad=True)
        cond = torch.randn(1, 3, size, size, requires_grad=True)
        c = size // 2 + offset
        net(x, cond, torch.full((1,), 0.5))[0, :, c, c].sum().backward()
        ys, xs = torch.nonzero(x.grad.abs().sum((0, 1)) + cond.grad.abs().sum((0, 1)), as_tuple=True)
        reach = max(reach, c - ys.min().item(), ys.max().item() - c, c - xs.min().item(), xs.max().item() - c)
    assert reach == net.receptive_radius
