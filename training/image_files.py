"""The clean images of training and evaluation folders, read without PyTorch (``fbcnn eval`` needs none)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from fbcnn_plugins.core.jpeg import rgb_to_y

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: training image folder not found")
        files.extend(sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no lossless images found under {', '.join(map(str, folders))}")
    return files


def load_training_image(path: Path, gray: bool) -> np.ndarray:
    """RGB uint8 for colour models, MATLAB-style Y for gray models (gray sources stay gray)."""
    with Image.open(path) as image:
        if image.mode in ("L", "I;16", "I"):
            array = np.asarray(image.convert("L"))
            return array if gray else np.repeat(array[:, :, None], 3, axis=2)
        array = np.asarray(image.convert("RGB"))
    return rgb_to_y(array) if gray else array
