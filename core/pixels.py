"""Pixel layout and sample-format conversions between user arrays and the network.

Users hand us HxW, HxWx1, HxWx2 (gray+alpha), HxWx3 or HxWx4 arrays in
uint8, uint16 or float32.  The network sees float channels in [0, 1]; alpha
is set aside untouched and 16-bit or float data never pass through 8 bits.
Float input outside [0, 1] is clipped with a warning (the network knows
nothing else), and a network answer that is not finite is an error, never a
black picture.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}


@dataclass
class SplitImage:
    """An image separated into what the network restores and what it must not touch."""

    color: np.ndarray  # float32 HxWxC, C in (1, 3), values in [0, 1] for integer input
    alpha: np.ndarray | None  # original alpha plane, original dtype
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def is_gray(self) -> bool:
        return self.color.shape[2] == 1


def plain_array(image: np.ndarray) -> np.ndarray:
    """``image`` as a plain ndarray: subclasses (np.matrix, memmap...) change what indexing and reshaping
    do, which the tiling code relies on.  A masked array is refused: its mask would be dropped silently."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if isinstance(image, np.ma.MaskedArray):
        raise TypeError("masked arrays are not supported: fill the masked pixels (image.filled(...)) first")
    return image if type(image) is np.ndarray else np.asarray(image)


def split_image(image: np.ndarray) -> SplitImage:
    """Validate an array and split it into float colour channels and untouched alpha."""
    image = plain_array(image)
    dtype = image.dtype
    if dtype not in SCALES:
        raise TypeError(f"unsupported pixel type {dtype}; use uint8, uint16 or float32")
    if image.ndim == 2:
        planes = image[:, :, None]
    elif image.ndim == 3 and image.shape[2] in (1, 2, 3, 4):
        planes = image
    else:
        raise ValueError(f"unsupported image shape {image.shape}; expected HxW or HxWxC with C in 1..4")
    if planes.shape[0] == 0 or planes.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    channels = planes.shape[2]
    has_alpha = channels in (2, 4)
    color = planes[:, :, : channels - 1] if has_alpha else planes
    alpha = planes[:, :, channels - 1].copy() if has_alpha else None
    scaled = color.astype(np.float32)
    if dtype != np.float32:
        scaled /= SCALES[dtype]
    else:
        if not np.all(np.isfinite(scaled)):
            raise ValueError("image contains NaN or infinite values")
        low, high = float(scaled.min()), float(scaled.max())
        if low < 0.0 or high > 1.0:
            warnings.warn(f"float samples span [{low:.3g}, {high:.3g}]; clipped to [0, 1], the range the network "
                          "knows (scale HDR data down first to keep its highlights)", InputClippedWarning, stacklevel=3)
            np.clip(scaled, 0.0, 1.0, out=scaled)
    return SplitImage(np.ascontiguousarray(scaled), alpha, image.shape, dtype)


class InputClippedWarning(UserWarning):
    """Float input outside [0, 1] was clipped before restoration."""


def merge_image(restored: np.ndarray, split: SplitImage) -> np.ndarray:
    """Put restored float channels back into the caller's shape and dtype, alpha unchanged.

    ``restored`` is consumed: integer conversion happens in place, so a
    24-megapixel photo needs no extra full-size float copies at the end.
    Non-finite values (damaged weights, an overflow in low precision) raise ValueError.
    """
    if not np.isfinite(restored).all():
        bad = int(np.count_nonzero(~np.isfinite(restored)))
        raise ValueError(f"the network returned NaN or infinite values for {bad} of {restored.size} samples "
                         "(damaged weights, or an overflow at this precision; try --precision fp32)")
    if split.dtype != np.float32:
        scale = SCALES[split.dtype]
        np.multiply(restored, scale, out=restored)
        np.rint(restored, out=restored)
        np.clip(restored, 0, scale, out=restored)
        restored = restored.astype(split.dtype)
    else:
        restored = restored.astype(np.float32, copy=False)
    if split.alpha is not None:
        restored = np.concatenate([restored, split.alpha[:, :, None]], axis=2)
    return restored.reshape(split.shape)
