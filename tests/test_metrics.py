"""The metrics behind `fbcnn eval` and the benchmarks, against their reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fbcnn_plugins.core.metrics import psnr, ssim

from conftest import natural_image, pillow_jpeg


def reference_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """scikit-image's SSIM set up as Wang et al. (the paper's tables are computed this way)."""
    return structural_similarity(
        reference.astype(np.float64), test.astype(np.float64), data_range=255.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, channel_axis=2 if reference.ndim == 3 else None,
    )


@pytest.mark.parametrize("quality", [10, 50, 95])
@pytest.mark.parametrize("shape", [(96, 128, 3), (61, 45, 3), (40, 33)])
def test_ssim_equals_scikit_image_on_jpeg_damage(shape, quality):
    clean = natural_image(shape[0], shape[1], seed=quality)
    if len(shape) == 2:
        clean = clean[:, :, 1]
    damaged = pillow_jpeg(clean, quality)
    ours, theirs = ssim(clean, damaged), reference_ssim(clean, damaged)
    assert 0.2 < theirs < 1.0  # real damage, not a trivial score
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert psnr(clean, damaged) == pytest.approx(peak_signal_noise_ratio(clean, damaged, data_range=255), abs=1e-9)


def test_ssim_of_an_image_with_itself_is_one_and_drops_with_noise():
    clean = natural_image(64, 64, seed=5)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    assert ssim(clean, clean) == pytest.approx(1.0, abs=1e-12)
    assert ssim(clean, noisy) == pytest.approx(reference_ssim(clean, noisy), abs=1e-9)
    assert ssim(clean, noisy) < 0.95


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 20), np.uint8), np.zeros((8, 20), np.uint8))
