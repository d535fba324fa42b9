"""Draw the pictures in README.md and docs/ from images the repository ships or generates.

    python benchmarks/make_figures.py            # writes docs/img/*.png
    python benchmarks/make_figures.py --out /tmp/figures

Sources: ``examples/blocky.jpg`` (with its lossless original, redrawn by
``examples/make_example.py``) and scikit-image's bundled sample photos,
compressed here with libjpeg through Pillow, so anyone can rebuild every
figure from a clone. Restoration uses the bundled models in PyTorch on the CPU in fp32,
the QF chosen as ``fbcnn restore`` chooses it. Crops are enlarged 3x with
nearest-neighbour sampling so that the 8x8 blocks stay visible; the PNGs are
kept small (well under 300 KB each) because they live in the repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.qf_choice import choose_qf
from fbcnn_plugins.core.qf_estimation import dominant_quality
from fbcnn_plugins.core.restorer import Restorer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "blocky.jpg"
SCALE = 3
GAP = 6
LABEL_HEIGHT = 26
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Crop:
    """A (left, top, width, height) window, aligned to the 8x8 JPEG grid so blocks show whole."""

    left: int
    top: int
    width: int
    height: int

    def of(self, image: np.ndarray) -> np.ndarray:
        return image[self.top : self.top + self.height, self.left : self.left + self.width]


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Compress with libjpeg (Pillow) at ``quality`` and decode again."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert(Image.fromarray(image).mode))


def example_original() -> np.ndarray:
    """The lossless scene that examples/blocky.jpg was saved from."""
    spec = importlib.util.spec_from_file_location("make_example", ROOT / "examples" / "make_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return np.asarray(module.draw_scene().convert("RGB"))


def enlarge(pixels: np.ndarray) -> Image.Image:
    image = Image.fromarray(pixels)
    return image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.NEAREST)


def font(size: int = 16) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def labelled_grid(rows: list[list[tuple[Image.Image, str]]]) -> Image.Image:
    """Panels in rows, each with its caption above it."""
    width = max(sum(panel.width for panel, _ in row) + GAP * (len(row) + 1) for row in rows)
    height = sum(max(panel.height for panel, _ in row) + LABEL_HEIGHT + GAP for row in rows) + GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    top = GAP
    for row in rows:
        left = GAP
        for panel, caption in row:
            draw.text((left + 2, top + 4), caption, fill=(0, 0, 0), font=font())
            sheet.paste(panel, (left, top + LABEL_HEIGHT))
            left += panel.width + GAP
        top += max(panel.height for panel, _ in row) + LABEL_HEIGHT + GAP
    return sheet


def save_small(image: Image.Image, path: Path) -> None:
    """An optimised PNG; the figures are committed, so size matters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({path.stat().st_size // 1024} KB)")


def before_after(restorer: Restorer, out: Path) -> None:
    """JPEG, FBCNN and the original, for the bundled example and a scikit-image photo."""
    from skimage import data

    rows = []
    example = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    photo = data.chelsea()  # a cat: fur, whiskers and smooth background
    photo_jpeg = jpeg_round_trip(photo, 10)
    cases = [
        (example, example_original(), EXAMPLE, Crop(112, 88, 104, 64), "JPEG QF 15, examples/blocky.jpg"),
        (photo_jpeg, photo, None, Crop(152, 48, 104, 64), "JPEG QF 10, skimage chelsea"),
    ]
    for damaged, original, path, crop, caption in cases:
        qf = choose_qf(restorer, damaged, jpeg_path=path)
        restored = restorer.restore(damaged, qf=qf.value).image
        rows.append([
            (enlarge(crop.of(damaged)), f"{caption}: {psnr(original, damaged):.1f} dB"),
            (enlarge(crop.of(restored)), f"FBCNN at QF {qf.value} ({qf.source}): {psnr(original, restored):.1f} dB"),
            (enlarge(crop.of(original)), "original"),
        ])
    save_small(labelled_grid(rows), out)


def qf_effect(restorer: Restorer, out: Path) -> None:
    """One crop of a QF-10 JPEG restored with the QF slider at 10, 30 and 60: the lower, the stronger."""
    from skimage import data

    damaged = jpeg_round_trip(data.chelsea(), 10)
    crop = Crop(184, 120, 80, 80)
    row = [(enlarge(crop.of(damaged)), "JPEG QF 10 input")]
    for qf in (10, 30, 60):
        row.append((enlarge(crop.of(restorer.restore(damaged, qf=qf).image)), f"restored at QF {qf}"))
    save_small(labelled_grid([row]), out)


def fbcnn_d_curves(out: Path) -> None:
    """FBCNN-D's evidence for a non-aligned double JPEG: QF 10, then shifted (4, 4) and saved at QF 30."""
    from skimage import data

    from fbcnn_plugins.cli.qf_plot import plot_curves

    first = jpeg_round_trip(data.camera(), 10)
    double = jpeg_round_trip(np.ascontiguousarray(first[4:, 4:]), 30)
    found = dominant_quality(double)
    plot_curves(found, out, title="skimage camera: JPEG QF 10, shifted (4, 4), JPEG QF 30")
    # Matplotlib writes full RGBA; a palette of the few colours a line plot uses is a fraction of the size.
    with Image.open(out) as drawn:
        small = drawn.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    save_small(small, out)
    print(f"  FBCNN-D: dominant QF {found.quality} at shift {found.shift}, double compressed: {found.double_compressed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNGs (default: docs/img)")
    args = parser.parse_args(argv)
    restorer = Restorer(device="cpu", precision="fp32", backend="pytorch")  # fixed, whatever the machine would default to
    before_after(restorer, args.out / "before_after.png")
    qf_effect(restorer, args.out / "qf_effect.png")
    fbcnn_d_curves(args.out / "fbcnn_d_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
