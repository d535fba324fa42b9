"""Estimating the JPEG quality factor without the network: from the file header, and from pixels.

* :func:`header_quality` reads the quantisation tables of a JPEG file and
  finds the IJG quality whose scaled standard tables match them; exact for
  libjpeg-family encoders (Pillow, OpenCV, most cameras' software paths).
* :func:`dominant_quality` is the paper's FBCNN-D estimator (section 3.3),
  built here from its description: for every grid shift (i, j) in 0..7 and
  every QF in 1..100, the error of re-compressing the image; the first local
  minimum of each shift's error curve marks a QF the image was compressed
  with, on that grid.  For a non-aligned double JPEG the stronger, earlier
  compression shows up on the shifted grid, which is the QF to undo.

Re-encoding 6,400 times would take minutes; instead the 8x8 block DCTs are
computed once per shift and quantised against all 100 tables at once.  In an
orthonormal DCT the quantisation error equals the pixel error, so the current
grid's curve matches a real re-encoding up to libjpeg's pixel rounding and
clipping; the shifted grids, compared only with each other, use their lowest
frequencies alone.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin

#: The IJG (libjpeg) standard tables, Annex K of the JPEG standard, natural (row-major) order.
LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)
CHROMA_TABLE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
], dtype=np.float64)
QUALITIES = np.arange(1, 101)

#: The paper's threshold on the MSE at a first local minimum (8-bit scale).
MSE_THRESHOLD = 30.0
#: A grid counts as compressed before when its curve dips under this share of the typical shifted grid's.
RELATIVE_CEILING = 0.9
#: The current grid's dip must be this much (relative) below the curve just after it: a real past
#: compression on the current grid gives a deep notch, texture only shallow wiggles.  Chosen on
#: ../shared/data/val, where every value from 0.1 to 0.3 gave the same (perfect) accuracy.
CURRENT_GRID_PROMINENCE = 0.2
#: Dips within this many QF steps of the smallest one compete on depth.
NEAR_QF = 3
#: Pixels on each side of the central crop used by the pixel estimator.
DEFAULT_CROP = 256
#: Shifted grids are compared with each other on their lowest-frequency coefficients only (zigzag order).
#: On ../shared/data/val every count from 15 to 64 gave the same accuracy (10 lost 3 % at QF 40 and 60);
#: 21 keeps a margin and makes the 63 shifted grids three times cheaper.
SHIFTED_GRID_COEFFICIENTS = 21
#: JPEG's zigzag scan: natural (row-major) index of the n-th coefficient from low to high frequency.
ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
    7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
    39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
])


def ijg_tables(base: np.ndarray) -> np.ndarray:
    """The 100 tables libjpeg writes for qualities 1..100 (baseline: entries clipped to 1..255)."""
    scale = np.where(QUALITIES < 50, 5000 // QUALITIES, 200 - 2 * QUALITIES)[:, None]
    return np.clip((base[None, :] * scale + 50) // 100, 1, 255)


@lru_cache(maxsize=1)
def _all_tables() -> tuple[np.ndarray, np.ndarray]:
    return ijg_tables(LUMA_TABLE), ijg_tables(CHROMA_TABLE)


@dataclass
class HeaderQF:
    """The quality a JPEG file's tables correspond to."""

    quality: int
    exact: bool  # True when the tables are exactly libjpeg's for that quality
    error: float  # mean absolute difference per table entry to the closest IJG tables
    custom_tables: bool  # the encoder used its own tables; ``quality`` is only the closest match
    progressive: bool = False
    chroma: str | None = None  # "4:2:0", "4:2:2" or "4:4:4" for colour files; None for gray or unusual ones


#: Pillow's sampling codes (``JpegImagePlugin.get_sampling``) as the usual names.
CHROMA_SAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def header_quality(path: str | os.PathLike[str]) -> HeaderQF | None:
    """The IJG quality matching a JPEG file's quantisation tables, or None for non-JPEG files."""
    with Image.open(path) as image:
        if image.format not in ("JPEG", "MPO"):  # MPO: a camera JPEG with more images after it
            return None
        tables = {k: np.asarray(v, dtype=np.float64) for k, v in getattr(image, "quantization", {}).items()}
        progressive = bool(image.info.get("progressive") or image.info.get("progression"))
        chroma = CHROMA_SAMPLING.get(JpegImagePlugin.get_sampling(image)) if image.mode != "L" else None
    if 0 not in tables:
        return None
    return replace(quality_from_tables(tables, progressive), chroma=chroma)


def quality_from_tables(tables: dict[int, np.ndarray], progressive: bool = False) -> HeaderQF:
    """The IJG quality closest to quantisation tables (0: luma, 1: chroma), natural order."""
    tables = {k: np.asarray(v, dtype=np.float64).reshape(64) for k, v in tables.items()}
    luma, chroma = _all_tables()
    error = np.abs(luma - tables[0][None, :]).sum(axis=1)
    entries = 64
    if 1 in tables:
        error = error + np.abs(chroma - tables[1][None, :]).sum(axis=1)
        entries = 128
    # Ties (qualities whose tables coincide after clipping) resolve to the lowest quality.
    best = int(np.argmin(error))
    mean_error = float(error[best] / entries)
    return HeaderQF(int(QUALITIES[best]), mean_error == 0.0, mean_error, mean_error > 0.0, progressive)


def _dct_matrix() -> np.ndarray:
    k = np.arange(8)[:, None]
    n = np.arange(8)[None, :]
    matrix = np.sqrt(2 / 8) * np.cos(np.pi * (2 * n + 1) * k / 16)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix()


def block_dct(plane: np.ndarray) -> np.ndarray:
    """Orthonormal 8x8 DCT of every whole block of ``plane``, level-shifted as JPEG does: (blocks, 64)."""
    height, width = plane.shape[0] // 8 * 8, plane.shape[1] // 8 * 8
    blocks = plane[:height, :width].astype(np.float32) - 128.0
    blocks = blocks.reshape(height // 8, 8, width // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    dct = _DCT.astype(np.float32)
    return (dct @ blocks @ dct.T).reshape(-1, 64)


@dataclass(frozen=True)
class _StepPairs:
    """The distinct (coefficient, step) pairs of the 100 tables over some coefficients.

    Neighbouring qualities share many steps (the 21 lowest frequencies have
    1,181 distinct ones in 2,100 entries), so each pair's error is computed
    once and the 100 curves gathered from them.
    """

    columns: np.ndarray  # per pair: which of the chosen coefficients it quantises
    steps: np.ndarray  # per pair: the quantiser step, float32
    per_quality: np.ndarray  # (100, coefficients): the pair each table entry uses


@lru_cache(maxsize=8)
def _step_pairs(coefficients: tuple[int, ...]) -> _StepPairs:
    tables = _all_tables()[0][:, list(coefficients)]
    columns, steps, per_quality = [], [], np.empty(tables.shape, dtype=np.intp)
    for column in range(tables.shape[1]):
        distinct, which = np.unique(tables[:, column], return_inverse=True)
        per_quality[:, column] = len(steps) + which
        columns += [column] * len(distinct)
        steps += list(distinct)
    return _StepPairs(np.array(columns), np.array(steps, dtype=np.float32), per_quality)


#: Pairs handled per pass: keeps the working buffer in cache.
PAIR_CHUNK = 256


def recompression_mse(coefficients: np.ndarray, natural_indices: tuple[int, ...] = tuple(range(64))) -> np.ndarray:
    """MSE (8-bit scale) of quantising DCT blocks with each of the 100 luma tables: shape (100,).

    ``coefficients`` is (blocks, 64) from :func:`block_dct`; with a subset of
    ``natural_indices`` the result is the mean error over those coefficients.
    """
    pairs = _step_pairs(tuple(natural_indices))
    by_coefficient = np.ascontiguousarray(coefficients[:, list(natural_indices)].T, dtype=np.float32)
    inverse = 1.0 / pairs.steps
    errors = np.empty(len(pairs.steps), dtype=np.float64)
    for start in range(0, len(pairs.steps), PAIR_CHUNK):
        part = slice(start, start + PAIR_CHUNK)
        values = by_coefficient[pairs.columns[part]]
        requantised = values * inverse[part, None]
        np.rint(requantised, out=requantised)
        requantised *= pairs.steps[part, None]
        np.subtract(values, requantised, out=requantised)  # the re-quantisation error
        np.square(requantised, out=requantised)
        errors[part] = requantised.sum(axis=1)
    return errors[pairs.per_quality].sum(axis=1) / by_coefficient.size


def first_local_minimum(
    curve: np.ndarray, prominence: float = 0.03, reach: int = 3, ceiling: float = np.inf
) -> int | None:
    """Index of the first interior dip of ``curve`` below ``ceiling``, or None.

    A dip is lower than the point before it, not higher than the point after
    it, and at least ``prominence`` (relative) below the highest of the next
    ``reach`` points; that skips the flat wiggles of a curve that is only
    drifting, and takes the first point of a plateau.
    """
    for index in range(1, len(curve) - 1):
        value = curve[index]
        if value < ceiling and value < curve[index - 1] and value <= curve[index + 1]:
            if value < (1.0 - prominence) * curve[index + 1 : index + 1 + reach].max():
                return index
    return None


def deepest_relative_dip(ratio: np.ndarray, ceiling: float = RELATIVE_CEILING) -> int | None:
    """Index of the lowest interior point of a grid's ratio curve, if it is a dip under ``ceiling``."""
    index = int(np.argmin(ratio[1:-1])) + 1
    if ratio[index] < ceiling and ratio[index] < ratio[index - 1] and ratio[index] <= ratio[index + 1]:
        return index
    return None


@dataclass
class DominantQF:
    """The FBCNN-D estimate: the QF to undo, the grid it sits on, and the evidence."""

    quality: int | None
    shift: tuple[int, int] | None
    double_compressed: bool
    mse: float | None
    #: How far the chosen grid's error at its QF sits below the typical shifted grid's (0: not at all,
    #: 1: no error left), on the same low frequencies: a real past compression leaves next to no error
    #: at its own QF, while an image's texture puts every grid at about the same error.  None when the
    #: curves to compare were not computed.
    depth: float | None = None
    curves: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    minima: dict[tuple[int, int], tuple[int, float]] = field(default_factory=dict, repr=False)
    #: The median shifted grid's curve, and the current grid's on the same low frequencies.
    typical: np.ndarray | None = field(default=None, repr=False)
    current_low: np.ndarray | None = field(default=None, repr=False)

    def depth_at(self, shift: tuple[int, int], quality: int) -> float | None:
        """The ``depth`` (see above) a dip of grid ``shift`` at ``quality`` would have."""
        curve = self.current_low if shift == (0, 0) else self.curves.get(shift)
        if self.typical is None or curve is None:
            return None
        index = quality - 1
        return float(np.clip(1.0 - curve[index] / max(float(self.typical[index]), 1e-9), 0.0, 1.0))


def luma_plane(image: np.ndarray) -> np.ndarray:
    """The 8-bit plane the estimator reads: the image itself if gray, else JPEG's full-range Y (alpha ignored)."""
    if image.ndim == 3 and image.shape[2] in (1, 2):  # gray, or gray+alpha
        image = image[:, :, 0]
    if image.ndim == 2:
        return image.astype(np.float32)
    rgb = image[:, :, :3].astype(np.float32)
    return 0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2]


def dominant_quality(
    image: np.ndarray,
    *,
    crop: int | None = DEFAULT_CROP,
    threshold: float = MSE_THRESHOLD,
    workers: int | None = None,
) -> DominantQF:
    """FBCNN-D: the dominant (stronger) QF of a single or double compressed 8-bit image.

    ``crop`` limits the work to a central square of that size (plus the 7
    pixels the shifts need), enough blocks for a stable curve at a fraction
    of the cost; ``None`` uses the whole image.  (A smaller crop for the 63
    shifted grids was tried: on ../shared/data/val a 128 crop made single
    JPEGs at QF 50-90 look double compressed in 5-11% of images.)  The 63
    shifted grids are only ever compared with each other, so their curves use
    the ``SHIFTED_GRID_COEFFICIENTS`` lowest frequencies, where a past
    quantisation leaves its clearest mark.  Shifts run on ``workers`` threads (numpy releases the GIL), by default one per core.
    """
    plane = luma_plane(np.asarray(image))
    if plane.shape[0] < 24 or plane.shape[1] < 24:
        raise ValueError(f"image of {plane.shape[1]}x{plane.shape[0]} is too small to estimate a QF (needs 24x24)")
    plane = _central_square(plane, crop)
    shifts = [(i, j) for i in range(8) for j in range(8)]

    low = tuple(int(index) for index in ZIGZAG[:SHIFTED_GRID_COEFFICIENTS])

    current_low: list[np.ndarray] = []

    def curve(shift: tuple[int, int]) -> np.ndarray:
        coefficients = block_dct(plane[shift[0] :, shift[1] :])
        if shift == (0, 0):  # the paper's pixel MSE: its threshold of 30 applies to this grid
            current_low.append(recompression_mse(coefficients, low))
            return recompression_mse(coefficients)
        return recompression_mse(coefficients, low)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        curves = dict(zip(shifts, pool.map(curve, shifts)))
    return select_dominant(curves, threshold, current_low=current_low[0])


def _central_square(plane: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size`` square plus the 8 pixels the shifts need, starting on the 8x8 grid."""
    if size is None:
        return plane
    size += 8
    top = max(0, (plane.shape[0] - size) // 2) // 8 * 8
    left = max(0, (plane.shape[1] - size) // 2) // 8 * 8
    return plane[top : top + size, left : left + size]


def select_dominant(
    curves: dict[tuple[int, int], np.ndarray],
    threshold: float = MSE_THRESHOLD,
    *,
    current_low: np.ndarray | None = None,
) -> DominantQF:
    """Decide from per-shift MSE curves (QF 1..100) which QF to undo, and on which grid.

    The paper takes each shift's first dip in the raw MSE and trusts it when
    that MSE is under ``threshold`` (30).  Two things break that on real
    photos: textured images keep a real dip above 30, and a later, weaker
    compression on another grid adds wiggles that pass for dips.  So the
    current grid keeps the paper's rule but needs a clear notch
    (``CURRENT_GRID_PROMINENCE``), and each shifted grid is read *relative to
    the median shifted grid*: a grid compressed before runs below the others
    (ratio under ``RELATIVE_CEILING``) and is lowest at its QF, while texture
    and wiggles that every grid shares cancel out, so its deepest point (not
    its first wiggle) is the QF.  Among the dips found, the smallest QF is the
    dominant, stronger compression.  Without any, the paper's raw rule decides.

    ``current_low`` is the current grid's curve on the shifted grids' low frequencies; with it the
    result's ``depth`` says how sure the estimate is (see :class:`DominantQF`).
    """
    others = [curve for shift, curve in curves.items() if shift != (0, 0)]
    typical = np.median(np.stack(others), axis=0) if others else None
    minima: dict[tuple[int, int], tuple[int, float]] = {}
    if typical is not None:
        for shift, curve in curves.items():
            if shift == (0, 0):  # the current grid: its own raw dip, as in the paper
                index = first_local_minimum(curve, prominence=CURRENT_GRID_PROMINENCE, ceiling=threshold)
            else:
                index = deepest_relative_dip(curve / np.maximum(typical, 1e-9))
            if index is not None:
                minima[shift] = (int(QUALITIES[index]), float(curve[index]))
    if minima:
        # Grids one pixel off the true one dip at nearly the same QF; the deepest of them is the true one.
        lowest = min(quality for quality, _ in minima.values())
        near = {s: m for s, m in minima.items() if m[0] <= lowest + NEAR_QF}
        shift, (quality, mse) = min(near.items(), key=lambda item: item[1][1])
    else:
        for shift, curve in curves.items():
            index = first_local_minimum(curve)
            if index is not None:
                minima[shift] = (int(QUALITIES[index]), float(curve[index]))
        if not minima:
            return DominantQF(None, None, False, None, None, curves, minima, typical, current_low)
        below = {s: m for s, m in minima.items() if m[1] < threshold}
        pool = below or minima
        key = (lambda item: (item[1][0], item[1][1])) if below else (lambda item: item[1][1])
        shift, (quality, mse) = min(pool.items(), key=key)
    double = shift != (0, 0) and (0, 0) in minima and minima[(0, 0)][0] != quality
    found = DominantQF(quality, shift, double, mse, None, curves, minima, typical, current_low)
    found.depth = found.depth_at(shift, quality)
    return found


def brute_force_curve(plane: np.ndarray, shift: tuple[int, int], encode) -> np.ndarray:
    """Reference curve by real re-encoding (``encode(uint8 plane, q) -> plane``): slow, for tests."""
    part = np.ascontiguousarray(plane[shift[0] :, shift[1] :])
    part = part[: part.shape[0] // 8 * 8, : part.shape[1] // 8 * 8]
    reference = part.astype(np.float64)
    return np.array([np.mean((reference - encode(part, int(q)).astype(np.float64)) ** 2) for q in QUALITIES])


def file_quality_report(path: str | os.PathLike[str]) -> dict:
    """Header and pixel estimates for a file, as plain data (for the CLI)."""
    path = Path(path)
    header = header_quality(path)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    dominant = dominant_quality(pixels)
    return {
        "header": None if header is None else header.__dict__,
        "dominant": {"quality": dominant.quality, "shift": dominant.shift,
                     "double_compressed": dominant.double_compressed, "mse": dominant.mse},
    }
