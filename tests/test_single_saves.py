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
