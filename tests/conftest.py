"""Shared fixtures: tiny random IR-CM checkpoints (no shipped weights needed)."""
import pytest
import torch

from streamrestore.model.checkpoint import save_model
from streamrestore.model.consistency import ConsistencyModel
from streamrestore.model.network import add_history_input
from streamrestore.training.loop import build_model


def perturbed_model(size: str = "small", seed: int = 0):
    """A small model whose zero-initialised last layer is given random weights, so F is not 0."""
    torch.manual_seed(seed)
    model = build_model(size)
    with torch.no_grad():
        model.network.ending.weight.normal_(0, 0.05)
    return model.eval()


@pytest.fixture
def tiny_weights(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_model(path, perturbed_model(), {"task": "denoise", "kind": "ir-cm", "architecture": {"size": "small"}})
    return path


def temporal_model(seed: int = 0) -> ConsistencyModel:
    """A small temporal model whose history input really changes the output."""
    model = perturbed_model(seed=seed)
    temporal = ConsistencyModel(add_history_input(model.network), model.schedule)
    with torch.no_grad():
        temporal.network.history_intro.weight.normal_(0, 0.2)
    return temporal.eval()


@pytest.fixture
def temporal_weights(tmp_path):
    path = tmp_path / "tiny-temporal.safetensors"
    save_model(path, temporal_model(), {"task": "denoise", "kind": "ir-cm", "architecture": {"size": "small"}})
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One tiny random checkpoint per test module, so the backends built from it in that module share
    their exported graphs (a module may define its own `weights`)."""
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(path, perturbed_model())
    return str(path)


@pytest.fixture
def shared_engine_cache(tmp_path_factory, monkeypatch):
    """One engine cache for the whole test session (graphs exported once), never the user's."""
    monkeypatch.setenv("STREAMRESTORE_CACHE", str(tmp_path_factory.getbasetemp() / "engines"))
