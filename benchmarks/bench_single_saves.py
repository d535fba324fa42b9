"""Does ``auto`` keep its hands off plain single JPEGs?  (a benchmark, not a test)

A photo saved once by a libjpeg encoder is restored best near its header's QF.  Every image
of the folder (default: all 38 of ``../shared/data/val``) is saved once at each ``--qf``
(4:2:0, or gray with ``--gray``), ``auto`` decides on the real file, and wherever it picks a
QF other than the header's, the image is restored at both; the table gives, per QF, the
mean and the worst PSNR of ``auto`` minus the header's QF over the images, and how many
decisions differed from the header.

    python benchmarks/bench_single_saves.py                      # colour, QF 70 80 90 95, the table in docs/qf-estimation.md
    python benchmarks/bench_single_saves.py --gray
    python benchmarks/bench_single_saves.py --qf 90 --json single.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.qf_choice import QFDecision, decide_qf
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.training.chains import decode, encode

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"


def decide_on_file(restorer: Restorer, data: bytes) -> tuple[np.ndarray, QFDecision]:
    """The decoded pixels of a JPEG and ``auto``'s decision on the real file."""
    handle, path = tempfile.mkstemp(suffix=".jpg")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        pixels = decode(data)
        return pixels, decide_qf(restorer, pixels, jpeg_path=path)
    finally:
        os.unlink(path)


def restored_psnr(restorer: Restorer, clean: np.ndarray, pixels: np.ndarray, qf: int) -> float:
    """PSNR of the restoration at ``qf``; a ``clean`` decision (QF 100 reported) leaves the pixels as they are."""
    return psnr(clean, restorer.restore(pixels, qf).image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=VAL, help="folder of clean PNG photos (default: ../shared/data/val)")
    parser.add_argument("--qf", type=int, nargs="+", default=[70, 80, 90, 95])
    parser.add_argument("--gray", action="store_true", help="gray photos, gray JPEGs, the gray model")
    parser.add_argument("--json", type=Path, help="write every image's evidence and result here")
    args = parser.parse_args()

    files = sorted(args.images.rglob("*.png"))
    if not files:
        raise SystemExit(f"bench_single_saves: no PNG images under {args.images}")
    restorer = Restorer(device="cpu")
    records = []
    print("| QF | auto - header, mean (dB) | worst image (dB) | decisions other than the header | auto QFs |")
    print("|---|---|---|---|---|")
    for quality in args.qf:
        deltas, others, used = [], 0, []
        for path in files:
            with Image.open(path) as image:
                clean = np.asarray(image.convert("L" if args.gray else "RGB"))
            pixels, decision = decide_on_file(restorer, encode(clean, quality))
            delta = 0.0
            if decision.qf != quality or decision.source == "clean":
                others += 1
                at_header = restored_psnr(restorer, clean, pixels, quality)
                at_auto = psnr(clean, pixels) if decision.source == "clean" else restored_psnr(
                    restorer, clean, pixels, decision.qf)
                delta = at_auto - at_header
            deltas.append(delta)
            used.append(decision.qf)
            records.append({"image": str(path.relative_to(args.images)), "qf": quality, "auto": decision.qf,
                            "source": decision.source, "predicted": decision.predicted, "strength": decision.strength,
                            "dominant": decision.dominant, "depth": decision.dominant_depth,
                            "auto_minus_header_db": delta, "reason": decision.reason})
        worst = int(np.argmin(deltas))
        which = f" ({files[worst].parent.name}/{files[worst].stem})" if deltas[worst] else ""
        print(f"| {quality} | {np.mean(deltas):+.3f} | {deltas[worst]:+.2f}{which} | "
              f"{others} of {len(files)} | {min(used)}-{max(used)} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
