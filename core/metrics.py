"""Image quality metrics on the paper's convention: 8-bit images, border 0.

SSIM follows Wang et al. (2004) as scikit-image computes it with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``: an 11-tap
Gaussian window, mirrored borders, the mean over the part of the image the
window fits inside.  It is written here on OpenCV's Gaussian filter because
scikit-image (with SciPy, about 190 MB) would be in the base install for this
one function; the test suite checks both agree.  PSNR-B follows Yim & Bovik
(2011), adding the blocking effect factor to the MSE.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BLOCK = 8
#: SSIM's Gaussian window: sigma 1.5, cut at 3.5 sigma (11 taps), as Wang et al. and scikit-image.
SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)
#: The stabilising constants of SSIM, K1 = 0.01 and K2 = 0.03 of the 8-bit range.
SSIM_C1 = (0.01 * 255.0) ** 2
SSIM_C2 = (0.03 * 255.0) ** 2


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM of two 8-bit-range images; for colour images the mean over channels."""
    ref = reference.astype(np.float64)
    out = test.astype(np.float64)
    if ref.ndim == 2:
        ref, out = ref[:, :, None], out[:, :, None]
    return float(np.mean([_ssim_channel(ref[:, :, c], out[:, :, c]) for c in range(ref.shape[2])]))


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one channel: local means and (population) covariances under the Gaussian window."""
    size = 2 * SSIM_RADIUS + 1
    if min(x.shape) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} pixels, got {x.shape[1]}x{x.shape[0]}")

    def window(a: np.ndarray) -> np.ndarray:
        # BORDER_REFLECT repeats the edge pixel (d c b a | a b c d), as scipy's "reflect" mode.
        return cv2.GaussianBlur(a, (size, size), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = window(x), window(y)
    var_x = window(x * x) - mu_x * mu_x
    var_y = window(y * y) - mu_y * mu_y
    cov = window(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    inner = score[SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]  # where the window lies inside the image
    return float(inner.mean())


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
