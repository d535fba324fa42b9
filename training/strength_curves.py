"""PSNR-over-strength curves: the grid they are measured on and the best strength each one says.

Kept apart from training/qf_head.py (which needs PyTorch to measure the curves) so that what
reads collected curves, such as training/single_saves.py, runs in the base install too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

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


def load_patches(paths: Sequence[Path], log: Callable[[str], None] = lambda line: None) -> dict[str, np.ndarray]:
    """Collected patches (``qf_head collect``) from one or more files, as one set.

    Files measured on different grids cannot be joined (their curves' columns mean different QFs),
    so they are refused, naming the file.  A flat patch (a clear sky in gray) can come back exact at
    some strengths: an infinite PSNR, no best strength to learn, and inf - inf in a regret would turn
    a whole fit into NaN; such patches are left out (``log`` says how many).
    """
    parts = [dict(np.load(path)) for path in paths]
    for path, part in zip(paths, parts):
        if not np.array_equal(part["grid"], parts[0]["grid"]):
            raise ValueError(f"{path}: measured on the grid {part['grid'].tolist()}, not {parts[0]['grid'].tolist()} "
                             f"like {paths[0]}; collections on different grids cannot be joined")
    keys = set.intersection(*(set(part) for part in parts))  # older collections lack "side"
    data = {key: np.concatenate([part[key] for part in parts]) if key != "grid" else parts[0][key] for key in keys}
    finite = np.isfinite(data["curves"]).all(axis=1)
    if not finite.all():
        log(f"left out {int((~finite).sum())} patches restored exactly at some strength (infinite PSNR)")
    return {key: value[finite] if key != "grid" else value for key, value in data.items()}


def header_of(family: str, params: str) -> float:
    """The QF a collected chain's file header says (its last save), or NaN when it has none."""
    values = json.loads(params)
    if family in ("single", "single444", "single422", "custom", "sharpened", "drawn"):
        return float(values[0])  # custom tables: the libjpeg quality they were tilted from
    return float(values[1] if family in ("aligned", "shifted") else values[2]) if family != "clean" else float("nan")
