"""PSNR-over-strength curves: the grid they are measured on and the best strength each one says.

Kept apart from training/qf_head.py (which needs PyTorch to measure the curves) so that what
reads collected curves, such as training/single_saves.py, runs in the base install too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Strengths every patch is restored at; the label is the best of them (refined by a parabola).
QF_GRID = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100)


def best_qf(curves: np.ndarray, grid: Sequence[int] = QF_GRID) -> np.ndarray:
    """Each curve's best strength, refined between grid points by a parabola through its peak."""
    grid = np.asarray(grid, dtype=np.float64)
    peak = curves.argmax(axis=1)
    best = grid[peak].copy()
    for row, index in enumerate(peak):
        if 0 < index < len(grid) - 1:
            x, y = grid[index - 1 : index + 2], curves[row, index - 1 : index + 2].astype(np.float64)
            a, b, _ = np.polyfit(x, y, 2)
            if a < 0:
                best[row] = float(np.clip(-b / (2 * a), x[0], x[2]))
    return best
