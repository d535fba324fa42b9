"""The OpenVINO engine (the base install's) restores as the PyTorch path does, from graphs built from the weights."""

import numpy as np
import pytest

from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.openvino_backend import openvino_unavailable
from fbcnn_plugins.core.restorer import Restorer, resolve_backend
from fbcnn_plugins.core.torch_extra import torch_installed

from conftest import natural_image, needs_torch, pillow_jpeg

pytestmark = pytest.mark.skipif(openvino_unavailable() is not None, reason=str(openvino_unavailable()))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, bundled_color_model):
    """A cache of its own, so the test also sees the compilation cached and reused."""
    return tmp_path_factory.mktemp("openvino-cache")


def restorers(model, cache, monkeypatch, precision, **options):
    monkeypatch.setenv("FBCNN_CACHE_DIR", str(cache))
    return (Restorer(model, device="cpu", backend="openvino", precision=precision, **options),
            Restorer(model, device="cpu", backend="pytorch", precision=precision, **options))


@needs_torch
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("height, width", [(200, 264), (560, 1000)], ids=["one-tile", "six-tiles"])
def test_openvino_matches_pytorch(bundled_color_model, cache, monkeypatch, precision, height, width):
    clean = natural_image(height, width, seed=9)
    degraded = pillow_jpeg(clean, 20)
    openvino, pytorch = restorers(bundled_color_model, cache, monkeypatch, precision)
    # A given QF: the same tiling and blending, the engine alone differs.
    fixed_ov, fixed_pt = openvino.restore(degraded, qf=20), pytorch.restore(degraded, qf=20)
    assert psnr(fixed_ov.image, fixed_pt.image) >= 50
    # The predicted QF: near PyTorch's whole-image prediction, and the output follows it.
    blind_ov = openvino.restore(degraded)
    assert abs(blind_ov.qf.predicted - pytorch.predict_qf(degraded)) < 1.5
    assert blind_ov.qf.source == "predicted" and blind_ov.qf.value == round(blind_ov.qf.predicted)
    assert psnr(blind_ov.image, pytorch.restore(degraded, qf=blind_ov.qf.value).image) >= 50
    assert abs(psnr(clean, fixed_ov.image) - psnr(clean, fixed_pt.image)) < 0.02


def test_dynamic_shapes_batches_and_the_compiled_cache(bundled_color_model, cache, monkeypatch):
    monkeypatch.setenv("FBCNN_CACHE_DIR", str(cache))
    openvino = Restorer(bundled_color_model, device="cpu", backend="openvino", precision="fp32", tile=128)
    _, network = openvino.prepared_network(False)
    compiled = sorted(p for p in cache.rglob("*") if p.is_file())
    assert compiled  # OpenVINO's compiled-model cache, kept for the next start
    # Tiles of several sizes (the 128-px tiling of an odd-sized image) against the same image in one tile.
    degraded = pillow_jpeg(natural_image(203, 301, seed=10), 30)
    whole = Restorer(bundled_color_model, device="cpu", backend="openvino", precision="fp32", tile=512)
    assert psnr(openvino.restore(degraded, qf=30).image, whole.restore(degraded, qf=30).image) >= 40
    # A batch of frames gives what each frame gives alone.
    frames = np.stack([pillow_jpeg(natural_image(64, 96, seed=s), 30) for s in (1, 2)]).transpose(0, 3, 1, 2)
    frames = frames.astype(np.float32) / 255
    batch = openvino.forward(network, frames, 30)
    assert batch.shape == (2, 3, 64, 96)
    single = np.concatenate([openvino.forward(network, frames[i : i + 1], 30) for i in range(2)])
    assert np.abs(batch - single).max() < 1e-4
    # A second restorer for the same weights compiles from the cache: no new cache files.
    again = Restorer(bundled_color_model, device="cpu", backend="openvino", precision="fp32")
    again.prepared_network(False)
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == compiled


@needs_torch
def test_batches_match_pytorch(bundled_color_model, cache, monkeypatch):
    openvino, pytorch = restorers(bundled_color_model, cache, monkeypatch, "fp32")
    frames = np.stack([pillow_jpeg(natural_image(64, 96, seed=s), 30) for s in (1, 2)]).transpose(0, 3, 1, 2)
    frames = frames.astype(np.float32) / 255
    batch_ov = openvino.forward(openvino.prepared_network(False)[1], frames, 30)
    batch_pt = pytorch.forward(pytorch.prepared_network(False)[1], frames, 30)
    assert 10 * np.log10(1 / float(((batch_ov - batch_pt) ** 2).mean())) >= 50


def test_graphs_refuse_tensors_that_do_not_fit(bundled_color_model):
    from fbcnn_plugins.core.openvino_backend import OpenVINONetwork

    tensors = dict(bundled_color_model.tensors)
    tensors["m_down2.0.res.0.weight"] = tensors["m_down2.0.res.0.weight"][:, :5]
    with pytest.raises(ValueError, match="do not fit"):
        OpenVINONetwork(tensors, in_channels=3, blocks=2, global_residual=True)
    tensors = dict(bundled_color_model.tensors)
    del tensors["m_tail.bias"]
    with pytest.raises(ValueError, match="m_tail.bias"):
        OpenVINONetwork(tensors, in_channels=3, blocks=2, global_residual=True)


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("FBCNN_BACKEND", raising=False)
    import platform

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    expected = "openvino" if x86 or not torch_installed() else "pytorch"
    assert resolve_backend("auto", "cpu", "fp32") == expected
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        resolve_backend("tensorrt", "cpu", "fp32")
    assert resolve_backend("openvino", "cpu", "bf16") == "openvino"  # an explicit choice wins
    if torch_installed():
        assert resolve_backend("auto", "cpu", "fp16") == "pytorch"  # OpenVINO is not asked for fp16
        monkeypatch.setenv("FBCNN_BACKEND", "pytorch")
        assert resolve_backend("auto", "cpu", "bf16") == "pytorch"
    else:
        with pytest.raises(ValueError, match=r"fbcnn-plugins\[torch\]"):
            resolve_backend("pytorch", "cpu", "fp32")
