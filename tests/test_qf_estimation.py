"""QF estimation: exact header QF, and the fast FBCNN-D estimator against real re-encoding."""

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from fbcnn_plugins.cli.main import main
from fbcnn_plugins.core.jpeg import double_jpeg, jpeg_roundtrip
from fbcnn_plugins.core.qf_estimation import (
    ZIGZAG, _all_tables, block_dct, brute_force_curve, dominant_quality, first_local_minimum, header_quality,
    recompression_mse, select_dominant,
)
from fbcnn_plugins.core.restorer import Restorer

from conftest import natural_image, needs_shared


@pytest.mark.parametrize("encoder", ["pillow", "opencv"])
def test_header_qf_is_exact_at_every_quality(tmp_path, encoder):
    image = natural_image(32, 40)
    for quality in range(1, 101):
        path = tmp_path / f"{quality}.jpg"
        if encoder == "pillow":
            Image.fromarray(image).save(path, quality=quality)
        else:
            cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        found = header_quality(path)
        assert (found.quality, found.exact, found.custom_tables) == (quality, True, False), quality


def test_header_qf_gray_progressive_custom_and_non_jpeg(tmp_path):
    gray = natural_image(32, 32)[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.jpg", quality=63, progressive=True)
    found = header_quality(tmp_path / "g.jpg")
    assert found.quality == 63 and found.exact and found.progressive
    custom = [list(range(1, 65)), [50] * 64]
    Image.fromarray(natural_image(32, 32)).save(tmp_path / "c.jpg", qtables=custom)
    found = header_quality(tmp_path / "c.jpg")
    assert found.custom_tables and not found.exact and found.error > 0
    Image.fromarray(gray).save(tmp_path / "p.png")
    assert header_quality(tmp_path / "p.png") is None


def gray_encode(plane, quality):
    return jpeg_roundtrip(plane, quality)


@pytest.mark.parametrize("case", [("single", 30), ("double", 10, 30, (4, 4)), ("double", 20, 90, (2, 6))])
def test_fast_path_picks_the_same_qf_as_real_re_encoding(case):
    plane = natural_image(320, 400, seed=1)[:, :, 1]
    if case[0] == "single":
        degraded = jpeg_roundtrip(plane, case[1])
    else:
        degraded = double_jpeg(plane, case[1], case[2], case[3])
    crop = degraded[56:256, 96:296]  # starts on the 8x8 grid, so the shifts keep their meaning
    fast = dominant_quality(crop, crop=None)
    brute = select_dominant({(i, j): brute_force_curve(crop, (i, j), gray_encode) for i in range(8) for j in range(8)})
    assert fast.quality == brute.quality and fast.shift == brute.shift
    expected = case[1]
    assert abs(fast.quality - expected) <= 2


@pytest.mark.parametrize("count", [64, 21, 5])
def test_recompression_mse_equals_quantising_with_every_table(count):
    plane = jpeg_roundtrip(natural_image(96, 128, seed=3)[:, :, 0], 35).astype(np.float32)
    coefficients = block_dct(plane[3:, 5:]).astype(np.float64)
    chosen = [int(index) for index in ZIGZAG[:count]]
    expected = []
    for table in _all_tables()[0]:
        steps = table[chosen]
        values = coefficients[:, chosen]
        expected.append(np.mean((values - steps * np.round(values / steps)) ** 2))
    np.testing.assert_allclose(recompression_mse(coefficients, tuple(chosen)), expected, rtol=1e-4)


def test_current_grid_curve_follows_real_re_encoding():
    plane = jpeg_roundtrip(natural_image(200, 200, seed=2)[:, :, 1], 40)
    fast = dominant_quality(plane, crop=None).curves[(0, 0)]
    brute = brute_force_curve(plane, (0, 0), gray_encode)
    # libjpeg rounds and clips pixels after the inverse DCT; the coefficient-domain error does not.
    assert first_local_minimum(fast, prominence=0.2) == first_local_minimum(brute, prominence=0.2) == 39
    relative = np.abs(fast - brute) / np.maximum(brute, 1e-9)
    assert np.median(relative) < 0.1 and fast[39] < 1.0 and brute[39] < 1.0


def test_dominant_finds_the_first_compression_of_a_non_aligned_double_jpeg():
    plane = natural_image(320, 400, seed=1)[:, :, 1]
    found = dominant_quality(double_jpeg(plane, 10, 30, (3, 5)))
    assert found.quality == 10 and found.double_compressed
    assert found.shift == (5, 3)  # rows/columns to drop so blocks line up with the first grid
    aligned = dominant_quality(jpeg_roundtrip(plane, 45))
    assert aligned.quality == 45 and aligned.shift == (0, 0) and not aligned.double_compressed


def test_restore_with_dominant_qf(bundled_color_model):
    image = jpeg_roundtrip(natural_image(320, 400, seed=1), 20)
    result = Restorer(bundled_color_model, device="cpu").restore(image, qf="dominant")
    assert result.qf.source == "dominant" and abs(result.qf.value - 20) <= 2


def test_qf_command_and_restore_with_header_qf(tmp_path, capsys):
    source = tmp_path / "q42.jpg"
    Image.fromarray(natural_image(96, 128, seed=1)).save(source, quality=42)
    assert main(["qf", str(source), "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["header"]["quality"] == 42 and report["header"]["exact"]
    assert 1 <= report["predicted"] <= 100 and report["dominant"]["quality"] is not None
    assert main(["restore", str(source), "--qf", "header", "--json"]) == 0
    [restored] = json.loads(capsys.readouterr().out)["files"]
    assert (restored["qf"], restored["qf_source"]) == (42, "header")
    png = tmp_path / "p.png"
    Image.fromarray(natural_image(64, 64)).save(png)
    assert main(["restore", str(png), "--qf", "header"]) == 1
    assert "needs a JPEG file" in capsys.readouterr().err


@needs_shared  # on a 96x128 crop FBCNN-D misses on some of scikit-image's photos (coffee: 14 for 42)
def test_qf_command_dominant_matches_the_header_on_team_photos(tmp_path, capsys):
    source = tmp_path / "q42.jpg"
    Image.fromarray(natural_image(96, 128, seed=1)).save(source, quality=42)
    assert main(["qf", str(source), "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert abs(report["dominant"]["quality"] - 42) <= 2


def test_selection_trusts_deep_dips_not_early_wiggles():
    qualities = np.arange(1, 101, dtype=np.float64)
    smooth = 200.0 / qualities + 1.0  # a grid nobody compressed: MSE falls steadily with QF
    curves = {(i, j): smooth.copy() for i in range(8) for j in range(8)}
    # The last compression (QF 50) on the current grid, plus a shallow wiggle at QF 24 under MSE 30.
    current = smooth.copy()
    current[23] *= 0.95
    current[49] = 0.1
    curves[(0, 0)] = current
    # The first, stronger compression (QF 30) on grid (4, 4): below the other grids everywhere,
    # with an early wiggle at QF 7 and its real, deepest dip at QF 30.
    first = smooth * 0.7
    first[6] *= 0.97
    first[29] *= 0.8
    curves[(4, 4)] = first
    found = select_dominant(curves)
    assert (found.quality, found.shift, found.double_compressed) == (30, (4, 4), True)
