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
        # Regular files only: a FIFO or device named like an image would block the reader forever.
        files.extend(sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    if not files:
        raise FileNotFoundError(f"no lossless images found under {', '.join(map(str, folders))}")
    return files


def load_training_image(path: Path, gray: bool) -> np.ndarray:
    """RGB uint8 for colour models, MATLAB-style Y for gray models (gray sources stay gray).

    16-bit gray is scaled to 8 bits (Pillow's own conversion would clip it); a file that cannot
    be read raises ValueError naming it.
    """
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I"):
                array = _gray_to_8bit(np.asarray(image), image.mode)
                return array if gray else np.repeat(array[:, :, None], 3, axis=2)
            if image.mode == "L":
                array = np.asarray(image)
                return array if gray else np.repeat(array[:, :, None], 3, axis=2)
            array = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error})") from None
    return rgb_to_y(array) if gray else array


def _gray_to_8bit(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (or 32-bit integer) gray to 8 bits by its depth: 65535 becomes 255, nothing is clipped."""
    values = array.astype(np.float64)
    top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
