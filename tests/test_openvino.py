"""The OpenVINO backend restores as the PyTorch path does (the openvino extra; skipped without it)."""

import numpy as np
import pytest
import torch

from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.openvino_backend import openvino_unavailable
from fbcnn_plugins.core.restorer import Restorer, resolve_backend

from conftest import natural_image, pillow_jpeg

pytestmark = pytest.mark.skipif(openvino_unavailable() is not None, reason=str(openvino_unavailable()))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, bundled_color_model):
    """A cache of its own, so the test also sees the conversion happen and be reused."""
    return tmp_path_factory.mktemp("openvino-cache")


def restorers(model, cache, monkeypatch, precision, **options):
    monkeypatch.setenv("FBCNN_CACHE_DIR", str(cache))
    return (Restorer(model, device="cpu", backend="openvino", precision=precision, **options),
            Restorer(model, device="cpu", backend="pytorch", precision=precision, **options))


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


def test_dynamic_shapes_batches_and_the_cache(bundled_color_model, cache, monkeypatch):
    openvino, pytorch = restorers(bundled_color_model, cache, monkeypatch, "fp32", tile=128)
    _, network = openvino.prepared_network(False)
    graphs = sorted(cache.rglob("*.xml"))
    assert [p.stem for p in graphs] == ["blind", "decode", "encode", "quality", "restore"]  # converted once, kept
    stamps = [p.stat().st_mtime_ns for p in graphs]
    # Tiles of several sizes (the 128-px tiling of an odd-sized image) and a batch of frames.
    degraded = pillow_jpeg(natural_image(203, 301, seed=10), 30)
    assert psnr(openvino.restore(degraded, qf=30).image, pytorch.restore(degraded, qf=30).image) >= 50
    frames = torch.from_numpy(np.stack([pillow_jpeg(natural_image(64, 96, seed=s), 30) for s in (1, 2)])).permute(0, 3, 1, 2)
    frames = frames.float() / 255
    _, torch_network = pytorch.prepared_network(False)
    batch_ov = openvino.forward(network, openvino.to_device(frames), 30)
    batch_pt = pytorch.forward(torch_network, pytorch.to_device(frames), 30)
    assert batch_ov.shape == (2, 3, 64, 96)
    assert 10 * np.log10(1 / float(((batch_ov - batch_pt) ** 2).mean())) >= 50
    # A second restorer for the same weights reads the cached graphs instead of converting again.
    again, _ = restorers(bundled_color_model, cache, monkeypatch, "fp32")
    again.prepared_network(False)
    assert [p.stat().st_mtime_ns for p in sorted(cache.rglob("*.xml"))] == stamps


def test_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("FBCNN_BACKEND", raising=False)
    import platform

    expected = "openvino" if platform.machine().lower() in ("x86_64", "amd64") else "pytorch"
    assert resolve_backend("auto", cpu, torch.float32) == expected
    assert resolve_backend("auto", cpu, torch.float16) == "pytorch"  # OpenVINO is not asked for fp16
    monkeypatch.setenv("FBCNN_BACKEND", "pytorch")
    assert resolve_backend("auto", cpu, torch.bfloat16) == "pytorch"
    assert resolve_backend("openvino", cpu, torch.bfloat16) == "openvino"  # an explicit choice wins
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        resolve_backend("tensorrt", cpu, torch.float32)
