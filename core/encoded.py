"""What an engine keeps of one tile between its encoder pass and its decoder pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class EncodedTile:
    """One input's encoder outputs (padded to a multiple of 8) and its QF branch's pooled features.

    ``quality_sum`` (N, C, float32) sums the QF branch's features over ``quality_count``
    positions, so sums from several tiles pool into one image's features.  ``features`` are
    the engine's own (PyTorch tensors on the device); an engine that does not keep them
    leaves the tuple empty.
    """

    features: tuple[Any, ...]
    quality_sum: np.ndarray | Any
    quality_count: int
    height: int
    width: int
