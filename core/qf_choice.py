"""The ``auto`` QF: one rule that weighs every piece of evidence, used by every front end.

Four witnesses can say how damaged an image is, and each is wrong in its own way:

* the **header** of the JPEG file the pixels came from is exact about the *last* save, and
  blind to everything before it (a photo compressed hard, resized and saved again at QF 90
  says 90);
* **FBCNN-D** (:func:`~fbcnn_plugins.core.qf_estimation.dominant_quality`) finds a past
  compression whose 8x8 grid is still in the pixels, also one the header hides (a crop or
  shift between two saves), but on few blocks the texture of a clean image can pass for a
  grid: its ``depth`` (how far the grid's error at its QF sits below the other grids') and
  the image size say how far to trust it;
* the **network's QF estimate** sees the damage itself, whatever made it, but only as one
  smooth guess that lands between the qualities of a chain (and near the last save's QF);
* the network's **strength estimate** (a head fitted to the control that restores real
  degradation chains best) sees an earlier compression under a resize and a second save, and
  misreads some single JPEGs' content as damage.

The rule, in order (the thresholds below were set on the training images and on generated
degradation chains, never on the validation images the benchmark reports):

1. A trusted FBCNN-D grid clearly below the header QF: a stronger, earlier compression
   the last save did not erase; undo it (``dominant``).
2. Else the header, else a trusted FBCNN-D grid (``header`` / ``dominant``); a header of a
   file with full-resolution colour (4:4:4) is mapped to the somewhat higher strength such
   files call for (:data:`FULL_CHROMA_STRENGTH`), and a model whose card carries a fitted
   single-save table (the gray model: it restores a single save best a few QF above its QF)
   maps the save's QF through it, or, where both of the network's readings sit far above the
   header's QF (how it reads a JPEG of drawn content: a screenshot, text) and the pixels show flat
   panels, through its drawn-save table (:func:`drawn_save_mapping`) ...
3. ... unless the network sees far heavier damage than a high last save (both its strength
   and its QF estimate well under it): an earlier compression whose grid a resize or edit
   removed; then the strength estimate, or, for models without a strength head, the QF
   estimate pushed further down by how far it sits below the last save (``predicted``).
4. No header and no trusted grid: an image thinner than 16 px is left as it was (no estimate
   means anything there); if the image's strong edges sit between exactly flat
   colours (drawn content: a screenshot, UI, line art; see
   :mod:`~fbcnn_plugins.core.drawn_content`), or the network sees little damage (on images
   too small for FBCNN-D: unless it sees heavy damage), the image was most likely never
   compressed (a PNG, an icon, a thumbnail) and is left as it was (``clean``, see
   :func:`restore_auto`); else the network's strength estimate (its QF prediction for models
   without a strength head).  A header with an encoder's own tables is not trusted as a QF (its
   closest libjpeg QF need not match the damage) but says the file is a JPEG: without a
   trusted grid, the network's QF estimate (a single save's damage) is used, unless the
   tables are as fine as libjpeg's QF 95 or more (then the clean test above decides); the
   reason says which.

:func:`decide_qf` returns the decision with its evidence and a sentence saying why;
:func:`choose_qf` is the same as a :class:`~fbcnn_plugins.core.quality.QFEstimate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .drawn_content import EdgeEvidence, exact_edge_share, flat_block_share
from .qf_estimation import NEAR_QF, DominantQF, dominant_quality, header_quality
from .quality import QF_MAX, QF_MIN, QFEstimate, clamp_qf
from .pixels import plain_array, split_image
from .restorer import RestoreResult, Restorer

#: The source of a header estimate from non-standard (an encoder's own) tables: its QF is only the closest
#: libjpeg quality, said in words but not restored at (see :func:`decide`).
CUSTOM_TABLES = "custom-tables"
#: Below this side (either side) the network's estimates mean nothing: they were fitted and checked on
#: images of 16 px and more (1-px strips of noise read QF 22-35).  Such an image is left as it is unless
#: its file says it was compressed.
MIN_PREDICTION_SIDE = 16
#: Below this side FBCNN-D is not run: a 47-px image has at most 25 blocks on a shifted grid,
#: and clean 24-47 px crops showed "grids" as deep as real ones.
MIN_DOMINANT_SIDE = 48
#: From this side on, a dip of :data:`TRUSTED_DEPTH` is a real grid; smaller images need
#: :data:`SMALL_IMAGE_DEPTH`.  On training crops a real single JPEG at QF <= 90 or a double
#: JPEG's first grid showed depths of 0.73-1.0 (QF 95: 0.55-0.7); clean crops of 96 px and more
#: stayed under 0.45, while 48-95 px clean crops reached 0.64.
FULL_TRUST_SIDE = 96
TRUSTED_DEPTH = 0.5
SMALL_IMAGE_DEPTH = 0.8
#: Dips at this QF and above are never trusted: a real JPEG at QF 95 dips only 0.5-0.7 deep, as deep
#: as a clean photo's texture can (a clean validation photo showed a "grid" at QF 96), and restoring
#: a clean photo at QF 96 already costs more than a 40 dB PSNR allows.
UNTRUSTED_GRID_QF = 95
#: FBCNN-D's grid must sit this many QF steps under the header to overrule it (one-step
#: differences are the estimator's rounding, not a second compression).
OVERRULE_MARGIN = 5
#: Rule 3 (the network sees heavier damage than the last save) applies when the last save was
#: at least this high (re-saves of web photos are at 80-96) ...
HIGH_LAST_SAVE = 80
#: ... on images at least this large (the prediction is steadier on more pixels) ...
HEAVIER_DAMAGE_MIN_SIDE = 64
#: ... and when the network's *strength* (the bundled colour model's strength head, refitted to the
#: control that restores best: training/qf_head.py) sits at least this many QF steps under the last
#: save; it is then used as it is.  On out-of-fold training patches (64-256 px, last save at QF >= 80),
#: over margins of 10 / 15 / 20 / 30 single JPEGs lost 0.17 / 0.16 / 0.15 / 0.14 dB against each
#: patch's best strength and resized, re-saved photos 0.19 / 0.21 / 0.24 / 0.29 (the header alone:
#: 0.10 and 0.74); 15 balances the two.  The strength head alone misreads some single JPEGs by more
#: than that (scikit-image's astronaut saved at QF 90 reads 65), so the QF estimate must also sit
#: :data:`HEAVIER_DAMAGE_MARGIN` under the last save (see :func:`heavier_damage`).
STRENGTH_MARGIN = 15.0
#: The QF estimate must sit this many QF steps under the last save for rule 3; models without a
#: strength head (third-party weights) go by it alone, up to
#: :data:`HEAVIER_DAMAGE_MAX_GAP`.  On 128-px training crops (12 images) a single JPEG at QF 80, 90
#: or 95 left the prediction at most 1.8 under the header, while a JPEG at QF 10-20 resized by
#: 0.6-0.9 and saved at 90/95 left it 4-17 under (an upscale, up to 22); a far larger gap is content
#: the network misreads (flat colours, text: 45 on a screenshot), whose file says otherwise.
HEAVIER_DAMAGE_MARGIN = 3.5
HEAVIER_DAMAGE_MAX_GAP = 30.0
#: ... and the QF used is the prediction pushed down by this many times its gap to the last save (a
#: prediction trained on single saves gets only a fraction of the way towards the first compression),
#: but never below :data:`EXTRAPOLATION_FLOOR`.  Chosen on the training chains (3 images, 13 chains):
#: 4 gave the smallest total and worst-chain loss against the best fixed QF of 2, 3, 4 and 5; the
#: floor of 10 over 1, 20 and 30.
EXTRAPOLATION = 4.0
EXTRAPOLATION_FLOOR = 10
#: The strength a JPEG with full-resolution colour (4:4:4) calls for, by its header QF: the network
#: learnt QF on 4:2:0 files, whose colour the same QF damages far more, so at the header's QF it
#: smooths a 4:4:4 file's colour edges too much.  Medians of the best QF per image on 14 training
#: images (192 px, QF 10-90); in between, linear.  On the same images the header QF itself lost
#: 0.06-0.14 dB at QF 20-70 against the best fixed QF; 4:2:0 files stay at their header QF.
FULL_CHROMA_STRENGTH = ((1, 1), (10, 10), (20, 27), (30, 42), (50, 66), (70, 78), (80, 84), (90, 90), (100, 100))
#: With no header and no trusted grid, a prediction at least this high means "never compressed".
CLEAN_PREDICTION = 85.0
#: Below :data:`MIN_DOMINANT_SIDE` (no FBCNN-D) the prediction alone cannot tell a clean image from
#: a JPEG at QF 70-90: on 16-32 px training crops it ranged over 44-96 for clean ones and 41-92
#: for JPEGs at QF 70-90.  Smearing an icon costs far more than leaving a mild JPEG's artifacts, so
#: such an image counts as clean unless the prediction is below this.
TINY_CLEAN_PREDICTION = 50.0
#: The QF reported for images that look never compressed; :func:`restore_auto` leaves them as they
#: are (even at QF 100 the network changes a clean photo's saturated colours by more than 40 dB
#: PSNR allows).
CLEAN_QF = QF_MAX
#: A model's fitted (save QF, best strength) pairs, increasing in QF (see :func:`single_save_table`).
SingleSaveTable = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class DrawnSaveRule:
    """A model's fitted table for drawn content saved once, and how far above the header's QF both
    of the network's readings must lie, with how many flat panels the pixels must show
    (:func:`~fbcnn_plugins.core.drawn_content.flat_block_share`), to take an image for drawn
    content (the card's ``strength_head.drawn_save_strength``, ``drawn_quality_margin``,
    ``drawn_strength_share`` and ``drawn_flat_share``, written by training/single_saves.py).
    The strength head must read ``strength_share`` of the way from the header's QF to 100.

    The table gives the population's best strength; one drawn image's own lies nearer the strength
    head's reading (more text and sharp edges read lighter and restore best lighter), so the QF
    restored at moves ``strength_pull`` of the way from the table's QF towards that reading (the
    card's ``drawn_strength_pull``, fitted beside the margins; 0 where a card has none)."""

    table: SingleSaveTable
    quality_margin: float
    strength_share: float
    flat_share: float
    strength_pull: float = 0.0

    def takes(self, header, predicted, strength, flat_share):
        """Whether all three witnesses say drawn content; numbers or numpy arrays (the fit in
        training/single_saves.py asks this of every collected patch at once)."""
        return ((predicted - header >= self.quality_margin) & (strength - header >= self.strength_share * (QF_MAX - header))
                & (flat_share >= self.flat_share))

    def applies(self, header: int, predicted: float, strength: float | None, flat_share: float | None) -> bool:
        return strength is not None and flat_share is not None and bool(self.takes(header, predicted, strength, flat_share))

    def table_strength(self, header):
        """The table's strength for a save at ``header``, never under it; numbers or numpy arrays."""
        return np.maximum(header, np.clip(np.rint(np.interp(header, *zip(*self.table))), QF_MIN, QF_MAX))

    def strength_for(self, header, strength):
        """The QF a drawn save at ``header`` is restored at: the table's, moved :attr:`strength_pull` of
        the way towards the strength head's reading, never under ``header``; numbers or numpy arrays."""
        table = self.table_strength(header)
        pulled = np.rint(table + self.strength_pull * (np.clip(strength, QF_MIN, QF_MAX) - table))
        return np.clip(np.maximum(header, pulled), QF_MIN, QF_MAX)


@dataclass(frozen=True)
class HeavierDamageRule:
    """How far under a high last save both of the network's readings must sit for rule 3 to follow
    the strength head (:func:`heavier_damage`): the strength head ``strength_margin`` QF steps or
    more, the QF estimate ``quality_margin`` or more.  A model's card may carry its own by image
    size, fitted on its collected patches (``strength_head.heavier_damage_margins``, written by
    training/heavier_damage.py; see :func:`heavier_damage_rule`): how far a single save's readings
    stray from its QF is the model's own, and they stray less on more pixels.  Without them, the
    defaults :data:`STRENGTH_MARGIN` and :data:`HEAVIER_DAMAGE_MARGIN`."""

    strength_margin: float = STRENGTH_MARGIN
    quality_margin: float = HEAVIER_DAMAGE_MARGIN
    fitted: bool = False

    def takes(self, header, predicted, strength):
        """Whether both readings sit far enough under the last save; numbers or numpy arrays (the fit
        in training/heavier_damage.py asks this of every collected patch at once)."""
        return (header - strength >= self.strength_margin) & (header - predicted >= self.quality_margin)


#: Rule 3's margins for models whose card has none.
DEFAULT_HEAVIER_DAMAGE = HeavierDamageRule()


@dataclass
class QFDecision:
    """The QF ``auto`` settled on, the evidence it weighed, and why (one sentence for people)."""

    qf: int
    source: str  # "header", "dominant", "predicted" or "clean"
    reason: str
    predicted: float
    header: int | None = None
    dominant: int | None = None
    dominant_depth: float | None = None
    dominant_trusted: bool = False
    shift: tuple[int, int] | None = None
    double_compressed: bool | None = None
    exact_edge_share: float | None = None
    strength: float | None = None  # the strength head's estimate, for models that have one

    def estimate(self) -> QFEstimate:
        return QFEstimate(self.qf, self.source, self.predicted, shift=self.shift,
                          double_compressed=self.double_compressed, reason=self.reason)


def header_estimate(path: str | os.PathLike[str] | None, height: int, width: int) -> QFEstimate | None:
    """What the header of ``path`` says, when it is a JPEG of this size.

    Standard (libjpeg) tables give an exact QF (source ``header``); an encoder's own tables only
    the closest libjpeg QF (source :data:`CUSTOM_TABLES`, the reason saying how far off they are),
    which ``auto`` reports but does not restore at."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with Image.open(path) as image:
            if image.format not in ("JPEG", "MPO") or image.size not in ((width, height), (height, width)):
                return None
        found = header_quality(path)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if found is None:
        return None
    if not found.exact:
        return QFEstimate(found.quality, CUSTOM_TABLES, chroma=found.chroma,
                          reason=f"closest libjpeg QF {found.quality}, {found.error:.1f} off per table entry")
    return QFEstimate(found.quality, "header", chroma=found.chroma)


def eight_bit_color(image: np.ndarray) -> np.ndarray:
    """The colour (or gray) channels of any supported image as 8-bit, as a JPEG decoder would give them."""
    image = plain_array(image)
    planes = image if image.ndim == 3 else image[:, :, None]
    color = planes[:, :, : 3 if planes.shape[2] >= 3 else 1]
    if color.dtype == np.uint8:
        return color
    scale = {np.dtype(np.uint16): 255.0 / 65535.0}.get(color.dtype, 255.0)
    return np.clip(np.rint(color.astype(np.float32) * scale), 0, 255).astype(np.uint8)


def dominant_evidence(image: np.ndarray) -> DominantQF | None:
    """FBCNN-D on ``image``, or None when it is too small for the estimate to mean anything."""
    if min(image.shape[:2]) < MIN_DOMINANT_SIDE:
        return None
    return dominant_quality(eight_bit_color(image))


@dataclass(frozen=True)
class TrustedGrid:
    """A past compression FBCNN-D found deep enough to be real."""

    quality: int
    shift: tuple[int, int]
    depth: float
    double_compressed: bool


def trusted_grid(found: DominantQF | None, height: int, width: int) -> TrustedGrid | None:
    """The strongest past compression among FBCNN-D's dips deep enough, for this size, to be real.

    FBCNN-D itself takes the lowest-QF dip of any grid; a shallow wiggle of one grid at a low QF
    can then hide the real, deep dip of another.  Here every grid's dip is weighed by its depth
    first, and the lowest QF among the deep ones wins (the deepest among near-equal QFs).
    """
    if found is None or found.quality is None:
        return None
    needed = TRUSTED_DEPTH if min(height, width) >= FULL_TRUST_SIDE else SMALL_IMAGE_DEPTH
    deep = {}
    for shift, (quality, _) in {**found.minima, found.shift: (found.quality, found.mse)}.items():
        depth = found.depth_at(shift, quality)
        if depth is not None and depth >= needed and quality < UNTRUSTED_GRID_QF:
            deep[shift] = (quality, depth)
    if not deep:
        return None
    lowest = min(quality for quality, _ in deep.values())
    shift, (quality, depth) = max(((s, m) for s, m in deep.items() if m[0] <= lowest + NEAR_QF),
                                  key=lambda item: item[1][1])
    current = found.minima.get((0, 0))
    double = shift != (0, 0) and current is not None and current[0] != quality
    return TrustedGrid(quality, shift, depth, double)


def decide(
    predicted: float,
    height: int,
    width: int,
    *,
    header: int | None = None,
    dominant: DominantQF | None = None,
    edges: EdgeEvidence | None = None,
    header_chroma: str | None = None,
    strength: float | None = None,
    custom_header: QFEstimate | None = None,
    single_save_strength: SingleSaveTable | None = None,
    drawn_save: DrawnSaveRule | None = None,
    flat_share: float | None = None,
    heavier: HeavierDamageRule = DEFAULT_HEAVIER_DAMAGE,
) -> QFDecision:
    """The ``auto`` rule (see the module docstring) on evidence already gathered.

    ``header`` is the QF of a file with libjpeg's tables; ``custom_header`` the closest QF of a
    file with an encoder's own tables (see :func:`header_estimate`), reported but not restored at
    unless nothing else can be measured.  ``single_save_strength`` is the model's fitted table
    from a save's QF to the strength that restores it best (:func:`single_save_table`);
    ``drawn_save`` its rule for drawn content saved once (:func:`drawn_save_rule`), used instead
    where both of the network's readings lie far enough above the header's QF and ``flat_share``
    (the image's :func:`~fbcnn_plugins.core.drawn_content.flat_block_share`) is high enough;
    ``heavier`` the margins of rule 3 (:func:`heavier_damage_rule`)."""
    trusted = trusted_grid(dominant, height, width)
    facts = dict(
        exact_edge_share=None if edges is None else edges.share, strength=strength,
        predicted=float(predicted), header=header,
        dominant=None if dominant is None else dominant.quality,
        dominant_depth=None if dominant is None else dominant.depth,
        dominant_trusted=trusted is not None,
        shift=None if trusted is None else trusted.shift,
        double_compressed=None if trusted is None else trusted.double_compressed,
    )
    grid = None if trusted is None else trusted.quality
    depth = "" if trusted is None else f"depth {trusted.depth:.2f}"
    no_header = "no JPEG header" if custom_header is None else (
        f"a JPEG header with non-standard tables ({custom_header.reason or f'closest libjpeg QF {custom_header.value}'}), "
        f"not trusted as a QF: an encoder's own tables can damage more or less than libjpeg's at that QF")
    if grid is not None and header is not None and grid <= header - OVERRULE_MARGIN:
        base, source, basis = grid, "dominant", f"FBCNN-D's QF {grid}"
        reason = (f"the pixels keep the 8x8 grid of an earlier, stronger compression (QF {grid}, "
                  f"grid shift {trusted.shift}, {depth}) under the header's QF {header}")
    elif header is not None:
        base, source, basis = header, "header", f"the header's QF {header}"
        reason = f"the JPEG file's tables say QF {header}"
        if grid is not None:
            reason += f" and the pixels' grid agrees (FBCNN-D {grid}, {depth})"
    elif grid is not None:
        base, source, basis = grid, "dominant", f"FBCNN-D's QF {grid}"
        kind = "a non-aligned double JPEG's first" if trusted.double_compressed else "a JPEG"
        reason = f"{no_header}; the pixels carry {kind} 8x8 grid at QF {grid} ({depth}, shift {trusted.shift})"
    else:
        base = None
    if base is not None:
        heavier_qf, reason = heavier_damage(base, basis, reason, predicted, strength, height, width, heavier)
        if heavier_qf is not None:
            return QFDecision(heavier_qf, "predicted", reason, **facts)
        if source == "header" and header_chroma == "4:4:4":
            mapped = header_strength_full_chroma(base)
            reason += (f"; the file keeps full-resolution colour (4:4:4), which QF {base} damages less than "
                       f"the 4:2:0 files the network learnt from, so QF {mapped}")
            base = mapped
        elif source == "header" and drawn_save is not None and drawn_save.applies(base, predicted, strength, flat_share):
            base, reason = drawn_save_mapping(base, reason, predicted, strength, flat_share, drawn_save)
        elif single_save_strength:
            base, reason = single_save_mapping(base, reason, strength, single_save_strength)
        return QFDecision(base, source, reason, **facts)
    if min(height, width) < MIN_PREDICTION_SIDE:
        if custom_header is not None:
            return QFDecision(custom_header.value, "header", (
                f"{no_header}; at {width}x{height} neither FBCNN-D nor the network can measure the damage, "
                f"so the tables' closest QF {custom_header.value} is the only evidence there is"), **facts)
        return QFDecision(CLEAN_QF, "clean", (
            f"no JPEG header, and at {width}x{height} the image is thinner than the {MIN_PREDICTION_SIDE} px the "
            f"network's estimates were checked on (its QF estimate {predicted:.1f} means nothing here): nothing says "
            f"it was compressed, so it is left as it is"), **facts)
    why_not_grid = ("the image is too small for FBCNN-D" if dominant is None else
                    "FBCNN-D finds no JPEG grid" if dominant.quality is None else
                    f"FBCNN-D's grid (QF {dominant.quality}, depth {dominant.depth or 0:.2f}) is too shallow "
                    f"to be told from texture at {width}x{height}")
    if custom_header is not None and custom_header.value < UNTRUSTED_GRID_QF:
        return QFDecision(clamp_qf(predicted), "predicted", (
            f"{no_header}; {why_not_grid}: the file is a JPEG all the same, most likely one save by a camera or "
            f"editor, whose damage the network's QF estimate reads ({predicted:.1f})"), **facts)
    never = ("never compressed" if custom_header is None else
             f"compressed too lightly to restore (tables as fine as libjpeg's QF {custom_header.value})")
    if edges is not None and edges.drawn:
        return QFDecision(CLEAN_QF, "clean", (
            f"{no_header}, {why_not_grid}, and {edges.share:.0%} of the pixel pairs around its strong "
            f"edges are exactly equal, which no JPEG decoder leaves: drawn content (a screenshot, line art) "
            f"never compressed, left as it is"), **facts)
    if min(height, width) < MIN_DOMINANT_SIDE:
        if predicted >= TINY_CLEAN_PREDICTION:
            return QFDecision(CLEAN_QF, "clean", (
                f"{no_header} and {why_not_grid}; at {width}x{height} the network's prediction "
                f"(QF {predicted:.1f}) cannot tell mild compression from none and is not low enough to "
                f"justify smearing: treated as {never} and left as it is"), **facts)
    elif predicted >= CLEAN_PREDICTION:
        return QFDecision(CLEAN_QF, "clean", (
            f"{no_header}, {why_not_grid}, and the network sees little damage (QF {predicted:.1f}): "
            f"treated as {never} and left as it is"), **facts)
    if strength is not None:
        return QFDecision(clamp_qf(strength), "predicted", (
            f"{no_header} and {why_not_grid}: the network's strength estimate (its QF estimate: "
            f"{predicted:.1f})"), **facts)
    return QFDecision(clamp_qf(predicted), "predicted",
                      f"{no_header} and {why_not_grid}: the network's prediction", **facts)


def heavier_damage(base: int, basis: str, reason: str, predicted: float, strength: float | None,
                   height: int, width: int, rule: HeavierDamageRule = DEFAULT_HEAVIER_DAMAGE) -> tuple[int | None, str]:
    """Rule 3: the QF and reason when the network sees far heavier damage than a high last save;
    else None and ``reason`` (with a word on why a low strength reading was not followed).

    Two of the network's witnesses must agree that there was a save before the last one: the
    strength head reads at least ``rule.strength_margin`` below ``base``, *and* the QF head, which
    on a plain single JPEG lands within a step or two of its QF, reads at least
    ``rule.quality_margin`` below it.  The strength head alone misreads some single JPEGs'
    content as damage (scikit-image's astronaut saved at QF 90 reads 65), while a single save
    leaves the QF estimate close to its QF and a resize between two saves takes it further below.
    """
    if base < HIGH_LAST_SAVE or min(height, width) < HEAVIER_DAMAGE_MIN_SIDE:
        return None, reason
    gap = base - predicted
    if strength is not None:
        if base - strength < rule.strength_margin:
            return None, reason
        if not rule.takes(base, predicted, strength):
            return None, (
                f"{reason}; the strength head reads heavier damage (QF {strength:.1f}), but the QF estimate "
                f"({predicted:.1f}) is where a single save at QF {base} leaves it, "
                f"so nothing else points to an earlier save")
        margins = (f"at least {rule.strength_margin:g} and {rule.quality_margin:g} under it"
                   + (", this model's fitted margins" if rule.fitted else ""))
        return clamp_qf(strength), (
            f"the network sees far heavier damage (strength QF {strength:.1f}, QF estimate {predicted:.1f}; "
            f"{margins}) than {basis}: a high last save over an earlier compression whose grid is gone (resized or edited)")
    if not HEAVIER_DAMAGE_MARGIN <= gap <= HEAVIER_DAMAGE_MAX_GAP:
        return None, reason
    return clamp_qf(max(EXTRAPOLATION_FLOOR, predicted - EXTRAPOLATION * gap)), (
        f"the network sees heavier damage (QF {predicted:.1f}) than {basis}: a high last save over an "
        f"earlier compression whose grid is gone (resized or edited), so the QF goes {EXTRAPOLATION:g}x the "
        f"gap below the prediction")


def single_save_strengths(header, strength, table: SingleSaveTable):
    """The strength rule 2 restores a save at ``header`` with through the single-save table, no
    further up than ``strength`` (None: as the table says); numbers or numpy arrays (the fit in
    training/heavier_damage.py asks this of every collected patch at once, as ``auto`` would)."""
    fitted = np.clip(np.rint(np.interp(header, *zip(*table))), QF_MIN, QF_MAX)
    if strength is None:
        return fitted
    return np.minimum(fitted, np.maximum(header, np.clip(np.rint(strength), QF_MIN, QF_MAX)))


def single_save_mapping(base: int, reason: str, strength: float | None, table: SingleSaveTable) -> tuple[int, str]:
    """Rule 2's QF through the model's single-save table, no further than the strength head agrees.

    The table says where this model restores a single save at ``base`` best (a few QF higher for
    the gray model).  A photo resized between two saves looks like a single save at its last QF
    to the header and to FBCNN-D, and restoring it lighter still would be the wrong way; the
    strength head then reads at or under ``base``.  So the QF moves up only as far as the
    strength head's reading, and not at all where it reads heavier damage.
    """
    fitted = int(single_save_strengths(base, None, table))
    mapped = int(single_save_strengths(base, strength, table))
    if mapped == base:
        return base, reason
    limit = "" if mapped == fitted else f", as far as its strength head reads (QF {strength:.1f})"
    return mapped, (f"{reason}; this model restores a single save at QF {base} best at QF {fitted} (its card's "
                    f"single-save table, fitted on training patches), so QF {mapped}{limit}")


def drawn_save_mapping(base: int, reason: str, predicted: float, strength: float, flat_share: float,
                       rule: DrawnSaveRule) -> tuple[int, str]:
    """Rule 2's QF through the model's drawn-save table: both of the network's readings say the
    image is far less damaged than its header's QF, which is how a network trained on photos reads
    a JPEG of drawn content (a screenshot, text, UI), and the pixels show its flat panels; a photo
    saved once almost never shows both.

    Text and sharp panel edges lose more to smoothing than a photo's texture, and such a model
    restores them best well above the save's QF (the gray model: a save at QF 75 best at about
    84); the table was fitted on generated drawn images saved once, the margins so that photos
    lose next to nothing (training/single_saves.py)."""
    tabled = int(rule.table_strength(base))
    mapped = int(rule.strength_for(base, strength))
    if mapped == base:
        return base, reason
    pulled = "" if mapped == tabled else (
        f", moved {rule.strength_pull:.0%} of the way from the table's QF {tabled} towards the strength head's "
        f"reading, as the card's fit on those images says")
    return mapped, (f"{reason}; but both of the network's readings see far lighter damage (QF estimate {predicted:.1f}, "
                    f"strength {strength:.1f}; the one at least {rule.quality_margin:g} above the header, the other "
                    f"{rule.strength_share:.0%} of the way from it to 100) and {flat_share:.0%} of its 8x8 blocks are flat panels (at least {rule.flat_share:.0%}): "
                    f"drawn content such as a screenshot or text, which this model restores best at QF {mapped} after "
                    f"a save at QF {base} (its card's drawn-save table, fitted on generated drawn images{pulled})")


def header_strength_full_chroma(quality: int) -> int:
    """The QF to restore a 4:4:4 JPEG saved at ``quality`` with (see :data:`FULL_CHROMA_STRENGTH`)."""
    qualities, strengths = zip(*FULL_CHROMA_STRENGTH)
    return clamp_qf(float(np.interp(quality, qualities, strengths)))


def single_save_table(restorer: Restorer, image: np.ndarray) -> SingleSaveTable | None:
    """The single-save table (save QF -> best strength) of the model that restores ``image``, where
    its card has one (``strength_head.single_save_strength``, written by training/qf_head.py)."""
    card = restorer.model_for(split_image(image).is_gray).card or {}
    table = (card.get("strength_head") or {}).get("single_save_strength")
    return tuple((float(q), float(s)) for q, s in table) if table else None


def drawn_save_rule(restorer: Restorer, image: np.ndarray) -> DrawnSaveRule | None:
    """The drawn-save rule of the model that restores ``image``, where its card has one."""
    card = restorer.model_for(split_image(image).is_gray).card or {}
    head = card.get("strength_head") or {}
    table = head.get("drawn_save_strength")
    keys = ("drawn_quality_margin", "drawn_strength_share", "drawn_flat_share")
    if not table or any(head.get(key) is None for key in keys):
        return None
    return DrawnSaveRule(tuple((float(q), float(s)) for q, s in table), *(float(head[key]) for key in keys),
                         strength_pull=float(head.get("drawn_strength_pull", 0.0)))


def heavier_damage_rule(restorer: Restorer, image: np.ndarray) -> HeavierDamageRule:
    """Rule 3's margins for ``image``: those of the model that restores it fitted for its size band
    (the card's ``strength_head.heavier_damage_margins``: rows of least shorter side, strength
    margin, QF-estimate margin, every band from the first up to the next row's side), else the defaults."""
    card = restorer.model_for(split_image(image).is_gray).card or {}
    bands = (card.get("strength_head") or {}).get("heavier_damage_margins") or []
    side = min(image.shape[:2])
    fitting = [(float(strength), float(quality)) for least, strength, quality in sorted(bands) if side >= least]
    if not fitting:
        return DEFAULT_HEAVIER_DAMAGE
    # A band the fit could not choose margins for (too few patches, or margins that cost single saves out
    # of fold) holds the defaults, and is said to be no model's own.
    strength, quality = fitting[-1]
    default = (DEFAULT_HEAVIER_DAMAGE.strength_margin, DEFAULT_HEAVIER_DAMAGE.quality_margin)
    return HeavierDamageRule(strength, quality, fitted=(strength, quality) != default)


def model_rules(restorer: Restorer, image: np.ndarray) -> dict:
    """The fitted rules the card of the model that restores ``image`` carries, as :func:`decide_on`'s
    keyword arguments, so every caller passes the same ones."""
    return {"single_save_strength": single_save_table(restorer, image), "drawn_save": drawn_save_rule(restorer, image),
            "heavier": heavier_damage_rule(restorer, image)}


def decide_on(
    image: np.ndarray,
    predicted: float,
    strength: float | None,
    *,
    header: QFEstimate | int | None = None,
    dominant: DominantQF | None = None,
    single_save_strength: SingleSaveTable | None = None,
    drawn_save: DrawnSaveRule | None = None,
    heavier: HeavierDamageRule = DEFAULT_HEAVIER_DAMAGE,
) -> QFDecision:
    """:func:`decide` on the network's estimates already made, with the evidence the pixels and the
    header carry filled in: FBCNN-D only where the image is large enough for it, the exact edges,
    the header's chroma subsampling.  ``fbcnn qf`` calls this with the estimates it reports."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_DOMINANT_SIDE:
        dominant = None
    custom = header if isinstance(header, QFEstimate) and header.source == CUSTOM_TABLES else None
    if custom is not None:
        header = None
    pixels = eight_bit_color(image)
    return decide(predicted, height, width,
                  header=header.value if isinstance(header, QFEstimate) else header,
                  header_chroma=header.chroma if isinstance(header, QFEstimate) else None, custom_header=custom,
                  dominant=dominant, edges=exact_edge_share(pixels), strength=strength,
                  single_save_strength=single_save_strength, drawn_save=drawn_save, heavier=heavier,
                  # only a header's QF goes through the drawn table: no other image needs its panels counted
                  flat_share=None if drawn_save is None or header is None else flat_block_share(pixels))


def decide_qf(
    restorer: Restorer,
    image: np.ndarray,
    *,
    jpeg_path: str | os.PathLike[str] | None = None,
    header: QFEstimate | int | None = None,
) -> QFDecision:
    """Gather the evidence for ``image`` (header given, or read from ``jpeg_path``) and apply :func:`decide`."""
    if header is None:
        header = header_estimate(jpeg_path, *image.shape[:2])
    predicted, strength = restorer.predict_qf_and_strength(image)
    return decide_on(image, predicted, strength, header=header, dominant=dominant_evidence(image),
                     **model_rules(restorer, image))


def choose_qf(
    restorer: Restorer,
    image: np.ndarray,
    *,
    jpeg_path: str | os.PathLike[str] | None = None,
    header: QFEstimate | int | None = None,
) -> QFEstimate:
    """:func:`decide_qf` as the :class:`QFEstimate` front ends report (``predicted`` always filled in)."""
    return decide_qf(restorer, image, jpeg_path=jpeg_path, header=header).estimate()


def restore_at(restorer: Restorer, image: np.ndarray, chosen: QFEstimate, *, progress=None) -> RestoreResult:
    """Carry out a decision: restore at ``chosen.value``, or return a copy when it says ``clean``.

    The one place the ``clean`` decision is carried out, so every front end leaves a
    never-compressed image exactly as it was (even at QF 100 the network moves a clean photo's
    saturated colours by more than a 40 dB PSNR allows).
    """
    if chosen.source == "clean":
        if progress is not None:
            progress(1, 1)
        return RestoreResult(np.array(image, copy=True), chosen)
    result = restorer.restore(image, chosen.value, progress=progress)
    result.qf = chosen
    return result


def restore_auto(
    restorer: Restorer,
    image: np.ndarray,
    *,
    jpeg_path: str | os.PathLike[str] | None = None,
    header: QFEstimate | int | None = None,
    progress=None,
) -> RestoreResult:
    """``auto`` end to end: :func:`choose_qf`, then :func:`restore_at`."""
    return restore_at(restorer, image, choose_qf(restorer, image, jpeg_path=jpeg_path, header=header), progress=progress)
