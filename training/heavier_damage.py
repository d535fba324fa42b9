"""Fit a model's margins for ``auto``'s heavier-damage rule (rule 3 of :mod:`fbcnn_plugins.core.qf_choice`).

    python -m fbcnn_plugins.training.heavier_damage --data runs/qf-head-gray/margins/q1.npz \\
        runs/qf-head-gray/margins/q2.npz --card fbcnn_plugins/models/fbcnn-gray-small.json

A file whose header says a high QF may hide an earlier, heavier compression under a resize: rule 3
then follows the strength head, but only where both of the network's readings sit far enough
under the header's QF (:class:`~fbcnn_plugins.core.qf_choice.HeavierDamageRule`), because each
reading alone sometimes takes a single save's content for damage.  How far a single save's
readings stray is the model's own: the gray model's QF estimate stays closer to a single save's
QF than the colour model's, so the colour model's margins make it fall back on the header for
many re-saved photos it reads correctly.

The readings steady with the pixels they are pooled over, so the margins are fitted apart for
each band of image sizes (:data:`SIZE_BANDS`, by the shorter side): on gray training patches
the 128-191 px ones need far wider margins than those of 192 px and more.

The patches come from ``qf_head collect --min-last-save 80`` (single saves, sharpened saves and
re-saved photos whose last save was at QF 80 or more, each with its PSNR curve and both
readings).  Every pair of margins in the grid below is scored: each patch restored at the
strength head's reading where the rule takes it, else at the header's QF through the card's
single-save table (what ``auto`` does).  The pair kept is, among those that cost each family of
files saved once (plain and sharpened single saves: the mean PSNR lost against each patch's
best) at most :data:`SINGLE_SAVE_TOLERANCE` more than the default margins
(:data:`~fbcnn_plugins.core.qf_choice.DEFAULT_HEAVIER_DAMAGE`) do, the one that loses least on
the re-saved photos (collected in proportion to how often people meet each chain); ties go to
the larger margins.  A band keeps the default margins where it has fewer than
:data:`MIN_BAND_PATCHES` of either kind, or where the pair chosen on one half of its patches
costs the other half's single saves of either family more than that tolerance (out of fold, both
ways, averaged over :data:`SPLITS` random halvings): there its single saves are too few, or their
readings stray too far, to choose margins on.  The report beside the margins gives, per band, the out-of-fold losses next to those of the
default margins and of a rule that never fires.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fbcnn_plugins.core.model_card import read_card
from fbcnn_plugins.core.qf_choice import (
    DEFAULT_HEAVIER_DAMAGE, HEAVIER_DAMAGE_MIN_SIDE, HIGH_LAST_SAVE, HeavierDamageRule, single_save_strengths,
)

from .single_saves import head_readings, record_in_card, regret_db
from .strength_curves import header_of, load_patches

#: The margins tried (QF steps under the header's QF): the strength head's and the QF estimate's.
STRENGTH_MARGINS = (5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 25.0)
QUALITY_MARGINS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
#: Files saved once (plainly, or after sharpening, as phones do): the rule must leave them be.
SINGLE_SAVE_FAMILIES = ("single", "sharpened")
#: Photos saved again after an earlier compression: what the rule is for.
RESAVED_FAMILIES = ("resized", "aligned", "shifted")
#: The bands of image sizes (shorter side, px, from each value up to the next) fitted apart; the
#: first is where rule 3 starts (:data:`~fbcnn_plugins.core.qf_choice.HEAVIER_DAMAGE_MIN_SIDE`).
SIZE_BANDS = (HEAVIER_DAMAGE_MIN_SIDE, 192)
#: A band with fewer single saves or re-saved photos than this keeps the default margins.
MIN_BAND_PATCHES = 50
#: How much more (dB, mean over a single-save family) a pair may cost the single saves than the
#: default margins do: a fifth of the 0.05 dB that ``auto`` may lose on single saves against their
#: header's QF (benchmarks/bench_single_saves.py).
SINGLE_SAVE_TOLERANCE = 0.01
#: Random halvings the out-of-fold check averages over.
SPLITS = 5


def rule_rows(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows rule 3 decides on (a single-save or re-saved family, last save at least
    :data:`~fbcnn_plugins.core.qf_choice.HIGH_LAST_SAVE`, large enough), with their header QFs."""
    family = np.array([str(name) for name in data["family"]])
    headers = np.array([header_of(f, str(p)) for f, p in zip(family, data["params"])])
    keep = (np.isin(family, (*SINGLE_SAVE_FAMILIES, *RESAVED_FAMILIES)) & (np.nan_to_num(headers) >= HIGH_LAST_SAVE)
            & (data["side"] >= HEAVIER_DAMAGE_MIN_SIDE))
    rows = np.flatnonzero(keep)
    return rows, headers[rows]


def score(data: dict[str, np.ndarray], rows: np.ndarray, header: np.ndarray, quality: np.ndarray, strength: np.ndarray,
          table: Sequence[Sequence[float]] | None, rule: HeavierDamageRule | None) -> np.ndarray:
    """PSNR each row loses against its best under ``rule`` (None: a rule that never fires)."""
    # rule 2's strength where rule 3 does not fire: the header's QF, through the single-save table where the card has one
    fallback = header if not table else single_save_strengths(header, strength, table)
    taken = np.zeros(len(rows), bool) if rule is None else rule.takes(header, quality, strength)
    return regret_db(data["curves"], data["grid"], rows, np.where(taken, np.clip(np.rint(strength), 1, 100), fallback))


def choose_margins(data: dict[str, np.ndarray], rows: np.ndarray, header: np.ndarray, quality: np.ndarray,
                   strength: np.ndarray, table: Sequence[Sequence[float]] | None) -> HeavierDamageRule:
    """The pair of margins the module docstring describes, on ``rows``."""
    family = np.array([str(name) for name in data["family"][rows]])
    default = score(data, rows, header, quality, strength, table, DEFAULT_HEAVIER_DAMAGE)
    single_saves = [family == name for name in SINGLE_SAVE_FAMILIES if (family == name).any()]
    scored = []
    for strength_margin in STRENGTH_MARGINS:
        for quality_margin in QUALITY_MARGINS:
            rule = HeavierDamageRule(strength_margin, quality_margin, fitted=True)
            lost = score(data, rows, header, quality, strength, table, rule)
            if max(float((lost - default)[rows_of].mean()) for rows_of in single_saves) <= SINGLE_SAVE_TOLERANCE:
                scored.append((float(lost[np.isin(family, RESAVED_FAMILIES)].mean()), -strength_margin, -quality_margin, rule))
    return min(scored, key=lambda item: item[:3])[3]


def family_losses(data: dict[str, np.ndarray], rows: np.ndarray, lost: np.ndarray) -> dict[str, float]:
    family = np.array([str(name) for name in data["family"][rows]])
    return {name: round(float(lost[family == name].mean()), 4) for name in (*SINGLE_SAVE_FAMILIES, *RESAVED_FAMILIES)
            if (family == name).any()}


def out_of_fold(data: dict[str, np.ndarray], rows: np.ndarray, header: np.ndarray, quality: np.ndarray,
                strength: np.ndarray, table: Sequence[Sequence[float]] | None, repeats: int = SPLITS) -> dict[str, Any]:
    """Mean PSNR lost per family with the margins chosen on the other half, over ``repeats`` random
    halvings (repeated two-fold cross-validation: one halving's answer turns on the few single saves
    that fall on either side), next to the default margins and a rule that never fires; the
    single-save cost is the mean over the halvings of the costlier single-save family's."""
    family = np.array([str(name) for name in data["family"][rows]])
    default = score(data, rows, header, quality, strength, table, DEFAULT_HEAVIER_DAMAGE)
    never = score(data, rows, header, quality, strength, table, None)
    chosen_runs, costs = [], []
    for seed in range(repeats):
        half = np.random.default_rng(seed).random(len(rows)) < 0.5
        chosen = np.zeros(len(rows))
        for train in (half, ~half):
            test = ~train
            rule = choose_margins(data, rows[train], header[train], quality[train], strength[train], table)
            chosen[test] = score(data, rows[test], header[test], quality[test], strength[test], table, rule)
        chosen_runs.append(chosen)
        costs.append(max(float((chosen - default)[family == name].mean()) for name in SINGLE_SAVE_FAMILIES
                         if (family == name).any()))
    return {"patches": int(len(rows)), "single_save_cost_db": round(float(np.mean(costs)), 4),
            "single_save_cost_by_halving_db": [round(cost, 4) for cost in costs],
            "fitted_margins_db": family_losses(data, rows, np.mean(chosen_runs, axis=0)),
            "default_margins_db": family_losses(data, rows, default), "never_db": family_losses(data, rows, never)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="patches from qf_head collect --min-last-save 80")
    parser.add_argument("--card", type=Path, required=True, help="the weights card the margins go into")
    parser.add_argument("--dry-run", action="store_true", help="print the margins and their report, write nothing")
    args = parser.parse_args(argv)
    try:
        data = load_patches(args.data)
        card = read_card(args.card)
        quality, strength = head_readings(data, args.card)
    except (OSError, ValueError, KeyError) as error:
        print(f"heavier_damage: {error}", file=sys.stderr)
        return 2
    rows, header = rule_rows(data)
    family = np.array([str(name) for name in data["family"][rows]])
    if not (np.isin(family, SINGLE_SAVE_FAMILIES).any() and np.isin(family, RESAVED_FAMILIES).any()):
        print(f"heavier_damage: {', '.join(map(str, args.data))}: the fit needs single saves and re-saved photos "
              f"whose last save was at QF {HIGH_LAST_SAVE} or more (qf_head collect --min-last-save {HIGH_LAST_SAVE})",
              file=sys.stderr)
        return 2
    table = (card.get("strength_head") or {}).get("single_save_strength")
    quality, strength = quality[rows], strength[rows]
    sides = data["side"][rows]
    margins, reports = [], []
    for low, high in zip(SIZE_BANDS, (*SIZE_BANDS[1:], np.inf)):
        band = (sides >= low) & (sides < high)
        enough = all(np.isin(family[band], names).sum() >= MIN_BAND_PATCHES for names in (SINGLE_SAVE_FAMILIES, RESAVED_FAMILIES))
        report = (out_of_fold(data, rows[band], header[band], quality[band], strength[band], table) if enough
                  else {"patches": int(band.sum())})
        fitted = enough and report["single_save_cost_db"] <= SINGLE_SAVE_TOLERANCE
        rule = (choose_margins(data, rows[band], header[band], quality[band], strength[band], table) if fitted
                else DEFAULT_HEAVIER_DAMAGE)
        margins.append([int(low), rule.strength_margin, rule.quality_margin])
        reports.append({"min_side": int(low), "fitted": bool(fitted), **report})
    record = {"heavier_damage_margins": margins,
              "heavier_damage_fit": {
                  "command": "python -m fbcnn_plugins.training.heavier_damage", "data": [str(p) for p in args.data],
                  "strength_margins": list(STRENGTH_MARGINS), "quality_margins": list(QUALITY_MARGINS),
                  "single_save_tolerance_db": SINGLE_SAVE_TOLERANCE, "min_band_patches": MIN_BAND_PATCHES,
                  "halvings": SPLITS,
                  "out_of_fold_by_size": reports}}
    record_in_card(record, card, args.card, dry_run=args.dry_run, what="the margins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
