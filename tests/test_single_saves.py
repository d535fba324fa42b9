"""The gray model's single-save table: fitted from measured PSNR curves, read by ``auto`` from the card.

The fit runs on synthetic curves whose best strength is known; the bundled gray model's table is
then checked where it acts, on real gray JPEGs (libjpeg through Pillow, scikit-image's photos).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from fbcnn_plugins.core.catalog import load_model
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.qf_choice import decide_qf, restore_at, single_save_table
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.training import single_saves
from fbcnn_plugins.training.strength_curves import QF_GRID

from conftest import needs_torch


def synthetic_patches(offset: float, count: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Single saves whose PSNR curve peaks ``offset`` QF above the save's QF, plus other families to ignore."""
    rng = np.random.default_rng(seed)
    grid = np.array(QF_GRID, dtype=np.float64)
    quality = rng.integers(5, 99, count)
    best = np.clip(quality + offset, 1, 100)
    curves = 30.0 - 0.002 * (grid[None, :] - best[:, None]) ** 2
    family = np.array(["single"] * (count - 40) + ["resized"] * 40)
    return {"curves": curves.astype(np.float32), "grid": grid.astype(np.int64), "family": family,
            "params": np.array([json.dumps([int(q)]) for q in quality]), "side": np.full(count, 128)}


def test_the_table_follows_the_measured_best_strength():
    data = synthetic_patches(offset=8.0)
    _, quality, best = single_saves.single_saves(data)
    assert len(quality) == 360  # the resized patches are left out
    table = single_saves.fit_table(quality, best)
    assert table[0] == [1.0, 1.0] and table[-1] == [100.0, 100.0]
    # Away from the ends (where the saves near a knot lie on one side of it, or the best is clipped at 100):
    assert all(abs(s - (q + 8.0)) < 1.5 for q, s in table if 20 <= q <= 80)
    strengths = [s for _, s in table]
    assert strengths == sorted(strengths)
    report = single_saves.out_of_fold(data)
    assert report["regret_at_table_db"] < report["regret_at_save_qf_db"] and report["patches"] == 360


def test_the_fit_writes_the_table_into_a_card_and_leaves_the_weights_alone(tmp_path):
    card_path = tmp_path / "fbcnn-gray-small.json"
    card = json.loads((load_model(None, gray=True).source.with_suffix(".json")).read_text())
    card_path.write_text(json.dumps(card))
    np.savez(tmp_path / "patches.npz", **synthetic_patches(offset=5.0))
    assert single_saves.main(["--data", str(tmp_path / "patches.npz"), "--card", str(card_path)]) == 0
    written = json.loads(card_path.read_text())
    assert written["sha256"] == card["sha256"]
    head = written["strength_head"]
    assert head["single_save_strength"][5][1] == pytest.approx(55.0, abs=1.5)
    assert head["single_save_fit"]["out_of_fold"]["patches"] == 360
    assert head.get("added_to_sha256") == card["strength_head"].get("added_to_sha256")  # the head's record stays


def test_auto_restores_a_gray_jpeg_where_the_bundled_gray_model_restores_it_best(tmp_path):
    restorer = Restorer(device="cpu")
    gray = np.asarray(data.camera())
    assert single_save_table(restorer, gray) is not None  # the bundled gray card has one
    assert single_save_table(restorer, np.stack([gray] * 3, axis=2)) is None  # the colour model's card has none
    path = tmp_path / "page.jpg"
    clean = np.asarray(data.page())
    Image.fromarray(clean).save(path, quality=50)
    pixels = np.asarray(Image.open(path))
    decision = decide_qf(restorer, pixels, jpeg_path=path)
    assert decision.source == "header" and decision.qf > 50 and "single-save table" in decision.reason
    auto = restore_at(restorer, pixels, decision.estimate()).image
    at_header = restorer.restore(pixels, 50).image
    assert psnr(auto, clean) > psnr(at_header, clean)


def drawn_and_photo_patches(count: int = 400, seed: int = 1) -> dict[str, np.ndarray]:
    """Photos saved once (best 2 QF above the save) and drawn images saved once (best 12 above), with
    the two readings as a network trained on photos gives them (near the save's QF for photos, well
    above it for most drawn images) and flat panels in the drawn ones only."""
    rng = np.random.default_rng(seed)
    grid = np.array(QF_GRID, dtype=np.float64)
    quality = rng.integers(20, 90, count)
    drawn = np.arange(count) % 2 == 1
    best = np.clip(quality + np.where(drawn, 12.0, 2.0), 1, 100)
    curves = 30.0 - 0.002 * (grid[None, :] - best[:, None]) ** 2
    estimate = quality + np.where(drawn, rng.uniform(0.0, 8.0, count), rng.normal(0.0, 1.0, count))
    strength = np.minimum(100.0, quality + np.where(drawn, rng.uniform(0.0, 60.0, count), rng.normal(0.0, 5.0, count)))
    flat = np.where(drawn, rng.uniform(0.1, 0.6, count), rng.uniform(0.0, 0.03, count))
    return {"curves": curves.astype(np.float32), "grid": grid.astype(np.int64),
            "family": np.where(drawn, "drawn", "single"), "params": np.array([json.dumps([int(q)]) for q in quality]),
            "side": np.full(count, 128), "quality_estimate": estimate, "strength_estimate": strength, "flat_share": flat}


def test_the_drawn_table_and_its_margins_are_fitted_and_written_into_the_card(tmp_path):
    card_path = tmp_path / "fbcnn-gray-small.json"
    card = json.loads((load_model(None, gray=True).source.with_suffix(".json")).read_text())
    card_path.write_text(json.dumps(card))
    np.savez(tmp_path / "patches.npz", **drawn_and_photo_patches())
    assert single_saves.main(["--family", "drawn", "--data", str(tmp_path / "patches.npz"), "--card", str(card_path)]) == 0
    written = json.loads(card_path.read_text())
    head = written["strength_head"]
    assert written["sha256"] == card["sha256"]
    assert head["single_save_strength"] == card["strength_head"]["single_save_strength"]  # the photo table stays
    assert all(abs(s - (q + 12.0)) < 2.5 for q, s in head["drawn_save_strength"] if 30 <= q <= 80)  # medians of ~30 saves
    fit = head["drawn_save_fit"]["margins_fit"]
    assert ((head["drawn_quality_margin"], head["drawn_strength_share"], head["drawn_flat_share"])
            == (fit["quality_margin"], fit["strength_share"], fit["flat_share"]))
    # A photo taken for drawn content loses about 0.4 dB here, over the 0.2 allowed: none is taken.
    assert fit["photos_taken"] == 0 and fit["photo_regret_with_rule_db"] == fit["photo_regret_at_photo_table_db"]
    assert fit["drawn_taken"] > 0.4 and fit["drawn_regret_with_rule_db"] < fit["drawn_regret_at_photo_table_db"]


def test_the_drawn_pull_follows_where_the_strength_reading_says_a_drawn_image_restores_best():
    """Drawn saves whose best strength lies a third of the way from the table's QF towards the
    strength head's reading: the fit finds a share near a third; where the best is the table's own
    QF whatever the reading, it keeps the table (0)."""
    patches = drawn_and_photo_patches(count=800, seed=4)
    grid = patches["grid"].astype(np.float64)
    drawn = patches["family"] == "drawn"
    quality = np.array([json.loads(p)[0] for p in patches["params"]], dtype=np.float64)
    table = ((1.0, 1.0), (20.0, 32.0), (90.0, 100.0), (100.0, 100.0))
    rule = single_saves.DrawnSaveRule(table, 1.0, 0.3, 0.05)
    tabled = rule.table_strength(quality)
    for share, expected in ((1 / 3, (0.25, 0.4)), (0.0, (0.0, 0.0))):
        best = np.where(drawn, tabled + share * (np.minimum(patches["strength_estimate"], 100) - tabled), quality + 2.0)
        curves = (30.0 - 0.002 * (grid[None, :] - best[:, None]) ** 2).astype(np.float32)
        fit = single_saves.fit_drawn_pull({**patches, "curves": curves}, patches["quality_estimate"],
                                          patches["strength_estimate"], [[1.0, 3.0], [100.0, 100.0]], rule)
        assert fit["taken"] > 100 and expected[0] <= fit["strength_pull"] <= expected[1], fit
        if share:
            assert fit["regret_with_pull_db"] < fit["regret_with_table_db"] and min(fit["out_of_fold_gain_db"]) > 0


def test_a_drawn_fit_without_photos_is_refused_and_writes_nothing(tmp_path, capsys):
    card_path = tmp_path / "fbcnn-gray-small.json"
    card_path.write_text(load_model(None, gray=True).source.with_suffix(".json").read_text())
    before = card_path.read_text()
    patches = drawn_and_photo_patches()
    patches["family"] = np.full(len(patches["family"]), "drawn")
    np.savez(tmp_path / "drawn-only.npz", **patches)
    assert single_saves.main(["--family", "drawn", "--data", str(tmp_path / "drawn-only.npz"), "--card", str(card_path)]) == 2
    error = capsys.readouterr().err
    assert "drawn-only.npz" in error and "saves of photos and of drawn images" in error
    assert card_path.read_text() == before


def test_auto_restores_a_gray_screenshot_jpeg_lighter_than_a_photo_and_better(tmp_path):
    """The bundled gray card's drawn-save rule on real files: a screenshot saved at QF 75 goes through
    the drawn table and comes out closer to the original than through the photo table; photos saved
    at the same QF do not."""
    from fbcnn_plugins.core.qf_choice import drawn_save_rule
    from fbcnn_plugins.training.chains import screenshot

    restorer = Restorer(device="cpu")
    shot = np.asarray(Image.fromarray(screenshot()).convert("L"))
    assert drawn_save_rule(restorer, shot) is not None
    assert drawn_save_rule(restorer, np.stack([shot] * 3, axis=2)) is None  # the colour model restores drawn saves at their QF
    path = tmp_path / "shot.jpg"
    Image.fromarray(shot).save(path, quality=75)
    pixels = np.asarray(Image.open(path))
    decision = decide_qf(restorer, pixels, jpeg_path=path)
    table = single_save_table(restorer, pixels)
    photo_qf = int(round(np.interp(75, *zip(*table))))
    assert decision.source == "header" and decision.qf > photo_qf and "drawn-save table" in decision.reason
    assert psnr(restore_at(restorer, pixels, decision.estimate()).image, shot) > psnr(restorer.restore(pixels, photo_qf).image, shot)
    for name in ("camera", "moon"):
        photo_path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(photo_path, quality=75)
        photo = decide_qf(restorer, np.asarray(Image.open(photo_path)), jpeg_path=photo_path)
        assert "drawn" not in photo.reason, name


@needs_torch  # collect reads the patches through the PyTorch network
def test_the_fits_use_the_readings_of_the_cards_own_heads(tmp_path):
    """Readings stored by ``collect`` stand only for the weights that made them: once the strength
    head is refitted, the drawn-save and heavier-damage fits read the stored features again with
    the card's heads instead of fitting their margins to the old head's witness."""
    from fbcnn_plugins.training import qf_head

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.camera()).save(photos / "camera.png")
    gray = load_model(None, gray=True)
    collected = qf_head.collect(gray, [photos], count=6, seed=3, sides=(64,), log=lambda line: None, grid=(50, 90))
    card_path = gray.source.with_suffix(".json")
    assert set(collected["readings_sha256"]) == {gray.card["sha256"]}
    quality, strength = single_saves.head_readings(collected, card_path)
    np.testing.assert_array_equal(strength, collected["strength_estimate"])  # read by these very weights
    other_head = {**collected, "readings_sha256": np.full(6, "0" * 64), "strength_estimate": np.full(6, 3.0)}
    quality, strength = single_saves.head_readings(other_head, card_path)
    np.testing.assert_allclose(strength, collected["strength_estimate"], atol=1e-4)  # read again, not the stale 3.0
    np.testing.assert_allclose(quality, collected["quality_estimate"], atol=1e-4)
