"""``fbcnn export-onnx``: the graph vs-mlrt runs, checked in ONNX Runtime against the PyTorch restorer."""

from __future__ import annotations

import numpy as np
import pytest

from fbcnn_plugins.core.restorer import Restorer

from conftest import natural_image, pillow_jpeg
from onnx_helpers import exported_onnx

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'fbcnn-plugins[onnx]')")
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'fbcnn-plugins[onnx]')")


def _run(path, image: np.ndarray, qf: int) -> np.ndarray:
    """The graph on an HxWxC float image at ``qf``: the image's channels plus one plane of QF/100."""
    planes = np.concatenate([image.transpose(2, 0, 1), np.full((1, *image.shape[:2]), qf / 100, np.float32)])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": planes[None].astype(np.float32)})
    return out[0].transpose(1, 2, 0)


def _restored(model, image: np.ndarray, qf: int) -> np.ndarray:
    """The PyTorch restorer's output in fp32, clamped to [0, 1] as the graph clamps it."""
    return np.clip(Restorer(model.source, device="cpu", precision="fp32").restore(image, qf=qf).image, 0, 1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-20)))


@pytest.fixture(scope="module")
def jpeg_image() -> np.ndarray:
    # 60x84: not a multiple of 8, so the graph's own padding is exercised as in PyTorch.
    return pillow_jpeg(natural_image(60, 84, seed=3), 15).astype(np.float32) / 255


def test_graph_has_the_layout_vs_mlrt_expects(tiny_color_model):
    model = onnx.load(str(exported_onnx(tiny_color_model.source)))
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    def dims(value):
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
    assert graph_input.name == "input" and graph_output.name == "output"
    assert dims(graph_input)[:2] == [1, 4] and dims(graph_output)[:2] == [1, 3]
    assert all(isinstance(d, str) for d in dims(graph_input)[2:])  # height and width are dynamic
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # what the plugins hand over
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["fbcnn_qf_plane"] == "QF/100" and meta["fbcnn_color"] == "rgb"
    assert meta["fbcnn_weights_sha256"] == tiny_color_model.card["sha256"]


@pytest.mark.parametrize("qf", [10, 60])
def test_fp32_graph_equals_the_restorer(tiny_color_model, jpeg_image, qf):
    got = _run(exported_onnx(tiny_color_model.source), jpeg_image, qf)
    expected = _restored(tiny_color_model, jpeg_image, qf)
    assert got.shape == jpeg_image.shape
    assert np.abs(got - expected).max() < 1e-4


def test_overshoot_is_clamped_for_the_network_and_given_back(tiny_color_model, jpeg_image):
    # As after a YUV -> RGB conversion: values a little outside [0, 1] near saturated edges.
    rng = np.random.default_rng(0)
    low, high = float(jpeg_image.min()), float(jpeg_image.max())
    stretched = (jpeg_image - low) / max(high - low, 1e-6)  # the photo's own range mapped onto [0, 1] first
    image = (stretched * 1.2 - 0.1 + rng.normal(0, 0.01, jpeg_image.shape)).astype(np.float32)
    assert image.min() < 0 and image.max() > 1
    clamped = np.clip(image, 0, 1)
    expected = _restored(tiny_color_model, clamped, 30) + (image - clamped)
    assert np.abs(_run(exported_onnx(tiny_color_model.source), image, 30) - expected).max() < 1e-4


def test_the_qf_plane_sets_the_strength(tiny_color_model, jpeg_image):
    path = exported_onnx(tiny_color_model.source)
    assert np.abs(_run(path, jpeg_image, 10) - _run(path, jpeg_image, 90)).mean() > 1e-3


def test_fp16_graph_is_close_to_fp32(tiny_color_model, jpeg_image):
    fp16 = exported_onnx(tiny_color_model.source, fp16=True)
    fp32 = exported_onnx(tiny_color_model.source)
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size  # the weights are stored in half precision
    assert {p.key: p.value for p in onnx.load(str(fp16)).metadata_props}["fbcnn_precision"] == "fp16"
    expected = _restored(tiny_color_model, jpeg_image, 20)
    assert _psnr(_run(fp16, jpeg_image, 20), expected) > 50


def test_gray_graph_takes_two_planes(tiny_gray_model, jpeg_image):
    path = exported_onnx(tiny_gray_model.source)
    gray = jpeg_image[:, :, 1:2]
    expected = _restored(tiny_gray_model, gray[:, :, 0], 25)
    got = _run(path, gray, 25)
    assert got.shape == gray.shape and np.abs(got[:, :, 0] - expected).max() < 1e-4


def test_cli_refuses_bad_requests_without_writing(tmp_path, capsys, tiny_color_model):
    from fbcnn_plugins.cli.main import main

    for output, message in (
        (tmp_path / "x.onx", "must end in .onnx"),
        (tmp_path / "missing" / "x.onnx", "does not exist"),
    ):
        assert main(["export-onnx", str(tiny_color_model.source), "-o", str(output)]) == 2
        assert message in capsys.readouterr().err
    assert main(["export-onnx", "no-such-model", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "no model named 'no-such-model'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
