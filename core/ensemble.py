"""Geometric self-ensemble: restore the 8 flips/rotations of an input and average them.

A convolutional network's errors differ between the orientations of the same picture, so
their mean is closer to the truth than any one of them (EDSR's "+" models, SwinIR's x8
test). It costs 8 network passes; the QF that drives them is estimated once, beforehand.
The training crops start at random offsets inside the JPEG grid, so the network does not
depend on where a flipped tile's 8x8 blocks begin.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: The dihedral group of the square: 4 rotations, each with and without a horizontal flip.
TRANSFORMS = range(8)


def transform(image: np.ndarray, index: int) -> np.ndarray:
    """One of the 8 dihedral transforms of an NCHW array."""
    if index >= 4:
        image = np.flip(image, -1)
    return np.ascontiguousarray(np.rot90(image, index % 4, axes=(-2, -1)))


def inverse_transform(image: np.ndarray, index: int) -> np.ndarray:
    """Undo :func:`transform` with the same index."""
    image = np.rot90(image, -(index % 4), axes=(-2, -1))
    return np.ascontiguousarray(np.flip(image, -1) if index >= 4 else image)


def self_ensemble(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """The float32 mean of ``run`` over the 8 transforms of ``image``, mapped back to its orientation."""
    total = None
    for index in TRANSFORMS:
        restored = inverse_transform(run(transform(image, index)), index).astype(np.float32)
        total = restored if total is None else total + restored
    assert total is not None
    return total / len(TRANSFORMS)
