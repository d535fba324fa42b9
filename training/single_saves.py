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

Drawn images (screenshots, UI, text) saved once are a case of their own: the gray model restores
them best far lighter still (a save at QF 75 best at about QF 84).  ``--family drawn`` fits their
table from patches collected with ``qf_head collect --families single drawn`` into
``strength_head.drawn_save_strength``, with ``drawn_quality_margin`` and ``drawn_strength_share``
(how far above the header's QF both of the network's readings must lie for ``auto`` to use it)
and ``drawn_flat_share`` (the least share of flat panels the pixels must show), chosen by
:func:`fit_drawn_margins` so that photos lose next to nothing, and ``drawn_strength_pull`` (how far
one image's QF moves from the table's towards its strength head's reading), by :func:`fit_drawn_pull`.
The margins and the pull are chosen on the readings of the card's own heads (:func:`head_readings`).

    python -m fbcnn_plugins.training.single_saves --family drawn --data runs/qf-head-gray/drawn/p1.npz \
        runs/qf-head-gray/drawn/p2.npz --card fbcnn_plugins/models/fbcnn-gray-small.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fbcnn_plugins.core.model_card import read_card
from fbcnn_plugins.core.qf_choice import DrawnSaveRule
from fbcnn_plugins.core.weights import write_text_atomic

from .strength_curves import best_qf, header_of, load_patches

#: The QFs the table has a point at; each takes the single saves within :data:`KNOT_REACH` of it.
KNOTS = (10, 20, 30, 40, 50, 60, 70, 80, 90)
KNOT_REACH = 7
#: A knot with fewer single saves near it keeps its own QF (no evidence, no offset).
MIN_PATCHES = 5
#: Patches smaller than this are left out: ``auto`` trusts a header on any size, but the PSNR
#: curves of 16-24 px patches are too noisy to say where the best strength lies.
MIN_SIDE = 32


def single_saves(data: dict[str, np.ndarray], family: str = "single") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the single-save patches (of photos, or ``family="drawn"`` of drawn images) large enough to
    measure: (row indices, save QF, best strength)."""
    rows = np.array([i for i, name in enumerate(data["family"]) if str(name) == family
                     and int(data["side"][i]) >= MIN_SIDE], dtype=int)
    quality = np.array([header_of(family, str(data["params"][i])) for i in rows], dtype=np.float64)
    return rows, quality, best_qf(data["curves"][rows], data["grid"])


def fit_table(quality: np.ndarray, best: np.ndarray) -> list[list[float]]:
    """(save QF, best strength) pairs: the median best near each knot, non-decreasing, 1 -> 1 and 100 -> 100."""
    points = []
    for knot in KNOTS:
        near = np.abs(quality - knot) <= KNOT_REACH
        points.append(float(np.median(best[near])) if near.sum() >= MIN_PATCHES else float(knot))
    strengths = np.maximum.accumulate(np.clip(points, 1, 100))
    return [[1.0, 1.0]] + [[float(k), round(float(s), 1)] for k, s in zip(KNOTS, strengths)] + [[100.0, 100.0]]


def values_at(curves: np.ndarray, grid: np.ndarray, rows: np.ndarray, qfs: np.ndarray) -> np.ndarray:
    """Each row's PSNR at its QF in ``qfs``, on the straight line between grid points (held flat
    outside the grid, as :func:`numpy.interp` does); all rows at once, since the fits score
    thousands of patches for every candidate rule."""
    grid = np.asarray(grid, dtype=np.float64)
    qfs = np.clip(np.asarray(qfs, dtype=np.float64), grid[0], grid[-1])
    upper = np.clip(np.searchsorted(grid, qfs), 1, len(grid) - 1)
    lower = upper - 1
    weight = (qfs - grid[lower]) / (grid[upper] - grid[lower])
    picked = curves[rows].astype(np.float64)
    index = np.arange(len(rows))
    return picked[index, lower] * (1 - weight) + picked[index, upper] * weight


def regret_db(curves: np.ndarray, grid: np.ndarray, rows: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    """PSNR each row loses against its best when restored at ``strengths`` (linear between grid points)."""
    best = best_qf(curves[rows], grid)
    return values_at(curves, grid, rows, best) - values_at(curves, grid, rows, strengths)


def out_of_fold(data: dict[str, np.ndarray], seed: int = 0, family: str = "single") -> dict[str, Any]:
    """Mean PSNR lost at the save's QF and at the table's strength, each half scored by the other half's table."""
    rows, quality, best = single_saves(data, family)
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


#: What the drawn-save rule tries: how far above the save's QF the QF estimate must read, and how
#: far the strength head must read from the save's QF towards 100 (as a share of the way: the head
#: reads at most 100, so a margin in QF steps would shut out every save above 100 minus it).
QUALITY_MARGINS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
STRENGTH_SHARES = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
#: Least flat-block shares tried (:func:`~fbcnn_plugins.core.drawn_content.flat_block_share`): the
#: pixels' own witness that flat panels are there, which a smooth photo the network misreads lacks.
FLAT_SHARES = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)
#: What the rule may cost the photos it takes for drawn content: their mean loss may rise by this
#: much (dB) over all the photo patches, and none may lose more than :data:`MAX_PHOTO_EXTRA_LOSS`
#: more than under the photo table.
MAX_PHOTO_MEAN_EXTRA_LOSS = 0.005
MAX_PHOTO_EXTRA_LOSS = 0.2
#: Margins whose drawn loss is within this much (dB) of the least count as equally good (see
#: :func:`fit_drawn_margins`).
DRAWN_LOSS_TOLERANCE = 0.01
#: The chain families that are photos (every family but the drawn one); each must stay within the limits.
PHOTO_FAMILIES = ("single", "sharpened", "resized", "custom", "aligned", "shifted")


def head_readings(data: dict[str, np.ndarray], card_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each patch's QF estimate and strength reading by the card's own heads.

    A rule fitted on one head's readings and applied with another's would be fitted to the wrong
    witness, so the readings ``qf_head collect`` stored are used only where they were read by the
    card's weights (their ``readings_sha256``), or where the patches carry no features to read
    (made-up patches); otherwise the card's heads read the stored features again."""
    stored = "quality_estimate" in data and "strength_estimate" in data
    read_by_card = "readings_sha256" in data and bool(np.all(data["readings_sha256"] == read_card(card_path).get("sha256")))
    if stored and (read_by_card or "features" not in data):
        return data["quality_estimate"], data["strength_estimate"]
    from fbcnn_plugins.core.weights import load_weights  # PyTorch only for collections without readings

    from .qf_head import predict, predict_quality

    network = load_weights(card_path.with_suffix(".safetensors")).network.float().eval()
    return predict_quality(network, data["features"]), predict(network, data["features"])


def saved_once_rows(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every patch's family and header QF, and the rows the drawn-save rule is fitted on: photos and
    drawn images with a header, large enough to measure."""
    family = np.array([str(name) for name in data["family"]])
    headers = np.array([header_of(f, str(p)) for f, p in zip(family, data["params"])])
    rows = np.flatnonzero(np.isfinite(headers) & (data["side"] >= MIN_SIDE) & np.isin(family, (*PHOTO_FAMILIES, "drawn")))
    return family, headers, rows


def fit_drawn_margins(data: dict[str, np.ndarray], quality: np.ndarray, strength: np.ndarray,
                      photo_table: Sequence[Sequence[float]], drawn_table: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The margins above a save's QF from which both heads' readings say "drawn content", and the
    least share of flat panels that must confirm it.

    A network trained on photos reads a JPEG of a screenshot as far less damaged than its QF (the
    gray model's strength head reads a screenshot saved at QF 75 as 100, its QF estimate as 79),
    and rarely reads a photo so; a smooth photo it does misread so has no flat panels.  Among the
    (QF-estimate margin, strength share, flat share) triples whose cost to every photo family stays within
    :data:`MAX_PHOTO_MEAN_EXTRA_LOSS` and :data:`MAX_PHOTO_EXTRA_LOSS` (each photo saved once, by
    its header, restored at the photo table's strength, but at the drawn table's where the rule
    takes it), those within :data:`DRAWN_LOSS_TOLERANCE` of the least loss over the drawn saves;
    of these the triple that takes the fewest photos, then the larger flat share (the pixels'
    witness, which the photos the network misreads lack), then the smaller margins.  Needs
    collections with ``flat_share``."""
    family, headers, rows = saved_once_rows(data)
    if not (family[rows] == "drawn").any() or not np.isin(family[rows], PHOTO_FAMILIES).any():
        raise ValueError("the rule needs saves of photos and of drawn images (qf_head collect --families single drawn)")
    if "flat_share" not in data:
        raise ValueError("the patches hold no flat_share: collect them again with qf_head collect")
    header = headers[rows]
    photo_qf = np.rint(np.interp(header, *zip(*photo_table)))
    drawn_qf = np.maximum(photo_qf, np.rint(np.interp(header, *zip(*drawn_table))))
    as_photo = regret_db(data["curves"], data["grid"], rows, photo_qf)
    as_drawn = regret_db(data["curves"], data["grid"], rows, drawn_qf)
    is_drawn = family[rows] == "drawn"
    flat = data["flat_share"][rows]
    candidates = []
    for quality_margin in QUALITY_MARGINS:
        for strength_share in STRENGTH_SHARES:
            for flat_share in FLAT_SHARES:
                rule = DrawnSaveRule(tuple(map(tuple, drawn_table)), quality_margin, strength_share, flat_share)
                taken = rule.takes(header, quality[rows], strength[rows], flat)
                lost = np.where(taken, as_drawn, as_photo)
                extra = lost - as_photo
                if all(extra[family[rows] == name].mean() <= MAX_PHOTO_MEAN_EXTRA_LOSS and extra[family[rows] == name].max()
                       <= MAX_PHOTO_EXTRA_LOSS for name in set(family[rows][~is_drawn])):
                    candidates.append((float(lost[is_drawn].mean()), int(taken[~is_drawn].sum()), -flat_share,
                                       quality_margin, strength_share, taken))
    if not candidates:
        raise ValueError("no margins keep the photos' extra loss within the limits")
    least = min(c[0] for c in candidates)
    lost, _, flat_share, quality_margin, strength_share, taken = min(
        (c for c in candidates if c[0] <= least + DRAWN_LOSS_TOLERANCE), key=lambda c: c[1:5])
    photo = ~is_drawn
    return {"quality_margin": quality_margin, "strength_share": strength_share, "flat_share": -flat_share,
            "drawn_taken": float(taken[is_drawn].mean()), "photos_taken": float(taken[photo].mean()),
            "drawn_regret_at_photo_table_db": float(as_photo[is_drawn].mean()), "drawn_regret_with_rule_db": lost,
            "photo_regret_at_photo_table_db": float(as_photo[photo].mean()),
            "photo_regret_with_rule_db": float(np.where(taken, as_drawn, as_photo)[photo].mean()),
            "drawn": int(is_drawn.sum()), "photos": int(photo.sum()), "least_drawn_regret_db": least,
            "limits": {"photo_mean_extra_db": MAX_PHOTO_MEAN_EXTRA_LOSS, "photo_extra_db": MAX_PHOTO_EXTRA_LOSS,
                       "drawn_loss_tolerance_db": DRAWN_LOSS_TOLERANCE}}


#: Shares of the way from the drawn table's QF towards the strength head's reading tried by :func:`fit_drawn_pull`.
STRENGTH_PULLS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def fit_drawn_pull(data: dict[str, np.ndarray], quality: np.ndarray, strength: np.ndarray,
                   photo_table: Sequence[Sequence[float]], rule: DrawnSaveRule, seed: int = 0) -> dict[str, Any]:
    """How far a drawn save's QF moves from the table's towards the strength head's reading
    (:attr:`~fbcnn_plugins.core.qf_choice.DrawnSaveRule.strength_pull`).

    On the saves ``rule`` takes (drawn and the rare photo alike, as ``auto`` would), the share of
    :data:`STRENGTH_PULLS` that loses least against each patch's best strength, among those that
    keep every photo family within the limits of :func:`fit_drawn_margins` (against the photo
    table); ties go to the smaller share.  It is kept only where the share chosen on one half of
    the taken saves also loses less than the table alone on the other half, both ways; else 0."""
    family, headers, rows = saved_once_rows(data)
    header, photo_families = headers[rows], set(family[rows]) - {"drawn"}
    taken = rule.takes(header, quality[rows], strength[rows], data["flat_share"][rows])
    as_photo = regret_db(data["curves"], data["grid"], rows, np.rint(np.interp(header, *zip(*photo_table))))
    lost = {}
    for pull in STRENGTH_PULLS:
        pulled = DrawnSaveRule(rule.table, rule.quality_margin, rule.strength_share, rule.flat_share, pull)
        lost[pull] = np.where(taken, regret_db(data["curves"], data["grid"], rows, pulled.strength_for(header, strength[rows])),
                              as_photo)

    def allowed(pull: float) -> bool:
        extra = lost[pull] - as_photo
        return all(extra[family[rows] == name].mean() <= MAX_PHOTO_MEAN_EXTRA_LOSS
                   and extra[family[rows] == name].max() <= MAX_PHOTO_EXTRA_LOSS for name in photo_families)

    def best_on(chosen: np.ndarray) -> float:
        return min((pull for pull in STRENGTH_PULLS if allowed(pull)), key=lambda pull: (float(lost[pull][chosen].mean()), pull))

    if not taken.any():
        return {"strength_pull": 0.0, "taken": 0}
    half = np.random.default_rng(seed).random(len(rows)) < 0.5
    gains = []
    for train in (half, ~half):
        test = taken & ~train
        chosen = best_on(taken & train) if (taken & train).any() else 0.0
        gains.append(float((lost[0.0][test] - lost[chosen][test]).mean()) if test.any() else 0.0)
    pull = best_on(taken) if min(gains) > 0 else 0.0
    return {"strength_pull": pull, "taken": int(taken.sum()), "regret_with_table_db": float(lost[0.0][taken].mean()),
            "regret_with_pull_db": float(lost[pull][taken].mean()), "out_of_fold_gain_db": gains,
            "pulls": list(STRENGTH_PULLS)}


def record_in_card(record: dict[str, Any], card: dict[str, Any], card_path: Path, *, dry_run: bool, what: str) -> None:
    """Print a fit's ``record`` and, unless ``dry_run``, merge it into the card's ``strength_head``
    (the weights and their sha256 untouched), written atomically."""
    print(json.dumps(record, indent=1))
    if not dry_run:
        card["strength_head"] = {**(card.get("strength_head") or {}), **record}
        write_text_atomic(card_path, json.dumps(card, indent=2) + "\n")
        print(f"wrote {what} into {card_path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="patches from qf_head collect")
    parser.add_argument("--card", type=Path, required=True, help="the weights card the table goes into")
    parser.add_argument("--family", choices=("single", "drawn"), default="single",
                        help="photos saved once (single_save_strength) or drawn images saved once (drawn_save_strength "
                             "and the margins from which it applies)")
    parser.add_argument("--dry-run", action="store_true", help="print the table and its report, write nothing")
    args = parser.parse_args(argv)
    try:
        data = load_patches(args.data)
        card = read_card(args.card)
    except (OSError, ValueError, KeyError) as error:
        print(f"single_saves: {error}", file=sys.stderr)
        return 2
    _, quality, best = single_saves(data, args.family)
    if len(quality) == 0:
        print(f"single_saves: {args.data[0]}: no {args.family} saves of {MIN_SIDE} px or more", file=sys.stderr)
        return 2
    table = fit_table(quality, best)
    fit = {"command": f"python -m fbcnn_plugins.training.single_saves --family {args.family}",
           "data": [str(p) for p in args.data], "knots": list(KNOTS), "knot_reach": KNOT_REACH, "min_side": MIN_SIDE,
           "out_of_fold": out_of_fold(data, family=args.family)}
    if args.family == "single":
        record = {"single_save_strength": table, "single_save_fit": fit}
    else:
        photo_table = (card.get("strength_head") or {}).get("single_save_strength") or [[1.0, 1.0], [100.0, 100.0]]
        try:
            quality, strength = head_readings(data, args.card)
            fit["margins_fit"] = margins = fit_drawn_margins(data, quality, strength, photo_table, table)
        except (ValueError, OSError) as error:
            print(f"single_saves: {', '.join(map(str, args.data))}: {error}", file=sys.stderr)
            return 2
        rule = DrawnSaveRule(tuple(map(tuple, table)), margins["quality_margin"], margins["strength_share"],
                             margins["flat_share"])
        fit["pull_fit"] = pull = fit_drawn_pull(data, quality, strength, photo_table, rule)
        record = {"drawn_save_strength": table, "drawn_quality_margin": margins["quality_margin"],
                  "drawn_strength_share": margins["strength_share"], "drawn_flat_share": margins["flat_share"],
                  "drawn_strength_pull": pull["strength_pull"], "drawn_save_fit": fit}
    record_in_card(record, card, args.card, dry_run=args.dry_run, what="the table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
