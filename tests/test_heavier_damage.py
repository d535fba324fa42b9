"""Rule 3's margins per model: fitted from measured PSNR curves, read by ``auto`` from the card.

The fit runs on synthetic patches whose best strength and readings are known; the bundled gray
model's margins are then checked where they act, on a real re-saved gray photo (libjpeg through
Pillow, scikit-image's camera).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import data

from fbcnn_plugins.core.catalog import load_model
from fbcnn_plugins.core.qf_choice import DEFAULT_HEAVIER_DAMAGE, decide_qf, heavier_damage_rule
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.training import heavier_damage
from fbcnn_plugins.training.chains import decode, rescaled
from fbcnn_plugins.training.strength_curves import QF_GRID


def saves_and_resaves(count: int = 600, seed: int = 2) -> dict[str, np.ndarray]:
    """Single saves at QF 80-98 (best at their QF, both readings within a step or three of it) and
    photos resized between a save at QF 10-50 and one at 80-98 (best at the first save's QF + 20,
    the strength head reading it, the QF estimate 2-6 under the last save): readings the default
    margins leave at the header for most re-saved photos."""
    rng = np.random.default_rng(seed)
    grid = np.array(QF_GRID, dtype=np.float64)
    last = rng.integers(80, 99, count)
    resaved = np.arange(count) % 2 == 1
    first = rng.integers(10, 51, count)
    best = np.where(resaved, first + 20, last).astype(np.float64)
    curves = 30.0 - 0.002 * (grid[None, :] - best[:, None]) ** 2
    quality = last - np.where(resaved, rng.uniform(2.0, 6.0, count), rng.uniform(-1.0, 1.0, count))
    strength = np.where(resaved, best + rng.normal(0.0, 3.0, count), last + rng.normal(0.0, 3.0, count))
    params = [json.dumps([int(f), 0.75, int(q)]) if r else json.dumps([int(q)]) for f, q, r in zip(first, last, resaved)]
    return {"curves": curves.astype(np.float32), "grid": grid.astype(np.int64), "family": np.where(resaved, "resized", "single"),
            "params": np.array(params), "side": np.full(count, 256), "quality_estimate": quality, "strength_estimate": strength}


def test_the_margins_are_fitted_to_take_the_resaved_photos_and_leave_the_single_saves(tmp_path):
    card_path = tmp_path / "fbcnn-gray-small.json"
    card = json.loads(load_model(None, gray=True).source.with_suffix(".json").read_text())
    card_path.write_text(json.dumps(card))
    np.savez(tmp_path / "patches.npz", **saves_and_resaves())
    assert heavier_damage.main(["--data", str(tmp_path / "patches.npz"), "--card", str(card_path)]) == 0
    written = json.loads(card_path.read_text())
    assert written["sha256"] == card["sha256"]
    head = written["strength_head"]
    assert head["single_save_strength"] == card["strength_head"]["single_save_strength"]  # the other fits stay
    defaults = [DEFAULT_HEAVIER_DAMAGE.strength_margin, DEFAULT_HEAVIER_DAMAGE.quality_margin]
    (small_side, *small), (large_side, *large) = head["heavier_damage_margins"]
    assert (small_side, small) == (64, defaults)  # every patch is 256 px: nothing to fit the small band on
    assert large_side == 192 and large[1] < DEFAULT_HEAVIER_DAMAGE.quality_margin
    assert large[1] > 1.0  # single saves read up to 1 under their QF: none is taken
    small_report, large_report = head["heavier_damage_fit"]["out_of_fold_by_size"]
    assert not small_report["fitted"] and small_report["patches"] == 0 and large_report["fitted"]
    assert large_report["fitted_margins_db"]["resized"] < large_report["default_margins_db"]["resized"] - 0.5
    assert large_report["single_save_cost_db"] <= heavier_damage.SINGLE_SAVE_TOLERANCE
    halvings = large_report["single_save_cost_by_halving_db"]  # the check averages over several random halvings
    assert len(halvings) == head["heavier_damage_fit"]["halvings"] == heavier_damage.SPLITS > 1
    assert large_report["single_save_cost_db"] == pytest.approx(np.mean(halvings), abs=1e-4)


def test_a_fit_without_resaved_photos_is_refused_and_writes_nothing(tmp_path, capsys):
    card_path = tmp_path / "fbcnn-gray-small.json"
    card_path.write_text(load_model(None, gray=True).source.with_suffix(".json").read_text())
    before = card_path.read_text()
    patches = saves_and_resaves()
    keep = patches["family"] == "single"
    np.savez(tmp_path / "singles.npz", **{k: (v[keep] if k != "grid" else v) for k, v in patches.items()})
    assert heavier_damage.main(["--data", str(tmp_path / "singles.npz"), "--card", str(card_path)]) == 2
    error = capsys.readouterr().err
    assert "singles.npz" in error and "--min-last-save" in error
    assert card_path.read_text() == before


def test_the_bundled_gray_card_holds_margins_only_where_the_out_of_fold_check_let_them(tmp_path):
    """The gray card's fit: every size band either passed the out-of-fold check on single saves and
    carries its margins, or failed it and holds the defaults, which ``auto`` then uses as they are
    (its reasons do not call them the model's own); the colour card has no fit."""
    restorer = Restorer(device="cpu")
    camera = np.asarray(data.camera())
    head = load_model(None, gray=True).card["strength_head"]
    defaults = [DEFAULT_HEAVIER_DAMAGE.strength_margin, DEFAULT_HEAVIER_DAMAGE.quality_margin]
    reports = head["heavier_damage_fit"]["out_of_fold_by_size"]
    assert [band[0] for band in head["heavier_damage_margins"]] == list(heavier_damage.SIZE_BANDS)
    for (side, *margins), report in zip(head["heavier_damage_margins"], reports):
        assert report["min_side"] == side
        assert report["fitted"] == (report["single_save_cost_db"] <= heavier_damage.SINGLE_SAVE_TOLERANCE)
        if not report["fitted"]:
            assert margins == defaults
        rule = heavier_damage_rule(restorer, camera[: max(side, 64), : max(side, 64)])
        assert [rule.strength_margin, rule.quality_margin] == margins and rule.fitted == (margins != defaults)
    assert heavier_damage_rule(restorer, np.stack([camera] * 3, axis=2)) == DEFAULT_HEAVIER_DAMAGE
    case = rescaled(15, 0.75, 90)(camera, 256)
    path = tmp_path / "resaved.jpg"
    path.write_bytes(case.jpeg)
    decision = decide_qf(restorer, decode(case.jpeg), jpeg_path=path)
    assert decision.header == 90 and decision.strength is not None
    assert ("this model's fitted margins" in decision.reason) == heavier_damage_rule(restorer, camera[:256, :256]).fitted
