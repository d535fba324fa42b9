"""Predicting the QF shares the restoration's encoder pass, and changes nothing but the QF's cost."""

import numpy as np
import pytest

from fbcnn_plugins.core.restorer import QF_SAMPLE_TILES, Restorer
from fbcnn_plugins.core.tiling import iter_tiles

from conftest import natural_image, needs_torch, pillow_jpeg

pytestmark = needs_torch  # the PyTorch engine keeps encoder features between passes; OpenVINO does not


def count_encoder_passes(restorer: Restorer) -> list[int]:
    """Counts the pixels every call of the network's first layer sees (a real forward hook)."""
    _, network = restorer.prepared_network(False)
    seen: list[int] = []
    network.network.m_head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[-2] * inputs[0].shape[-1]))
    return seen


@pytest.mark.parametrize("height, width", [(200, 264), (560, 1000)], ids=["one-tile", "six-tiles"])
def test_predicted_qf_restores_exactly_as_the_same_qf_given(bundled_color_model, height, width):
    degraded = pillow_jpeg(natural_image(height, width, seed=7), 25)
    restorer = Restorer(bundled_color_model, device="cpu", backend="pytorch")
    blind = restorer.restore(degraded)
    given = restorer.restore(degraded, qf=blind.qf.value)
    assert blind.qf.source == "predicted" and blind.qf.value == round(blind.qf.predicted)
    assert np.array_equal(blind.image, given.image)


def test_predicting_runs_no_second_encoder_pass(bundled_color_model):
    degraded = pillow_jpeg(natural_image(560, 1000, seed=7), 25)
    restorer = Restorer(bundled_color_model, device="cpu", backend="pytorch")
    tiles = list(iter_tiles(560, 1000, restorer.tile, restorer.overlap))
    assert len(tiles) > QF_SAMPLE_TILES  # so the QF comes from a sample, not from every tile
    seen = count_encoder_passes(restorer)
    restorer.restore(degraded)
    assert sorted(seen) == sorted((t.bottom - t.top) * (t.right - t.left) for t in tiles)


def test_sampled_tiles_predict_the_whole_images_qf(bundled_color_model):
    # The separate pass (predict_qf, pooled over the whole image) and the restoration's sample agree.
    degraded = pillow_jpeg(natural_image(560, 1000, seed=8), 30)
    restorer = Restorer(bundled_color_model, device="cpu", backend="pytorch")
    assert abs(restorer.restore(degraded).qf.predicted - restorer.predict_qf(degraded)) < 1.5


def test_small_tiles_and_self_ensemble_keep_the_separate_prediction(bundled_color_model):
    # Tiles under QF_MIN_TILE would bias the QF, and the self-ensemble's passes see transformed
    # tiles: both predict in a pass of their own over large untransformed tiles.
    degraded = pillow_jpeg(natural_image(200, 264, seed=3), 20)
    for options in ({"tile": 64}, {"self_ensemble": True}):
        restorer = Restorer(bundled_color_model, device="cpu", backend="pytorch", **options)
        assert restorer.restore(degraded).qf.predicted == restorer.predict_qf(degraded)
