"""Every branch of the ``auto`` rule says in words the evidence it used, and only that.

Each test gives :func:`decide` the evidence of one branch and checks the decision and the
words against each other; the last ones do the same on real files (libjpeg through Pillow,
the bundled models).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from fbcnn_plugins.cli.main import main
from fbcnn_plugins.core.drawn_content import EdgeEvidence
from fbcnn_plugins.core.qf_choice import (
    CLEAN_QF, CUSTOM_TABLES, HEAVIER_DAMAGE_MARGIN, MIN_PREDICTION_SIDE, STRENGTH_MARGIN, DrawnSaveRule, HeavierDamageRule, decide, decide_qf,
    header_estimate,
)
from fbcnn_plugins.core.quality import QFEstimate
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.training.chains import decode, encode, tilted_tables
from test_qf_choice import grid

CUSTOM = QFEstimate(91, CUSTOM_TABLES, reason="closest libjpeg QF 91, 1.2 off per table entry")


def test_an_earlier_grid_under_the_header_names_the_grid_and_the_header():
    chosen = decide(60.0, 256, 256, header=90, dominant=grid(15, 0.9, (3, 5), True))
    assert (chosen.qf, chosen.source) == (15, "dominant")
    assert all(words in chosen.reason for words in ("QF 15", "(3, 5)", "depth 0.90", "header's QF 90"))


def test_the_header_alone_says_so_and_mentions_no_grid():
    chosen = decide(89.0, 256, 256, header=90)
    assert (chosen.qf, chosen.source) == (90, "header")
    assert "tables say QF 90" in chosen.reason and "grid" not in chosen.reason


def test_a_header_the_grid_confirms_says_both():
    chosen = decide(89.0, 256, 256, header=90, dominant=grid(90, 0.8))
    assert (chosen.qf, chosen.source) == (90, "header")
    assert "tables say QF 90" in chosen.reason and "grid agrees (FBCNN-D 90, depth 0.80)" in chosen.reason


def test_a_low_strength_alone_does_not_overrule_a_single_save_and_the_words_say_why():
    """The astronaut's case: header and grid at 90, the strength head at 65, the QF estimate at 90."""
    chosen = decide(89.9, 256, 256, header=90, dominant=grid(90, 0.8), strength=65.4)
    assert (chosen.qf, chosen.source) == (90, "header")
    assert "strength head reads heavier damage (QF 65.4)" in chosen.reason
    assert "QF estimate (89.9)" in chosen.reason and "nothing else points to an earlier save" in chosen.reason


def test_heavier_damage_seen_by_both_heads_names_both_and_the_last_save():
    predicted = 90.0 - HEAVIER_DAMAGE_MARGIN - 1
    chosen = decide(predicted, 256, 256, header=90, strength=90.0 - STRENGTH_MARGIN - 10)
    assert (chosen.qf, chosen.source) == (65, "predicted")
    assert all(words in chosen.reason for words in ("strength QF 65.0", f"QF estimate {predicted:.1f}", "header's QF 90",
                                                     "resized or edited"))


def test_a_models_fitted_margins_follow_readings_the_defaults_leave_and_say_so():
    """Readings 2.5 and 10 under a last save at 90: too close for the default margins, far enough for
    a model whose card carries margins of 2 and 7.5 (the words name them as the model's own)."""
    default = decide(87.5, 256, 256, header=90, strength=80.0)
    assert (default.qf, default.source) == (90, "header") and "heavier" not in default.reason
    fitted = decide(87.5, 256, 256, header=90, strength=80.0, heavier=HeavierDamageRule(7.5, 2.0, fitted=True))
    assert (fitted.qf, fitted.source) == (80, "predicted")
    assert all(words in fitted.reason for words in ("strength QF 80.0", "QF estimate 87.5", "at least 7.5 and 2 under it",
                                                    "this model's fitted margins", "header's QF 90"))


def test_heavier_damage_without_a_strength_head_says_how_far_the_qf_was_pushed():
    chosen = decide(84.0, 256, 256, header=90)
    assert (chosen.qf, chosen.source) == (60, "predicted")  # 84 - 4 x 6
    assert "QF 84.0" in chosen.reason and "4x the gap" in chosen.reason and "header's QF 90" in chosen.reason


def test_a_full_chroma_header_says_which_qf_it_was_mapped_to():
    chosen = decide(50.0, 256, 256, header=50, header_chroma="4:4:4")
    assert chosen.source == "header" and chosen.qf > 55
    assert "4:4:4" in chosen.reason and chosen.reason.endswith(f"so QF {chosen.qf}")


TABLE = ((1.0, 1.0), (50.0, 60.0), (100.0, 100.0))


def test_a_single_save_table_moves_the_qf_up_as_far_as_the_strength_head_agrees():
    # No strength head: the table's value, said with where it comes from.
    chosen = decide(50.0, 256, 256, header=50, single_save_strength=TABLE)
    assert (chosen.qf, chosen.source) == (60, "header")
    assert "single-save table" in chosen.reason and chosen.reason.endswith("so QF 60")
    # The strength head reads lighter damage than the header but not as light as the table: its reading caps it.
    chosen = decide(50.0, 256, 256, header=50, strength=55.2, single_save_strength=TABLE)
    assert chosen.qf == 55 and "best at QF 60" in chosen.reason and "strength head reads (QF 55.2)" in chosen.reason
    # The strength head reads heavier damage: the header's QF stays, and the words do not mention the table.
    chosen = decide(50.0, 256, 256, header=50, strength=41.0, single_save_strength=TABLE)
    assert chosen.qf == 50 and "single-save" not in chosen.reason


def test_a_grid_without_a_header_says_there_is_no_header():
    chosen = decide(40.0, 256, 256, dominant=grid(40, 0.9))
    assert (chosen.qf, chosen.source) == (40, "dominant")
    assert chosen.reason.startswith("no JPEG header;") and "grid at QF 40" in chosen.reason


def test_custom_tables_are_named_with_their_closest_qf_and_why_they_were_not_trusted():
    chosen = decide(75.0, 256, 256, dominant=grid(72, 0.9), custom_header=CUSTOM)
    assert (chosen.qf, chosen.source) == (72, "dominant")
    assert "no JPEG header" not in chosen.reason
    assert all(words in chosen.reason for words in ("non-standard tables", "closest libjpeg QF 91", "not trusted",
                                                     "grid at QF 72"))
    # Without a trusted grid the file is still a JPEG: never "clean", restored at the QF estimate.
    for evidence in (dict(dominant=grid(None, None)), dict(dominant=grid(91, 0.41)), {}):
        chosen = decide(91.5, 256, 256, custom_header=CUSTOM, strength=60.0, **evidence)
        assert (chosen.qf, chosen.source) == (92, "predicted"), evidence
        assert "non-standard tables" in chosen.reason and "QF estimate reads (91.5)" in chosen.reason
        assert "no JPEG header" not in chosen.reason and "never compressed" not in chosen.reason
    # Tables as fine as libjpeg's QF 95 or more (a camera's): the clean test decides, in those words.
    fine = QFEstimate(99, CUSTOM_TABLES, reason="closest libjpeg QF 99, 0.0 off per table entry")
    clean = decide(93.0, 256, 256, dominant=grid(None, None), custom_header=fine)
    assert clean.source == "clean" and "non-standard tables" in clean.reason
    assert "compressed too lightly to restore (tables as fine as libjpeg's QF 99)" in clean.reason
    assert decide(60.0, 256, 256, dominant=grid(None, None), custom_header=fine, strength=44.0).qf == 44


def test_drawn_content_names_the_share_of_exact_edges():
    chosen = decide(30.0, 256, 256, dominant=grid(23, 0.15), edges=EdgeEvidence(0.71, 12))
    assert (chosen.qf, chosen.source) == (CLEAN_QF, "clean")
    assert "71% of the pixel pairs" in chosen.reason and "drawn content" in chosen.reason
    assert "too shallow" in chosen.reason and "no JPEG header" in chosen.reason


def test_a_small_image_says_the_prediction_cannot_tell():
    chosen = decide(70.0, 32, 32)
    assert (chosen.qf, chosen.source) == (CLEAN_QF, "clean")
    assert "too small for FBCNN-D" in chosen.reason and "QF 70.0" in chosen.reason
    assert "cannot tell mild compression from none" in chosen.reason


@pytest.mark.parametrize("height, width", [(1, 3000), (3000, 1), (MIN_PREDICTION_SIDE - 1, 400)])
def test_a_thin_image_is_left_as_it_is_and_the_words_say_why(height, width):
    chosen = decide(22.0, height, width, strength=15.0)
    assert (chosen.qf, chosen.source) == (CLEAN_QF, "clean")
    assert f"{width}x{height}" in chosen.reason and f"thinner than the {MIN_PREDICTION_SIDE} px" in chosen.reason
    assert "nothing says it was compressed" in chosen.reason
    # Its JPEG header does say so.
    assert (decide(22.0, height, width, header=40).qf, decide(22.0, height, width, header=40).source) == (40, "header")
    custom = decide(22.0, height, width, custom_header=CUSTOM)
    assert (custom.qf, custom.source) == (91, "header") and "only evidence there is" in custom.reason


def test_little_damage_without_a_header_says_never_compressed():
    chosen = decide(93.0, 256, 256, dominant=grid(None, None))
    assert (chosen.qf, chosen.source) == (CLEAN_QF, "clean")
    assert "FBCNN-D finds no JPEG grid" in chosen.reason and "little damage (QF 93.0)" in chosen.reason
    assert "never compressed" in chosen.reason


def test_no_header_and_no_grid_name_the_estimate_used():
    with_strength = decide(60.0, 200, 200, dominant=grid(None, None), strength=41.0)
    assert (with_strength.qf, with_strength.source) == (41, "predicted")
    assert "strength estimate" in with_strength.reason and "QF estimate: 60.0" in with_strength.reason
    without = decide(60.0, 200, 200, dominant=grid(None, None))
    assert (without.qf, without.source) == (60, "predicted") and without.reason.endswith("the network's prediction")


# -- on real files -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def restorer(bundled_color_model) -> Restorer:
    return Restorer(bundled_color_model, device="cpu")


def test_the_astronaut_saved_once_at_90_is_restored_at_its_header(tmp_path, restorer):
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(encode(data.astronaut(), 90))
    decision = decide_qf(restorer, decode(path.read_bytes()), jpeg_path=path)
    assert decision.qf >= 85 and decision.source == "header", decision.reason


def test_a_file_with_custom_tables_is_described_as_such(tmp_path, restorer):
    image = np.ascontiguousarray(data.astronaut()[100:356, 100:356])
    path = tmp_path / "custom.jpg"
    path.write_bytes(encode(image, 50, qtables=tilted_tables(50)))
    header = header_estimate(path, 256, 256)
    assert header is not None and header.source == CUSTOM_TABLES and "off per table entry" in header.reason
    decision = decide_qf(restorer, decode(path.read_bytes()), jpeg_path=path)
    assert "non-standard tables" in decision.reason and "no JPEG header" not in decision.reason
    assert decision.header is None and decision.source != "clean"


def test_a_one_pixel_strip_of_noise_is_left_exactly_as_it_is(tmp_path, capsys):
    noise = np.random.default_rng(3).integers(0, 256, (1, 3000, 3), dtype=np.uint8)
    source, out = tmp_path / "strip.png", tmp_path / "strip-out.png"
    Image.fromarray(noise).save(source)
    assert main(["restore", str(source), "-o", str(out), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)["files"]
    assert record["qf_source"] == "clean", record
    with Image.open(out) as restored:
        assert np.array_equal(np.asarray(restored.convert("RGB")), noise)


def test_drawn_content_saved_as_jpeg_names_both_readings_its_panels_and_the_drawn_table():
    rule = DrawnSaveRule(((1.0, 1.0), (75.0, 86.0), (100.0, 100.0)), 3.0, 0.8, 0.05)
    chosen = decide(79.0, 256, 256, header=75, strength=99.9, single_save_strength=TABLE, drawn_save=rule, flat_share=0.53)
    assert (chosen.qf, chosen.source) == (86, "header")
    assert all(words in chosen.reason for words in ("tables say QF 75", "QF estimate 79.0", "strength 99.9",
                                                     "at least 3 above the header", "80% of the way from it to 100",
                                                     "53% of its 8x8 blocks are flat panels (at least 5%)",
                                                     "QF 86 after a save at QF 75", "drawn-save table"))
    assert "single-save" not in chosen.reason
    # Any witness short of its mark: a photo, through the single-save table, with no word of drawn content
    # (the strength head 80 % of the way from 75 to 100 is 95; a smooth photo the heads misread has no panels).
    for predicted, strength, flat in ((79.0, 94.0, 0.53), (77.0, 99.9, 0.53), (79.0, 99.9, 0.01)):
        photo = decide(predicted, 256, 256, header=75, strength=strength, single_save_strength=TABLE, drawn_save=rule,
                       flat_share=flat)
        assert photo.qf == int(round(np.interp(75, *zip(*TABLE)))) and "single-save table" in photo.reason
        assert "drawn" not in photo.reason
    # Only a header is mapped so: a grid's QF (a PNG of a JPEG) is not.
    assert decide(79.0, 256, 256, dominant=grid(75, 0.9), strength=99.9, drawn_save=rule, flat_share=0.5).qf == 75


def test_a_drawn_save_moves_from_the_table_towards_the_strength_reading_by_the_fitted_share():
    pulled = DrawnSaveRule(((1.0, 1.0), (75.0, 86.0), (100.0, 100.0)), 3.0, 0.8, 0.05, strength_pull=0.25)
    chosen = decide(79.0, 256, 256, header=75, strength=98.0, single_save_strength=TABLE, drawn_save=pulled, flat_share=0.53)
    assert chosen.qf == 89  # 86 + 0.25 * (98 - 86)
    assert all(words in chosen.reason for words in ("QF 89 after a save at QF 75", "moved 25% of the way from the table's QF 86"))
    # A reading under the table's QF pulls down, but never under the header's QF.
    assert int(pulled.strength_for(75, 82.0)) == 85 and int(pulled.strength_for(75, 20.0)) == 75
    unpulled = decide(79.0, 256, 256, header=75, strength=98.0, single_save_strength=TABLE,
                      drawn_save=DrawnSaveRule(pulled.table, 3.0, 0.8, 0.05), flat_share=0.53)
    assert unpulled.qf == 86 and "moved" not in unpulled.reason
