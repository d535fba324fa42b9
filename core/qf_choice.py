"""The one QF a person should see first for an image, with where it came from.

A dialog or a report can show a single number.  The most trustworthy source
wins: the JPEG file's own tables when the pixels are still that file's
(same size, libjpeg tables), then FBCNN-D when the pixels carry a JPEG
signature (it reads the QF of a single JPEG exactly on ../shared/data/val,
and finds the stronger compression of a non-aligned double JPEG, where the
network's single prediction lands between the two qualities), and otherwise
the network's prediction (resized or never-compressed pixels, where FBCNN-D
finds no grid).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .qf_estimation import dominant_quality, header_quality
from .quality import QFEstimate, clamp_qf
from .restorer import Restorer

MIN_DOMINANT_SIDE = 24


def header_estimate(path: str | os.PathLike[str] | None, height: int, width: int) -> QFEstimate | None:
    """The header QF of ``path`` when it is a JPEG of this size written with standard tables."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with Image.open(path) as image:
            if image.format != "JPEG" or image.size not in ((width, height), (height, width)):
                return None
        found = header_quality(path)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if found is None or not found.exact:
        return None
    return QFEstimate(found.quality, "header")


def choose_qf(
    restorer: Restorer,
    image: np.ndarray,
    *,
    jpeg_path: str | os.PathLike[str] | None = None,
    header: QFEstimate | None = None,
) -> QFEstimate:
    """Header (given, or read from ``jpeg_path``), else FBCNN-D on the pixels, else the network.

    ``predicted`` is always filled in, so a caller can show both numbers.
    """
    predicted = restorer.predict_qf(image)
    height, width = image.shape[:2]
    chosen = header or header_estimate(jpeg_path, height, width)
    if chosen is None and min(height, width) >= MIN_DOMINANT_SIDE:
        planes = image if image.ndim == 3 else image[:, :, None]
        color = planes[:, :, : 3 if planes.shape[2] >= 3 else 1]
        scale = {np.dtype(np.uint8): 1.0, np.dtype(np.uint16): 255.0 / 65535.0}.get(color.dtype, 255.0)
        eight_bit = np.clip(np.rint(color.astype(np.float32) * scale), 0, 255).astype(np.uint8)
        found = dominant_quality(eight_bit)
        if found.quality is not None:
            chosen = QFEstimate(found.quality, "dominant", shift=found.shift, double_compressed=found.double_compressed)
    if chosen is None:
        chosen = QFEstimate(clamp_qf(predicted), "predicted")
    chosen.predicted = predicted
    return chosen
