"""Tiled inference: grid-aligned tiles, full coverage, and output indistinguishable from one pass."""

import numpy as np
import pytest

from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.restorer import QF_MIN_TILE, Restorer
from fbcnn_plugins.core.tiling import check_tiling, default_overlap, iter_tiles, quality_tiles, tile_spans

from conftest import natural_image, pillow_jpeg


@pytest.mark.parametrize("length", [1, 7, 64, 65, 200, 513, 1000, 1031])
@pytest.mark.parametrize("tile, overlap", [(64, 16), (128, 32), (96, 0)])
def test_spans_cover_start_on_the_grid_and_overlap_enough(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (start, end), (next_start, _) in zip(spans, spans[1:]):
        assert end - next_start >= overlap  # consecutive tiles overlap by at least the requested amount
        assert next_start > start
    for start, end in spans:
        assert start % 8 == 0
        assert end - start <= tile + 7


def slid_back_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """The earlier layout: full tiles at a fixed stride, the last one slid back to end at the border."""
    if length <= tile + 7:
        return [(0, length)]
    starts = list(range(0, length - tile, tile - overlap))
    last = (length - tile) // 8 * 8
    if last > starts[-1]:
        starts.append(last)
    return list(zip(starts, [s + tile for s in starts[:-1]] + [length]))


@pytest.mark.parametrize("tile, overlap", [(512, 32), (256, 32), (96, 0), (80, 32), (64, 24)])
def test_spans_never_do_more_work_than_full_tiles_slid_back(tile, overlap):
    for length in range(1, 3 * tile + 40):
        new, old = tile_spans(length, tile, overlap), slid_back_spans(length, tile, overlap)
        assert len(new) <= len(old), length
        assert sum(e - s for s, e in new) <= sum(e - s for s, e in old), length
    assert sum(e - s for s, e in tile_spans(1024, 512, 32)) == 1104  # three spans of 368, not of 512


@pytest.mark.parametrize("tile, overlap", [(60, 16), (64, 12), (64, 32), (0, 0)])
def test_bad_tiling_is_refused(tile, overlap):
    with pytest.raises(ValueError, match="multiple of 8|less than half"):
        check_tiling(tile, overlap)


def test_quality_tiles_are_capped_and_spread():
    all_tiles = list(iter_tiles(4000, 6000, 512, 0))
    picked = quality_tiles(4000, 6000, 512, 16)
    assert len(all_tiles) > 16 and len(picked) == 16
    assert picked[0] == all_tiles[0] and picked[-1] == all_tiles[-1]


def test_tiled_output_matches_whole_image_within_a_hundredth_of_a_db(bundled_color_model):
    clean = natural_image(200, 264, seed=3)
    degraded = pillow_jpeg(clean, 20)
    whole = Restorer(bundled_color_model, device="cpu", tile=512, overlap=32).restore(degraded)
    tiled = Restorer(bundled_color_model, device="cpu", tile=128, overlap=32).restore(degraded, qf=whole.qf.value)
    assert abs(psnr(clean, whole.image) - psnr(clean, tiled.image)) <= 0.01
    assert psnr(whole.image, tiled.image) > 45


def test_tiled_qf_prediction_matches_whole_image(bundled_color_model):
    degraded = pillow_jpeg(natural_image(300, 520, seed=4), 30)
    whole = Restorer(bundled_color_model, device="cpu", tile=1024).predict_qf(degraded)
    tiled = Restorer(bundled_color_model, device="cpu", tile=QF_MIN_TILE).predict_qf(degraded)  # 2x3 tiles
    assert abs(whole - tiled) < 1.0


def test_small_restoration_tiles_do_not_move_the_predicted_qf(bundled_color_model):
    # A 64-px tile's 8x8 bottleneck is mostly padded border: predicting on it biased the QF by
    # about +2, so QF tiles keep at least QF_MIN_TILE pixels whatever the restoration uses.
    degraded = pillow_jpeg(natural_image(300, 520, seed=4), 30)
    reference = Restorer(bundled_color_model, device="cpu", tile=QF_MIN_TILE).restore(degraded)
    for tile in (64, 128):
        small = Restorer(bundled_color_model, device="cpu", tile=tile, overlap=16).restore(degraded)
        assert small.qf.predicted == reference.qf.predicted
        assert psnr(reference.image, small.image) > 45


def test_small_tiles_get_an_overlap_that_check_tiling_accepts(bundled_color_model):
    assert [default_overlap(t) for t in (8, 16, 64, 72, 512)] == [0, 0, 24, 32, 32]
    for tile in (8, 16, 64, 72, 512, 1024):
        check_tiling(tile, default_overlap(tile))
    degraded = pillow_jpeg(natural_image(96, 136, seed=6), 20)
    implicit = Restorer(bundled_color_model, device="cpu", tile=64).restore(degraded, qf=20)
    explicit = Restorer(bundled_color_model, device="cpu", tile=64, overlap=24).restore(degraded, qf=20)
    assert np.array_equal(implicit.image, explicit.image)


def test_the_default_tile_follows_the_device_and_a_given_tile_wins(bundled_color_model):
    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.core.tiling import DEFAULT_TILE, GPU_DEFAULT_TILE, default_tile

    assert Restorer(bundled_color_model, device="cpu").tile == DEFAULT_TILE == default_tile("cpu")
    assert default_tile("cuda") == GPU_DEFAULT_TILE > DEFAULT_TILE and default_tile("mps") == DEFAULT_TILE
    restorer = Restorer(bundled_color_model, device="cpu", tile=256)
    assert (restorer.tile, restorer.overlap) == (256, 32)
