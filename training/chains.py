"""Realistic degradation chains and how well each QF policy restores them.

Photos people restore were rarely saved once: they are re-saved web JPEGs, resized and
saved again, cropped, PNG screenshots of JPEGs, or never compressed at all.  Each
:class:`Chain` turns a clean image into one such input plus the reference it should be
restored towards (for a resize, the clean image resized the same way).  :func:`run_chain`
restores every image of a chain at the QF each policy picks (``auto``, the network's
``predicted`` QF and its strength estimate, FBCNN-D's ``dominant``, and the plain trust order header > FBCNN-D > network)
and at a grid of fixed QFs, whose best (by the mean over the images) is the oracle.

Used by ``benchmarks/bench_chains.py`` and, on a few small images, by the tests.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.qf_choice import decide_qf
from fbcnn_plugins.core.quality import clamp_qf
from fbcnn_plugins.core.restorer import Restorer

#: The fixed QFs tried first for the oracle; the best is then refined between its neighbours.
COARSE_GRID = (5, 10, 20, 30, 50, 70, 90, 100)
#: Never-compressed inputs: the oracle is the gentlest strengths.
CLEAN_GRID = (90, 95, 100)
#: The key under which an outcome keeps the PSNR of the input left as it is.
UNCHANGED = 0


@dataclass
class Degraded:
    pixels: np.ndarray  # what the user has (8-bit RGB)
    reference: np.ndarray  # what restoring it should come close to
    jpeg: bytes | None = None  # the file, when the last step saved a JPEG


@dataclass(frozen=True)
class Chain:
    name: str
    make: Callable[[np.ndarray, int], Degraded]  # (clean image, output side) -> input
    clean: bool = False  # never compressed: judged by PSNR against itself (>= 40 dB wanted)


def encode(image: np.ndarray, quality: int, subsampling: int = 2, **options) -> bytes:
    """A JPEG through Pillow's libjpeg (``subsampling`` 2 = 4:2:0, 1 = 4:2:2, 0 = 4:4:4; an HxW array
    is saved as a one-component gray JPEG).  ``options`` go to Pillow (``progressive``, ``qtables``)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=subsampling, **options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """The decoded pixels: HxW for a gray JPEG, HxWx3 otherwise."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L" if image.mode == "L" else "RGB"))


def jpeg(image: np.ndarray, quality: int, subsampling: int = 2) -> np.ndarray:
    return decode(encode(image, quality, subsampling))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize, as most image editors and web services do it."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def centre(image: np.ndarray, height: int, width: int, grid: int = 8) -> np.ndarray:
    """The central ``height`` x ``width`` crop, starting on the 8x8 grid (the whole image if smaller)."""
    top = max(0, (image.shape[0] - height) // 2) // grid * grid
    left = max(0, (image.shape[1] - width) // 2) // grid * grid
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def single(quality: int, subsampling: int = 2, **options) -> Callable[[np.ndarray, int], Degraded]:
    """One save (``options``: Pillow's ``progressive=True``, ``qtables=...``)."""
    def make(clean: np.ndarray, side: int) -> Degraded:
        crop = centre(clean, side, side)
        data = encode(crop, quality, subsampling, **options)
        return Degraded(decode(data), crop, data)
    return make


def standard_tables(quality: int, gray: bool = False) -> list[list[int]]:
    """libjpeg's tables at ``quality`` (luma, and chroma for colour), natural order, as Pillow writes them."""
    image = np.zeros((8, 8) if gray else (8, 8, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(encode(image, quality))) as decoded:
        return [list(decoded.quantization[index]) for index in sorted(decoded.quantization)]


def tilted_tables(quality: int, gray: bool = False) -> list[list[int]]:
    """Non-standard tables in the way many cameras and editors write them: libjpeg's at ``quality``,
    coarser at low frequencies and finer at high ones (x1.25 at DC down to x0.75 at the corner)."""
    rows, cols = np.divmod(np.arange(64), 8)
    tilt = 1.25 - 0.5 * (rows + cols) / 14.0
    return [np.clip(np.rint(np.asarray(table) * tilt), 1, 255).astype(int).tolist()
            for table in standard_tables(quality, gray)]


def custom_tables(quality: int, subsampling: int = 2) -> Callable[[np.ndarray, int], Degraded]:
    """One save with :func:`tilted_tables` (the header then matches no standard quality exactly)."""
    def make(clean: np.ndarray, side: int) -> Degraded:
        return single(quality, subsampling, qtables=tilted_tables(quality, clean.ndim == 2))(clean, side)
    return make


def sharpen(image: np.ndarray, percent: int) -> np.ndarray:
    """An unsharp mask (radius 1.5 px), as cameras and photo apps apply before saving."""
    return np.asarray(Image.fromarray(image).filter(ImageFilter.UnsharpMask(radius=1.5, percent=percent, threshold=2)))


def sharpened(quality: int, percent: int = 80, subsampling: int = 2, custom: bool = False,
              ) -> Callable[[np.ndarray, int], Degraded]:
    """Sharpen, then one save (with :func:`tilted_tables` when ``custom``).  The sharpened image is the
    reference: restoring should remove the JPEG's damage, not the sharpening someone wanted."""
    def make(clean: np.ndarray, side: int) -> Degraded:
        crop = sharpen(centre(clean, side, side), percent)
        options = {"qtables": tilted_tables(quality, crop.ndim == 2)} if custom else {}
        data = encode(crop, quality, subsampling, **options)
        return Degraded(decode(data), crop, data)
    return make


def camera_like(quality: int = 93) -> Callable[[np.ndarray, int], Degraded]:
    """A phone or camera JPEG: mild sharpening, 4:2:2, non-standard tables near ``quality``."""
    return sharpened(quality, percent=50, subsampling=1, custom=True)


def png_of_jpeg(quality: int) -> Callable[[np.ndarray, int], Degraded]:
    def make(clean: np.ndarray, side: int) -> Degraded:
        crop = centre(clean, side, side)
        return Degraded(jpeg(crop, quality), crop)
    return make


def double(first: int, second: int, shift: tuple[int, int]) -> Callable[[np.ndarray, int], Degraded]:
    """JPEG, drop ``shift`` rows/columns (a crop off the 8x8 grid when non-zero), JPEG again."""
    def make(clean: np.ndarray, side: int) -> Degraded:
        crop = centre(clean, side + 8, side + 8)
        rows, cols = shift
        once = jpeg(crop, first)[rows : rows + side, cols : cols + side]
        data = encode(np.ascontiguousarray(once), second)
        return Degraded(decode(data), np.ascontiguousarray(crop[rows : rows + side, cols : cols + side]), data)
    return make


def rescaled(first: int, scale: float, second: int) -> Callable[[np.ndarray, int], Degraded]:
    """JPEG, resize by ``scale``, JPEG again; the reference is the clean image resized the same way."""
    def make(clean: np.ndarray, side: int) -> Degraded:
        source_side = int(round(side / scale))
        crop = centre(clean, source_side, source_side)
        size = int(round(crop.shape[0] * scale)), int(round(crop.shape[1] * scale))
        reference = resize(crop, *size)
        damaged = resize(jpeg(crop, first), *size)
        reference, damaged = centre(reference, side, side), centre(damaged, side, side)
        data = encode(damaged, second)
        return Degraded(decode(data), reference, data)
    return make


def untouched(side: int | tuple[int, int] | None) -> Callable[[np.ndarray, int], Degraded]:
    """A never-compressed image: the whole image (None) or a central crop of this size."""
    def make(clean: np.ndarray, _: int) -> Degraded:
        if side is None:
            crop = clean
        else:
            height, width = (side, side) if isinstance(side, int) else side
            crop = centre(clean, height, width)
        return Degraded(crop, crop)
    return make


def photo_chains(full_size: bool = True, gray: bool = False) -> list[Chain]:
    """The chains every photo goes through (for gray photos without the colour-subsampling variants)."""
    if gray:
        chains = [Chain(f"JPEG {q}", single(q)) for q in (10, 30, 50, 90)]
    else:
        chains = [Chain(f"JPEG {q} (4:2:0)", single(q)) for q in (10, 30, 50, 90)]
        chains += [Chain(f"JPEG {q} (4:4:4)", single(q, 0)) for q in (20, 70)]
        chains += [Chain(f"JPEG {q} (4:2:2)", single(q, 1)) for q in (40, 85)]
    chains += [Chain(f"JPEG {q} progressive", single(q, progressive=True)) for q in (30, 80)]
    chains += [Chain(f"custom tables near JPEG {q}", custom_tables(q)) for q in (50, 78)]
    chains += [Chain("sharpen -> JPEG 92", sharpened(92)), Chain("camera-like (sharpened, custom tables near 93"
                                                                  + ("" if gray else ", 4:2:2") + ")", camera_like(93))]
    chains += [Chain("PNG of JPEG 20", png_of_jpeg(20)), Chain("PNG of JPEG 60", png_of_jpeg(60))]
    chains += [Chain("JPEG 15 -> JPEG 90, aligned", double(15, 90, (0, 0)))]
    chains += [Chain(f"JPEG 15 -> shift (3,5) -> JPEG {q}", double(15, q, (3, 5))) for q in (85, 90, 95)]
    chains += [Chain("JPEG 25 -> crop (13,6) -> JPEG 80", double(25, 80, (13 % 8, 6)))]
    chains += [Chain(f"JPEG {a} -> {s}x -> JPEG {b}", rescaled(a, s, b))
               for a, s, b in ((15, 0.75, 90), (30, 0.5, 85), (20, 0.9, 95), (10, 0.6, 80))]
    chains += [Chain(f"JPEG {a} -> {s}x -> JPEG {b}", rescaled(a, s, b)) for a, s, b in ((10, 1.5, 95), (30, 2.0, 90))]
    if full_size:
        chains.append(Chain("never compressed, full size", untouched(None), clean=True))
    chains += [Chain(f"never compressed, {s}x{s}", untouched(s), clean=True) for s in (16, 24, 32, 48, 64, 96, 128)]
    chains.append(Chain("never compressed, 80x64", untouched((64, 80)), clean=True))
    chains += [Chain(f"never compressed, {w}x{h}", untouched((h, w)), clean=True) for h, w in ((1, 400), (12, 400))]
    return chains


def screenshot(height: int = 256, width: int = 256) -> np.ndarray:
    """A screenshot-like image: flat colour panels, thin lines, buttons and text."""
    image = Image.new("RGB", (width, height), (246, 246, 248))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle([0, 0, width, 22], fill=(45, 52, 64))
    draw.text((6, 5), "fbcnn - Preferences", fill=(235, 235, 235), font=font)
    for row in range(6):
        top = 34 + row * 34
        draw.text((10, top + 4), f"Option {row + 1}: value {row * 17 % 50}", fill=(20, 20, 20), font=font)
        draw.rectangle([width - 70, top, width - 12, top + 20], fill=(52, 120, 246) if row % 2 else (220, 53, 69),
                       outline=(30, 30, 30))
        draw.text((width - 62, top + 4), "Apply", fill=(255, 255, 255), font=font)
        draw.line([8, top + 28, width - 8, top + 28], fill=(200, 200, 205))
    return np.asarray(image)


def screenshot_chains() -> list[Chain]:
    return [Chain("screenshot, never compressed", untouched(None), clean=True),
            Chain("screenshot, JPEG 75", single(75)), Chain("screenshot, PNG of JPEG 40", png_of_jpeg(40))]


@dataclass
class Outcome:
    """One image through one chain: the evidence, the choices, and PSNR at every QF tried."""

    psnr_in: float
    auto: int
    auto_source: str
    predicted: float
    dominant: int | None
    header: int | None
    trust_order: int  # header, else FBCNN-D, else the network: the plain order of trust
    psnr_at: dict[int, float] = field(default_factory=dict)  # key UNCHANGED: the input as it is
    strength: float | None = None  # the strength head's estimate (models that have one)

    @property
    def auto_used(self) -> int:
        """What ``restore_auto`` does: restore at ``auto``, or leave a clean-looking image unchanged."""
        return UNCHANGED if self.auto_source == "clean" else self.auto


def restored_psnr(restorer: Restorer, case: Degraded, qf: int) -> float:
    return psnr(case.reference, restorer.restore(case.pixels, qf).image)


def evaluate_image(restorer: Restorer, case: Degraded, grid: Sequence[int]) -> Outcome:
    """Decide ``auto`` for one input (through a real file when it is a JPEG) and restore at every QF needed."""
    path = None
    try:
        if case.jpeg is not None:
            handle, path = tempfile.mkstemp(suffix=".jpg")
            with os.fdopen(handle, "wb") as file:
                file.write(case.jpeg)
        decision = decide_qf(restorer, case.pixels, jpeg_path=path)
    finally:
        if path:
            os.unlink(path)
    dominant = decision.dominant if decision.dominant is not None else None
    trust = decision.header or dominant or clamp_qf(decision.predicted)
    outcome = Outcome(psnr(case.reference, case.pixels), decision.qf, decision.source, decision.predicted,
                      dominant, decision.header, trust, strength=decision.strength)
    strength = [] if decision.strength is None else [clamp_qf(decision.strength)]
    for qf in {*grid, decision.qf, clamp_qf(decision.predicted), trust, *strength, *([dominant] if dominant else [])}:
        outcome.psnr_at[qf] = restored_psnr(restorer, case, qf)
    outcome.psnr_at[UNCHANGED] = outcome.psnr_in
    return outcome


@dataclass
class ChainResult:
    chain: Chain
    outcomes: list[Outcome]
    cases: list[Degraded] = field(repr=False, default_factory=list)

    def mean_at(self, qf: int) -> float:
        return float(np.mean([o.psnr_at[qf] for o in self.outcomes]))

    def oracle(self) -> int:
        """The fixed QF with the best mean PSNR over this chain's images."""
        common = set.intersection(*(set(o.psnr_at) for o in self.outcomes)) - {UNCHANGED}
        return max(sorted(common), key=self.mean_at)

    def score(self, pick: Callable[[Outcome], int | None]) -> float | None:
        """Mean gain over the input (clean chains: worst PSNR against the input) of a per-image choice."""
        values = []
        for outcome in self.outcomes:
            qf = pick(outcome)
            if qf is None:
                return None
            values.append(outcome.psnr_at[qf] if self.chain.clean else outcome.psnr_at[qf] - outcome.psnr_in)
        return float(min(values) if self.chain.clean else np.mean(values))

    def oracle_score(self) -> float:
        qf = self.oracle()
        return self.score(lambda o: qf)


def run_chain(restorer: Restorer, chain: Chain, images: Sequence[np.ndarray], side: int,
              grid: Sequence[int] | None = None, refine: int = 2) -> ChainResult:
    """Every image through ``chain``; the oracle grid refined ``refine`` times around its best QF."""
    grid = sorted(set(grid or (CLEAN_GRID if chain.clean else COARSE_GRID)))
    cases = [chain.make(image, side) for image in images]
    result = ChainResult(chain, [evaluate_image(restorer, case, grid) for case in cases], cases)
    for _ in range(refine):
        best = result.oracle()
        tried = sorted(set.intersection(*(set(o.psnr_at) for o in result.outcomes)) - {UNCHANGED})
        index = tried.index(best)
        new = {(best + tried[i]) // 2 for i in (index - 1, index + 1) if 0 <= i < len(tried)} - set(tried)
        if not new:
            break
        for case, outcome in zip(cases, result.outcomes):
            for qf in new:
                outcome.psnr_at[qf] = restored_psnr(restorer, case, qf)
    return result


def markdown_table(results: Sequence[ChainResult]) -> str:
    """One row per chain: mean gain (dB) of each policy and the QF it used, against the oracle."""
    lines = ["| chain | auto (QF, source) | QF predicted | strength | FBCNN-D | header > FBCNN-D > network | best fixed QF | auto - best |",
             "|---|---|---|---|---|---|---|---|"]

    def cell(result: ChainResult, pick: Callable[[Outcome], int | None]) -> str:
        score = result.score(pick)
        if score is None:
            return "-"
        qfs = [pick(o) for o in result.outcomes]
        if not result.chain.clean:
            return f"{score:+.2f} ({_qf_span(qfs)})"
        return f"unchanged ({_qf_span(qfs)})" if math.isinf(score) else f"{score:.1f} dB ({_qf_span(qfs)})"

    for result in results:
        sources = sorted({o.auto_source for o in result.outcomes})
        auto = cell(result, lambda o: o.auto_used)
        oracle = result.oracle_score()
        delta = result.score(lambda o: o.auto_used) - oracle
        best = f"{oracle:+.2f} ({result.oracle()})" if not result.chain.clean else f"{oracle:.1f} dB ({result.oracle()})"
        lines.append(f"| {result.chain.name} | {auto[:-1]}, {'/'.join(sources)}) | "
                     f"{cell(result, lambda o: clamp_qf(o.predicted))} | "
                     f"{cell(result, lambda o: None if o.strength is None else clamp_qf(o.strength))} | "
                     f"{cell(result, lambda o: o.dominant)} | "
                     f"{cell(result, lambda o: o.trust_order)} | {best} | {'+inf' if math.isinf(delta) else f'{delta:+.2f}'} |")
    return "\n".join(lines)


def _qf_span(qfs: Sequence[int]) -> str:
    if all(qf == UNCHANGED for qf in qfs):
        return "left as is"
    qfs = [qf for qf in qfs if qf != UNCHANGED] or qfs
    low, high = min(qfs), max(qfs)
    return str(low) if low == high else f"{low}-{high}"
