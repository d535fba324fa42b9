"""The ``auto`` QF rule on real photos (scikit-image's samples), real libjpeg files and the bundled model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from fbcnn_plugins.cli.main import main
from fbcnn_plugins.core.jpeg import rgb_to_y
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.qf_choice import (
    CLEAN_QF, HEAVIER_DAMAGE_MARGIN, MIN_DOMINANT_SIDE, STRENGTH_MARGIN, decide, decide_qf, dominant_evidence,
    restore_auto,
)
from fbcnn_plugins.core.qf_estimation import DominantQF
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.core.drawn_content import exact_edge_share
from fbcnn_plugins.training.chains import Chain, double, jpeg, png_of_jpeg, resize, run_chain, screenshot, single, untouched


def photo(name: str, height: int, width: int, top: int = 0, left: int = 0) -> np.ndarray:
    image = getattr(data, name)()
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def save_jpeg(path, image: np.ndarray, quality: int) -> None:
    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def restore_file(path, capsys) -> dict:
    assert main(["restore", str(path), "-o", str(path.with_name(path.stem + "-out.png")), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)["files"]
    return record


@pytest.fixture(scope="module")
def restorer(bundled_color_model) -> Restorer:
    return Restorer(bundled_color_model, device="cpu")


@pytest.mark.parametrize("size", [(32, 32), (64, 80)])
@pytest.mark.parametrize("name, top, left", [("astronaut", 180, 200), ("coffee", 150, 250), ("chelsea", 80, 150)])
def test_small_clean_images_are_not_smeared(tmp_path, capsys, size, name, top, left):
    clean = photo(name, *size, top=top, left=left)
    source = tmp_path / f"{name}.png"
    Image.fromarray(clean).save(source)
    record = restore_file(source, capsys)
    with Image.open(tmp_path / f"{name}-out.png") as restored:
        out = np.asarray(restored.convert("RGB"))
    assert psnr(clean, out) >= 40.0, record
    assert record["qf"] >= 90, record


@pytest.mark.parametrize("size", [None, (96, 96), (32, 48)])
def test_a_never_compressed_screenshot_is_left_as_it_is(tmp_path, capsys, size):
    """Flat colours and text make the network predict heavy damage; the exact edges say otherwise."""
    shot = screenshot()
    if size is not None:
        shot = np.ascontiguousarray(shot[30 : 30 + size[0], 20 : 20 + size[1]])
    source = tmp_path / "shot.png"
    Image.fromarray(shot).save(source)
    record = restore_file(source, capsys)
    with Image.open(tmp_path / "shot-out.png") as restored:
        assert np.array_equal(np.asarray(restored.convert("RGB")), shot), record
    assert record["qf_source"] == "clean" and "exactly equal" in record["qf_reason"], record


def test_a_compressed_screenshot_is_still_restored(restorer):
    shot = screenshot()
    damaged = jpeg(shot, 40)  # a PNG of a JPEG: its grid decides
    restored = restore_auto(restorer, damaged)
    assert restored.qf.source == "dominant" and psnr(shot, restored.image) > psnr(shot, damaged) + 0.5
    # Resized after the JPEG: no grid left, but the ringing is, so it is not taken for drawn content.
    decision = decide_qf(restorer, resize(jpeg(shot, 60), 205, 205))
    assert decision.source == "predicted" and decision.qf < 90, decision


def test_exact_edges_tell_drawn_images_from_jpegs_and_photos():
    shot = screenshot()
    assert exact_edge_share(shot).drawn
    for quality in (95, 75, 30):  # even a light JPEG rings around every strong edge
        assert not exact_edge_share(jpeg(shot, quality)).drawn, quality
        assert not exact_edge_share(jpeg(shot, quality, 0)).drawn, quality
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        image = getattr(data, name)()
        for crop in (image, image[:64, :64], image[100:132, 100:132]):
            assert not exact_edge_share(np.ascontiguousarray(crop)).drawn, name


def test_restore_auto_leaves_clean_images_as_they_are_and_restores_jpegs(restorer):
    clean = photo("coffee", 64, 80, top=150, left=250)
    kept = restore_auto(restorer, clean)
    assert kept.qf.source == "clean" and np.array_equal(kept.image, clean) and kept.image is not clean
    damaged = jpeg(photo("coffee", 128, 128, top=100, left=200), 20)
    restored = restore_auto(restorer, damaged)
    assert restored.qf.source == "dominant" and abs(restored.qf.value - 20) <= 2
    assert np.array_equal(restored.image, restorer.restore(damaged, restored.qf.value).image)


def test_jpeg_resaved_at_95_after_15_is_restored_well_below_95(tmp_path, capsys):
    clean = photo("astronaut", 200, 200, top=60, left=120)
    first = jpeg(clean, 15)[3:, 5:]  # a crop off the 8x8 grid between the two saves
    source = tmp_path / "resaved.jpg"
    save_jpeg(source, np.ascontiguousarray(first), 95)
    record = restore_file(source, capsys)
    assert record["qf"] <= 40, record
    assert record["qf_source"] == "dominant"


def test_jpeg_resized_between_two_saves_is_restored_well_below_its_header(tmp_path, capsys):
    """A JPEG at QF 15, scaled by 0.75 (its grid gone) and saved at 90: the network sees the damage."""
    clean = photo("coffee", 320, 320, top=40, left=120)
    source = tmp_path / "resized.jpg"
    save_jpeg(source, resize(jpeg(clean, 15), 240, 240), 90)
    record = restore_file(source, capsys)
    assert record["qf_source"] == "predicted" and record["qf"] <= 50, record


@pytest.mark.parametrize("quality", [30, 80, 90, 95])
def test_single_jpeg_is_restored_at_its_header_qf(tmp_path, capsys, quality):
    source = tmp_path / f"q{quality}.jpg"
    save_jpeg(source, photo("coffee", 160, 224, top=100, left=150), quality)
    record = restore_file(source, capsys)
    assert (record["qf"], record["qf_source"]) == (quality, "header")


def test_a_full_chroma_jpeg_is_restored_a_little_gentler_than_its_header_qf(tmp_path, capsys):
    """A 4:4:4 file's colour is damaged less than the 4:2:0 files the network learnt QF on."""
    clean = photo("coffee", 160, 224, top=100, left=150)
    source = tmp_path / "q50-444.jpg"
    Image.fromarray(clean).save(source, format="JPEG", quality=50, subsampling=0)
    record = restore_file(source, capsys)
    assert record["qf_source"] == "header" and 55 <= record["qf"] <= 75 and "4:4:4" in record["qf_reason"], record
    assert main(["qf", str(source), "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["header"]["chroma"] == "4:4:4" and report["auto"]["qf"] == record["qf"]


def test_decision_says_which_evidence_decided(tmp_path, restorer):
    clean = photo("chelsea", 192, 192, top=40, left=120)
    path = tmp_path / "x.jpg"
    save_jpeg(path, np.ascontiguousarray(jpeg(clean, 15)[2:, 6:]), 90)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    decision = decide_qf(restorer, pixels, jpeg_path=path)
    assert decision.header == 90 and decision.dominant_trusted and decision.source == "dominant"
    assert "QF 90" in decision.reason and f"QF {decision.qf}" in decision.reason
    estimate = decision.estimate()
    assert (estimate.value, estimate.source, estimate.reason) == (decision.qf, "dominant", decision.reason)
    # Without the file, the same pixels decide the same way from the grid alone.
    assert decide_qf(restorer, pixels).qf == decision.qf


def test_qf_command_shows_the_auto_decision(tmp_path, capsys):
    path = tmp_path / "q35.jpg"
    save_jpeg(path, photo("coffee", 128, 128, top=100, left=200), 35)
    assert main(["qf", str(path), "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["auto"]["qf"] == 35 and report["auto"]["source"] == "header" and report["auto"]["reason"]
    assert report["strength"] is not None  # the bundled colour model's strength head
    assert main(["qf", str(path)]) == 0
    assert "auto 35 (header:" in capsys.readouterr().out


# -- the rule on given evidence: every branch ------------------------------------------------------

def grid(quality: int | None, depth: float | None, shift=(0, 0), double=False) -> DominantQF:
    """FBCNN-D evidence with one dip of the given depth (against flat 'typical' grids)."""
    if quality is None:
        return DominantQF(None, None, False, None, None)
    curve = np.ones(100)
    curve[quality - 1] = 1.0 - depth
    minima = {shift: (quality, 1.0 - depth), **({(0, 0): (90, 0.1)} if double else {})}
    return DominantQF(quality, shift, double, 1.0 - depth, depth, {} if shift == (0, 0) else {shift: curve}, minima,
                      typical=np.ones(100), current_low=curve if shift == (0, 0) else None)


def test_rule_branches():
    # Header alone; a trusted grid agreeing; a deeper earlier compression overruling it.
    assert decide(88.0, 256, 256, header=90).source == "header"
    assert decide(88.0, 256, 256, header=90, dominant=grid(90, 0.8)).qf == 90
    chosen = decide(60.0, 256, 256, header=90, dominant=grid(15, 0.9, (3, 5), True))
    assert (chosen.qf, chosen.source, chosen.shift) == (15, "dominant", (3, 5))
    # A dip at QF 95 or above is as deep as texture can make it: not evidence of a compression.
    assert not decide(93.0, 256, 256, dominant=grid(96, 0.7)).dominant_trusted
    assert decide(93.0, 256, 256, dominant=grid(96, 0.7)).source == "clean"
    # The same grid, too shallow for a small image, is not trusted.
    assert not decide(93.0, 64, 64, dominant=grid(6, 0.6)).dominant_trusted
    # The network seeing much heavier damage than the last save wins; a few steps below does not.
    assert decide(90.0 - HEAVIER_DAMAGE_MARGIN - 1, 256, 256, header=90).source == "predicted"
    assert decide(90.0 - HEAVIER_DAMAGE_MARGIN + 2, 256, 256, header=90).source == "header"
    # A 4:4:4 header calls for a somewhat higher strength; 4:2:0 and the extremes keep theirs.
    assert decide(50.0, 256, 256, header=50, header_chroma="4:4:4").qf > 55
    assert decide(50.0, 256, 256, header=50, header_chroma="4:2:0").qf == 50
    assert [decide(q, 256, 256, header=q, header_chroma="4:4:4").qf for q in (5, 100)] == [5, 100]
    # Nothing points to a compression: clean when the network agrees, else its prediction; on images
    # too small for FBCNN-D only a clearly low prediction counts.
    assert (decide(93.0, 16, 16).qf, decide(93.0, 16, 16).source) == (CLEAN_QF, "clean")
    assert decide(70.0, 16, 16).source == "clean" and decide(70.0, 128, 128).source == "predicted"
    assert (decide(30.0, 16, 16).qf, decide(30.0, 16, 16).source) == (30, "predicted")
    assert (decide(40.0, 200, 200, dominant=grid(None, None)).qf, decide(40.0, 200, 200).source) == (40, "predicted")


def test_a_shallow_low_dip_does_not_hide_a_deep_one():
    """FBCNN-D's lowest dip is a wiggle (depth 0.1 at QF 8); the deep one (QF 15) is the real first save."""
    found = grid(15, 0.95, (5, 3), double=True)
    wiggle = np.ones(100)
    wiggle[7] = 0.9
    found.curves[(7, 1)] = wiggle
    found.minima[(7, 1)] = (8, 0.9)
    found.quality, found.shift, found.depth = 8, (7, 1), 0.1
    chosen = decide(82.0, 128, 128, header=90, dominant=found)
    assert (chosen.qf, chosen.source, chosen.shift, chosen.double_compressed) == (15, "dominant", (5, 3), True)


def test_fbcnn_d_is_not_run_on_tiny_images():
    assert dominant_evidence(photo("astronaut", MIN_DOMINANT_SIDE - 1, 64)) is None
    assert dominant_evidence(photo("astronaut", MIN_DOMINANT_SIDE, 64)) is not None


# -- the chain benchmark, small: real images through real chains ------------------------------------

def test_chain_benchmark_on_a_sample_photo(restorer):
    image = data.astronaut()
    chains = [Chain("JPEG 20", single(20)), Chain("PNG of JPEG 30", png_of_jpeg(30)),
              Chain("JPEG 15 -> shift -> JPEG 90", double(15, 90, (3, 5))),
              Chain("clean 32", untouched(32), clean=True)]
    results = {c.name: run_chain(restorer, c, [image], 96, grid=(10, 30, 60, 95, 100), refine=0) for c in chains}
    for name in ("JPEG 20", "PNG of JPEG 30", "JPEG 15 -> shift -> JPEG 90"):
        result = results[name]
        # auto lands on the grid's best or close to it, and clearly above doing nothing
        assert result.score(lambda o: o.auto_used) > 0.5, name
        assert result.score(lambda o: o.auto_used) >= result.oracle_score() - 0.3, name
    clean = results["clean 32"]
    assert clean.score(lambda o: o.auto_used) >= 40.0 and clean.outcomes[0].auto_source == "clean"
    assert results["JPEG 20"].outcomes[0].auto_source == "header"


def test_rule_3_uses_the_strength_head_and_falls_back_without_one():
    # A strength far below a high last save, with the QF estimate also under it: used as it is.
    chosen = decide(84.0, 256, 256, header=90, strength=35.0)
    assert (chosen.qf, chosen.source, chosen.strength) == (35, "predicted", 35.0) and "strength" in chosen.reason
    # Within the margin: the header.
    assert decide(84.0, 256, 256, header=90, strength=90.0 - STRENGTH_MARGIN + 1).source == "header"
    # The strength alone, with the QF estimate where a single save leaves it: the header.
    assert decide(90.0 - HEAVIER_DAMAGE_MARGIN + 1, 256, 256, header=90, strength=35.0).source == "header"
    # Never for a low last save, nor on images too small to read it.
    assert decide(30.0, 256, 256, header=60, strength=20.0).qf == 60
    assert decide(84.0, 48, 48, header=90, strength=35.0).qf == 90
    # No header, no grid, not clean: the strength rather than the QF estimate.
    assert (decide(60.0, 200, 200, strength=41.0).qf, decide(60.0, 200, 200).qf) == (41, 60)
    # Whether an image is clean is the QF head's call, whatever the strength says.
    assert decide(93.0, 200, 200, strength=40.0).source == "clean"


def test_the_restorer_gives_the_qf_and_the_strength_from_one_pass(restorer):
    damaged = jpeg(resize(jpeg(photo("coffee", 320, 320, top=40, left=120), 15), 240, 240), 90)
    quality, strength = restorer.predict_qf_and_strength(damaged)
    assert quality == restorer.predict_qf(damaged)
    assert strength is not None and strength < quality - STRENGTH_MARGIN  # it sees the earlier damage
    # The gray model has its own head: it too sees the earlier, heavier save under the last one.
    gray_damaged = jpeg(resize(jpeg(rgb_to_y(photo("coffee", 320, 320, top=40, left=120)), 15), 240, 240), 90)
    gray_quality, gray_strength = Restorer("fbcnn-gray-small", device="cpu").predict_qf_and_strength(gray_damaged)
    assert gray_strength is not None and gray_strength < gray_quality - STRENGTH_MARGIN
