"""Fit a model's single-save table: the strength that restores a JPEG saved once at QF q best.

    python -m fbcnn_plugins.training.single_saves --data runs/qf-head-gray/patches-a.npz \\
        runs/qf-head-gray/patches-c.npz --card fbcnn_plugins/models/fbcnn-gray-small.json

A network trained on the QF label should restore a single save best at its own QF, and the
bundled colour model does (on 4:2:0 files).  The gray model does not: on gray training patches
saved once it restores best a few QF above the save's QF (about +4 at QF 20, +9 at QF 40-50,
+2 at QF 80), so ``auto`` at the header's QF smooths a little too much.  This fits that offset
from the patches ``training/qf_head.py collect`` measured (their PSNR curves over the strength
grid), as the median best strength of the single saves near each knot QF, made non-decreasing,
and writes it into the card's ``strength_head.single_save_strength``, where ``auto``
(:func:`fbcnn_plugins.core.qf_choice.single_save_table`) reads it.  The weights are untouched
(the card's sha256 still holds).  The report beside the table is out-of-fold: the table fitted on
one half of the patches, scored on the other, and the other way round.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fbcnn_plugins.core.model_card import read_card
from fbcnn_plugins.core.weights import write_text_atomic

from .strength_curves import best_qf, load_patches

#: The QFs the table has a point at; each takes the single saves within :data:`KNOT_REACH` of it.
KNOTS = (10, 20, 30, 40, 50, 60, 70, 80, 90)
KNOT_REACH = 7
#: A knot with fewer single saves near it keeps its own QF (no evidence, no offset).
MIN_PATCHES = 5
#: Patches smaller than this are left out: ``auto`` trusts a header on any size, but the PSNR
#: curves of 16-24 px patches are too noisy to say where the best strength lies.
MIN_SIDE = 32


def single_saves(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the single-save patches large enough to measure: (row indices, save QF, best strength)."""
    rows = np.array([i for i, family in enumerate(data["family"]) if str(family) == "single"
                     and int(data["side"][i]) >= MIN_SIDE], dtype=int)
    quality = np.array([ast.literal_eval(str(data["params"][i]))[0] for i in rows], dtype=np.float64)
    return rows, quality, best_qf(data["curves"][rows], data["grid"])


def fit_table(quality: np.ndarray, best: np.ndarray) -> list[list[float]]:
    """(save QF, best strength) pairs: the median best near each knot, non-decreasing, 1 -> 1 and 100 -> 100."""
    points = []
    for knot in KNOTS:
        near = np.abs(quality - knot) <= KNOT_REACH
        points.append(float(np.median(best[near])) if near.sum() >= MIN_PATCHES else float(knot))
    strengths = np.maximum.accumulate(np.clip(points, 1, 100))
    return [[1.0, 1.0]] + [[float(k), round(float(s), 1)] for k, s in zip(KNOTS, strengths)] + [[100.0, 100.0]]


def regret_db(curves: np.ndarray, grid: np.ndarray, rows: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    """PSNR each row loses against its best when restored at ``strengths`` (linear between grid points)."""
    best = best_qf(curves[rows], grid)
    grid = np.asarray(grid, dtype=np.float64)
    return np.array([np.interp(b, grid, curves[r]) - np.interp(s, grid, curves[r])
                     for r, b, s in zip(rows, best, strengths)])


def out_of_fold(data: dict[str, np.ndarray], seed: int = 0) -> dict[str, Any]:
    """Mean PSNR lost at the save's QF and at the table's strength, each half scored by the other half's table."""
    rows, quality, best = single_saves(data)
    half = np.random.default_rng(seed).random(len(rows)) < 0.5
    at_save, at_table = [], []
    for train in (half, ~half):
        table = fit_table(quality[train], best[train])
        test = ~train
        mapped = np.interp(quality[test], *zip(*table))
        at_save.append(regret_db(data["curves"], data["grid"], rows[test], quality[test]))
        at_table.append(regret_db(data["curves"], data["grid"], rows[test], mapped))
    save, table = np.concatenate(at_save), np.concatenate(at_table)
    return {"patches": int(len(rows)), "regret_at_save_qf_db": float(save.mean()),
            "regret_at_table_db": float(table.mean()),
            "share_worse_by_0_05_db": float(np.mean(table > save + 0.05)),
            "largest_extra_loss_db": float(np.max(table - save))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="patches from qf_head collect")
    parser.add_argument("--card", type=Path, required=True, help="the weights card the table goes into")
    parser.add_argument("--dry-run", action="store_true", help="print the table and its report, write nothing")
    args = parser.parse_args(argv)
    try:
        data = load_patches(args.data)
        card = read_card(args.card)
    except (OSError, ValueError, KeyError) as error:
        print(f"single_saves: {error}", file=sys.stderr)
        return 2
    _, quality, best = single_saves(data)
    table = fit_table(quality, best)
    record = {"single_save_strength": table, "single_save_fit": {
        "command": "python -m fbcnn_plugins.training.single_saves", "data": [str(p) for p in args.data],
        "knots": list(KNOTS), "knot_reach": KNOT_REACH, "min_side": MIN_SIDE, "out_of_fold": out_of_fold(data)}}
    print(json.dumps(record, indent=1))
    if not args.dry_run:
        card["strength_head"] = {**(card.get("strength_head") or {}), **record}
        write_text_atomic(args.card, json.dumps(card, indent=2) + "\n")
        print(f"wrote the table into {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
