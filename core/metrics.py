"""Image quality metrics on the paper's convention: 8-bit images, border 0.

SSIM is scikit-image's implementation configured as Wang et al. (Gaussian
window, sigma 1.5, 11 taps); PSNR-B follows Yim & Bovik (2011), adding the
blocking effect factor to the MSE.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

BLOCK = 8


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM; for colour images the mean over channels."""
    channel_axis = 2 if reference.ndim == 3 and reference.shape[2] > 1 else None
    ref = reference.astype(np.float64).squeeze()
    out = test.astype(np.float64).squeeze()
    return float(
        structural_similarity(
            ref, out, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            channel_axis=channel_axis,
        )
    )


def blocking_effect_factor(image: np.ndarray, block: int = BLOCK) -> float:
    """BEF of one channel: how much more the pixel steps across block edges exceed those inside blocks."""
    image = image.astype(np.float64)
    height, width = image.shape
    col_diff = (image[:, :-1] - image[:, 1:]) ** 2  # step between column c and c+1
    row_diff = (image[:-1, :] - image[1:, :]) ** 2
    col_edges = np.zeros(width - 1, dtype=bool)
    col_edges[block - 1 :: block] = True
    row_edges = np.zeros(height - 1, dtype=bool)
    row_edges[block - 1 :: block] = True

    boundary_sum = col_diff[:, col_edges].sum() + row_diff[row_edges, :].sum()
    inner_sum = col_diff[:, ~col_edges].sum() + row_diff[~row_edges, :].sum()
    n_boundary = height * col_edges.sum() + width * row_edges.sum()
    n_inner = height * (~col_edges).sum() + width * (~row_edges).sum()
    if n_boundary == 0 or n_inner == 0:
        return 0.0
    d_boundary = boundary_sum / n_boundary
    d_inner = inner_sum / n_inner
    eta = math.log2(block) / math.log2(min(height, width)) if min(height, width) > 1 else 0.0
    return float(max(0.0, eta * (d_boundary - d_inner)))


def psnr_b(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR-B: PSNR with the test image's blocking effect factor added to the MSE, averaged over channels."""
    ref = reference.astype(np.float64)
    out = test.astype(np.float64)
    if ref.ndim == 2:
        ref, out = ref[:, :, None], out[:, :, None]
    values = []
    for c in range(ref.shape[2]):
        mse = float(np.mean((ref[:, :, c] - out[:, :, c]) ** 2))
        total = mse + blocking_effect_factor(out[:, :, c])
        values.append(math.inf if total == 0 else 10.0 * math.log10(255.0**2 / total))
    return float(np.mean(values))
