"""The one JPEG path used by training, evaluation, QF estimation and tests.

Everything goes through libjpeg (via OpenCV) with its default 4:2:0 chroma
subsampling for colour, so that training degradations, the evaluation's JPEG
column and the paper's libjpeg numbers all describe the same encoder.
"""

from __future__ import annotations

import cv2
import numpy as np


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``image`` (uint8 HxW gray or HxWx3 RGB) as JPEG at ``quality`` and decode it."""
    if image.dtype != np.uint8:
        raise TypeError(f"JPEG round trip needs uint8 pixels, got {image.dtype}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    color = image.ndim == 3 and image.shape[2] == 3
    source = image[:, :, ::-1] if color else image.reshape(image.shape[:2])
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(source), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("libjpeg failed to encode the image")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(decoded[:, :, ::-1]) if color else decoded


def double_jpeg(image: np.ndarray, quality1: int, quality2: int, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The paper's double compression: JPEG(drop_first_rows_cols(JPEG(x, q1), shift), q2).

    A non-zero ``shift`` misaligns the second 8x8 grid with the first, which is
    what real crops-then-resaves do.  The result is smaller by ``shift``; the
    matching clean image is ``image[shift[0]:, shift[1]:]``.
    """
    rows, cols = shift
    first = jpeg_roundtrip(image, quality1)
    return jpeg_roundtrip(np.ascontiguousarray(first[rows:, cols:]), quality2)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Luma as MATLAB's rgb2ycbcr (BT.601, limited range 16..235), rounded to uint8.

    The paper's gray numbers are on this Y; OpenCV's full-range conversion
    would shift them by tenths of a dB.
    """
    rgb = image.astype(np.float64)
    y = (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0 + 16.0
    return np.clip(np.round(y), 0, 255).astype(np.uint8)
