"""The Restorer API: layouts, sample formats, alpha, gray handling, QF control, devices."""

import numpy as np
import pytest

from fbcnn_plugins.core.device import DeviceError, resolve_device, resolve_precision
from fbcnn_plugins.core.restorer import Restorer

from conftest import natural_image, needs_shared, needs_torch, pillow_jpeg


@pytest.fixture(scope="module")
def jpeg_rgb():
    return pillow_jpeg(natural_image(72, 88), 20)


@pytest.fixture()
def color_restorer(tiny_color_model):
    return Restorer(tiny_color_model, device="cpu")


def test_uint8_rgb_round_trip(color_restorer, jpeg_rgb):
    result = color_restorer.restore(jpeg_rgb)
    assert result.image.shape == jpeg_rgb.shape and result.image.dtype == np.uint8
    assert result.qf.source == "predicted" and 1 <= result.qf.value <= 100
    assert result.qf.value == round(result.qf.predicted)


def test_fixed_qf_is_used_and_changes_the_output(color_restorer, jpeg_rgb):
    low = color_restorer.restore(jpeg_rgb, qf=5)
    high = color_restorer.restore(jpeg_rgb, qf=95)
    assert (low.qf.value, low.qf.source) == (5, "given")
    assert not np.array_equal(low.image, high.image)


@pytest.mark.parametrize("bad", [0, 101, "high", 12.5, True])
def test_bad_qf_is_rejected(color_restorer, jpeg_rgb, bad):
    with pytest.raises(ValueError, match="qf"):
        color_restorer.restore(jpeg_rgb, qf=bad)


def test_alpha_passes_through_untouched(color_restorer, jpeg_rgb):
    alpha = np.random.default_rng(0).integers(0, 256, jpeg_rgb.shape[:2], dtype=np.uint8)
    rgba = np.dstack([jpeg_rgb, alpha])
    result = color_restorer.restore(rgba, qf=30)
    assert result.image.shape == rgba.shape
    assert np.array_equal(result.image[:, :, 3], alpha)
    assert np.array_equal(result.image[:, :, :3], color_restorer.restore(jpeg_rgb, qf=30).image)


def test_uint16_keeps_sixteen_bit_precision(bundled_color_model, jpeg_rgb):
    # A trained model, so outputs are real images rather than a random network's clipped extremes.
    color_restorer = Restorer(bundled_color_model, device="cpu")
    deep = jpeg_rgb.astype(np.uint16) * 257
    out = color_restorer.restore(deep, qf=30).image
    assert out.dtype == np.uint16 and out.shape == deep.shape
    # Values between the 8-bit levels exist: nothing went through 8 bits.
    assert np.count_nonzero(out % 257) > out.size // 2
    as_float = color_restorer.restore(jpeg_rgb.astype(np.float32) / 255, qf=30).image
    assert np.abs(out / 65535.0 - np.clip(as_float, 0, 1)).max() < 1.0 / 65535 + 1e-6


def test_float32_in_float32_out(color_restorer, jpeg_rgb):
    image = jpeg_rgb.astype(np.float32) / 255
    out = color_restorer.restore(image, qf=30).image
    assert out.dtype == np.float32 and out.shape == image.shape
    reference = color_restorer.restore(jpeg_rgb, qf=30).image
    assert np.abs(np.clip(out, 0, 1) * 255 - reference).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("shape", [(40, 48), (40, 48, 1), (40, 48, 2)])
def test_gray_layouts_go_to_the_gray_model(tiny_gray_model, shape):
    image = natural_image(40, 48)[:, :, 1].reshape(shape[:2])
    if len(shape) == 3:
        planes = [image] if shape[2] == 1 else [image, np.full_like(image, 200)]
        image = np.dstack(planes)
    restorer = Restorer(tiny_gray_model, device="cpu")
    out = restorer.restore(image, qf=20).image
    assert out.shape == image.shape and out.dtype == np.uint8
    if len(shape) == 3 and shape[2] == 2:
        assert np.all(out[:, :, 1] == 200)


def test_gray_image_with_colour_model_uses_channel_replication(tiny_color_model):
    gray = natural_image(40, 48)[:, :, 0]
    restorer = Restorer(tiny_color_model, device="cpu")
    out = restorer.restore(gray, qf=20).image
    rgb = restorer.restore(np.dstack([gray] * 3).astype(np.float32) / 255, qf=20).image
    expected = np.clip(np.rint(rgb.mean(axis=2) * 255), 0, 255)
    assert out.shape == gray.shape
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_colour_image_with_gray_model_is_refused(tiny_gray_model, jpeg_rgb):
    with pytest.raises(ValueError, match="gray model"):
        Restorer(tiny_gray_model, device="cpu").restore(jpeg_rgb)


@pytest.mark.parametrize("bad, error", [
    (np.zeros((4, 4, 5), np.uint8), ValueError),
    (np.zeros((4, 4), np.int32), TypeError),
    (np.zeros((0, 4), np.uint8), ValueError),
    (np.full((8, 8), np.nan, np.float32), ValueError),
])
def test_bad_arrays_are_rejected(color_restorer, bad, error):
    with pytest.raises(error):
        color_restorer.restore(bad)


def test_device_and_precision_names():
    assert resolve_device("cpu").type == "cpu" and str(resolve_device("cpu")) == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="fp16 is not supported on the CPU"):
        resolve_precision("fp16", "cpu")
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(DeviceError, match="unknown precision"):
        resolve_precision("int8", "cpu")


@needs_torch
def test_auto_device_is_the_gpu_pytorch_sees():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA"):
            resolve_device("cuda:0")


def test_bf16_on_cpu_stays_close_to_fp32(tiny_color_model, jpeg_rgb):
    # fp32 named explicitly: the default is bf16 on CPUs that compute it in hardware.
    fp32 = Restorer(tiny_color_model, device="cpu", precision="fp32").restore(jpeg_rgb, qf=20).image.astype(float)
    bf16 = Restorer(tiny_color_model, device="cpu", precision="bf16").restore(jpeg_rgb, qf=20).image.astype(float)
    assert 0 < np.abs(fp32 - bf16).mean() < 3.0  # bf16 really ran, and stayed close


@needs_shared
@pytest.mark.parametrize("gray", [False, True], ids=["color", "gray"])
def test_bundled_models_are_picked_per_image_and_remove_real_jpeg_damage(gray):
    """The shipped weights themselves: the right model per image type, a real gain, a sane QF."""
    from fbcnn_plugins.core.jpeg import rgb_to_y
    from fbcnn_plugins.core.metrics import psnr

    clean = natural_image(256, 256, seed=4)
    if gray:
        clean = rgb_to_y(clean)
    degraded = pillow_jpeg(clean, 20)
    restorer = Restorer(device="cpu")
    assert restorer.model_for(gray).name == ("fbcnn-gray-small" if gray else "fbcnn-color-small")
    result = restorer.restore(degraded)
    assert result.image.shape == clean.shape and result.image.dtype == np.uint8
    assert psnr(clean, result.image) > psnr(clean, degraded) + 0.5
    assert abs(result.qf.predicted - 20) < 10  # the QF head was trained to read the damage


def test_ensemble_transforms_are_the_eight_distinct_symmetries_and_undo_exactly():
    from fbcnn_plugins.core.ensemble import TRANSFORMS, inverse_transform, transform

    image = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)  # non-square: rotations swap H, W
    seen = set()
    for index in TRANSFORMS:
        moved = transform(image, index)
        assert np.array_equal(inverse_transform(moved, index), image)
        seen.add((tuple(moved.shape), tuple(moved.flatten().tolist())))
    assert len(seen) == 8


def test_self_ensemble_averages_the_orientations_and_beats_one_pass(bundled_color_model):
    from fbcnn_plugins.core.ensemble import inverse_transform, transform
    from fbcnn_plugins.core.metrics import psnr

    clean = natural_image(96, 128, seed=6)
    degraded = pillow_jpeg(clean, 15)
    one_pass = Restorer(bundled_color_model, device="cpu")
    ensemble = Restorer(bundled_color_model, device="cpu", self_ensemble=True)
    averaged = ensemble.restore(degraded, qf=15).image
    # The same mean built from outside: each orientation restored on its own, turned back, averaged.
    x = degraded.transpose(2, 0, 1)[None].astype(np.float32) / 255
    outputs = [inverse_transform(one_pass.restore_tensor(transform(x, i), 15)[0], i) for i in range(8)]
    expected = np.clip(np.rint(np.stack(outputs).mean(0)[0].transpose(1, 2, 0) * 255), 0, 255)
    assert np.abs(averaged.astype(float) - expected).max() <= 1
    assert psnr(clean, averaged) > psnr(clean, one_pass.restore(degraded, qf=15).image)


@pytest.mark.parametrize("with_head", [True, False])
def test_predict_strength_reads_the_strength_head_where_the_model_has_one(
    bundled_color_model, tiny_color_model, jpeg_rgb, with_head
):
    """The VapourSynth filter's per-frame control: the strength head's value, else the QF head's."""
    restorer = Restorer(bundled_color_model if with_head else tiny_color_model, device="cpu")
    quality, strength = restorer.predict_qf_and_strength(jpeg_rgb)
    assert (strength is not None) == with_head
    _, network = restorer.prepared_network(False)
    image = (jpeg_rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    expected = strength if with_head else quality
    assert restorer.predict_strength(image, network) == pytest.approx(expected, abs=1e-3)
