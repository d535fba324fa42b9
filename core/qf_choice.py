"""The ``auto`` QF: one rule that weighs every piece of evidence, used by every front end.

Three witnesses can say how damaged an image is, and each is wrong in its own way:

* the **header** of the JPEG file the pixels came from is exact about the *last* save, and
  blind to everything before it (a photo compressed hard, resized and saved again at QF 90
  says 90);
* **FBCNN-D** (:func:`~fbcnn_plugins.core.qf_estimation.dominant_quality`) finds a past
  compression whose 8x8 grid is still in the pixels, also one the header hides (a crop or
  shift between two saves), but on few blocks the texture of a clean image can pass for a
  grid: its ``depth`` (how far the grid's error at its QF sits below the other grids') and
  the image size say how far to trust it;
* the **network's prediction** sees the damage itself, whatever made it, but only as one
  smooth guess that lands between the qualities of a chain.

The rule, in order (the thresholds below were set on the training images and on generated
degradation chains, never on the validation images the benchmark reports):

1. A trusted FBCNN-D grid clearly below the header QF: a stronger, earlier compression
   the last save did not erase; undo it (``dominant``).
2. Else the header, else a trusted FBCNN-D grid (``header`` / ``dominant``); a header of a
   file with full-resolution colour (4:4:4) is mapped to the somewhat higher strength such
   files call for (:data:`FULL_CHROMA_STRENGTH`) ...
3. ... unless the network sees far heavier damage than a high last save: an earlier
   compression whose grid a resize or edit removed; then the network's strength estimate (the
   bundled colour model's strength head, fitted to the control that restores such chains best),
   or, for models without one, the QF prediction pushed further down by how far it sits below
   the last save (``predicted``).
4. No header and no trusted grid: if the image's strong edges sit between exactly flat
   colours (drawn content: a screenshot, UI, line art; see
   :mod:`~fbcnn_plugins.core.drawn_content`), or the network sees little damage (on images
   too small for FBCNN-D: unless it sees heavy damage), the image was most likely never
   compressed (a PNG, an icon, a thumbnail) and is left as it was (``clean``, see
   :func:`restore_auto`); else the network's strength estimate (its QF prediction for models
   without a strength head).

:func:`decide_qf` returns the decision with its evidence and a sentence saying why;
:func:`choose_qf` is the same as a :class:`~fbcnn_plugins.core.quality.QFEstimate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .drawn_content import EdgeEvidence, exact_edge_share
from .qf_estimation import NEAR_QF, DominantQF, dominant_quality, header_quality
from .quality import QF_MAX, QFEstimate, clamp_qf
from .pixels import plain_array
from .restorer import RestoreResult, Restorer

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
#: 0.10 and 0.74); 15 balances the two.  The price: a single JPEG whose content the strength head
#: misreads by more than that is restored too strongly (scikit-image's astronaut saved at QF 90
#: reads 65 and loses 1 dB against the header's QF).
STRENGTH_MARGIN = 15.0
#: Models without a strength head (the gray model, third-party weights) fall back on the QF
#: prediction: rule 3 then applies when it sits this many QF steps under the last save, but not more
#: than :data:`HEAVIER_DAMAGE_MAX_GAP`.  On 128-px training crops (12 images) a single JPEG at QF 80,
#: 90 or 95 left the prediction at most 1.8 under the header, while a JPEG at QF 10-20 resized by
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
    """The header QF of ``path`` when it is a JPEG of this size written with standard tables."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with Image.open(path) as image:
            if image.format not in ("JPEG", "MPO") or image.size not in ((width, height), (height, width)):
                return None
        found = header_quality(path)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if found is None or not found.exact:
        return None
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
) -> QFDecision:
    """The ``auto`` rule (see the module docstring) on evidence already gathered."""
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
        reason = f"the pixels carry {kind} 8x8 grid at QF {grid} ({depth}, shift {trusted.shift})"
    else:
        base = None
    if base is not None:
        heavier = heavier_damage(base, basis, predicted, strength, height, width)
        if heavier is not None:
            qf, reason = heavier
            return QFDecision(qf, "predicted", reason, **facts)
        if source == "header" and header_chroma == "4:4:4":
            mapped = header_strength_full_chroma(base)
            reason += (f"; the file keeps full-resolution colour (4:4:4), which QF {base} damages less than "
                       f"the 4:2:0 files the network learnt from, so QF {mapped}")
            base = mapped
        return QFDecision(base, source, reason, **facts)
    why_not_grid = ("the image is too small for FBCNN-D" if dominant is None else
                    "FBCNN-D finds no JPEG grid" if dominant.quality is None else
                    f"FBCNN-D's grid (QF {dominant.quality}, depth {dominant.depth or 0:.2f}) is too shallow "
                    f"to be told from texture at {width}x{height}")
    if edges is not None and edges.drawn:
        return QFDecision(CLEAN_QF, "clean", (
            f"no JPEG header, {why_not_grid}, and {edges.share:.0%} of the pixel pairs around its strong "
            f"edges are exactly equal, which no JPEG decoder leaves: drawn content (a screenshot, line art) "
            f"never compressed, left as it is"), **facts)
    if min(height, width) < MIN_DOMINANT_SIDE:
        if predicted >= TINY_CLEAN_PREDICTION:
            return QFDecision(CLEAN_QF, "clean", (
                f"no JPEG header and {why_not_grid}; at {width}x{height} the network's prediction "
                f"(QF {predicted:.1f}) cannot tell mild compression from none and is not low enough to "
                f"justify smearing: treated as never compressed and left as it is"), **facts)
    elif predicted >= CLEAN_PREDICTION:
        return QFDecision(CLEAN_QF, "clean", (
            f"no JPEG header, {why_not_grid}, and the network sees little damage (QF {predicted:.1f}): "
            f"treated as never compressed and left as it is"), **facts)
    if strength is not None:
        return QFDecision(clamp_qf(strength), "predicted", (
            f"no JPEG header and {why_not_grid}: the network's strength estimate (its QF estimate: "
            f"{predicted:.1f})"), **facts)
    return QFDecision(clamp_qf(predicted), "predicted",
                      f"no JPEG header and {why_not_grid}: the network's prediction", **facts)


def heavier_damage(base: int, basis: str, predicted: float, strength: float | None,
                   height: int, width: int) -> tuple[int, str] | None:
    """Rule 3: the QF and reason when the network sees far heavier damage than a high last save, else None."""
    if base < HIGH_LAST_SAVE or min(height, width) < HEAVIER_DAMAGE_MIN_SIDE:
        return None
    if strength is not None:
        if base - strength < STRENGTH_MARGIN:
            return None
        return clamp_qf(strength), (
            f"the network sees far heavier damage (strength QF {strength:.1f}) than {basis}: a high last "
            f"save over an earlier compression whose grid is gone (resized or edited)")
    gap = base - predicted
    if not HEAVIER_DAMAGE_MARGIN <= gap <= HEAVIER_DAMAGE_MAX_GAP:
        return None
    return clamp_qf(max(EXTRAPOLATION_FLOOR, predicted - EXTRAPOLATION * gap)), (
        f"the network sees heavier damage (QF {predicted:.1f}) than {basis}: a high last save over an "
        f"earlier compression whose grid is gone (resized or edited), so the QF goes {EXTRAPOLATION:g}x the "
        f"gap below the prediction")


def header_strength_full_chroma(quality: int) -> int:
    """The QF to restore a 4:4:4 JPEG saved at ``quality`` with (see :data:`FULL_CHROMA_STRENGTH`)."""
    qualities, strengths = zip(*FULL_CHROMA_STRENGTH)
    return clamp_qf(float(np.interp(quality, qualities, strengths)))


def decide_on(
    image: np.ndarray,
    predicted: float,
    strength: float | None,
    *,
    header: QFEstimate | int | None = None,
    dominant: DominantQF | None = None,
) -> QFDecision:
    """:func:`decide` on the network's estimates already made, with the evidence the pixels and the
    header carry filled in: FBCNN-D only where the image is large enough for it, the exact edges,
    the header's chroma subsampling.  ``fbcnn qf`` calls this with the estimates it reports."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_DOMINANT_SIDE:
        dominant = None
    return decide(predicted, height, width,
                  header=header.value if isinstance(header, QFEstimate) else header,
                  header_chroma=header.chroma if isinstance(header, QFEstimate) else None,
                  dominant=dominant, edges=exact_edge_share(eight_bit_color(image)), strength=strength)


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
    return decide_on(image, predicted, strength, header=header, dominant=dominant_evidence(image))


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
