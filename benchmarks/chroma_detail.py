"""How much colour detail each image folder holds (a measurement, not a test).

For every image, the chroma (Cb, Cr) PSNR of a libjpeg round trip at QF 100: at that quality
almost all of the loss is the encoder's 4:2:0 chroma subsampling, so a high number means the
chroma was already smooth, as in photos that were JPEGs before. Training photos whose chroma
is far smoother than the images a model meets teach it to smear colour edges.

    python benchmarks/chroma_detail.py                      # every folder of ../shared/data
    python benchmarks/chroma_detail.py --folders my/photos
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fbcnn_plugins.core.jpeg import jpeg_roundtrip
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.training.data import list_images, load_training_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def chroma_psnr_after_subsampling(image: np.ndarray) -> float:
    """Chroma PSNR of a QF-100 JPEG round trip; infinite for gray pictures."""
    before = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 1:]
    after = cv2.cvtColor(jpeg_roundtrip(image, 100), cv2.COLOR_RGB2YCrCb)[..., 1:]
    return psnr(before, after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", type=Path,
                        default=sorted(p for group in ("train", "val") for p in (DATA / group).glob("*") if p.is_dir()))
    args = parser.parse_args()
    print(f"{'folder':<40} {'colour images':>13} {'median dB':>9} {'10th pct':>8} {'90th pct':>8}")
    for folder in args.folders:
        scores = [chroma_psnr_after_subsampling(load_training_image(f, gray=False)) for f in list_images([folder])]
        finite = [s for s in scores if np.isfinite(s)]
        if not finite:
            print(f"{str(folder):<40} {0:>13}")
            continue
        p10, median, p90 = np.percentile(finite, [10, 50, 90])
        print(f"{str(folder):<40} {len(finite):>13} {median:>9.1f} {p10:>8.1f} {p90:>8.1f}")
    print("chroma PSNR of a QF-100 (4:2:0) round trip; higher = smoother chroma; gray images left out")


if __name__ == "__main__":
    main()
