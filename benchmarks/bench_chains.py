"""How well ``auto`` picks the QF on realistic degradation chains (a benchmark, not a test).

For each chain (single JPEG, PNG of a JPEG, aligned and shifted double JPEG, JPEG -> resize
-> JPEG, never-compressed images from 16 px to full size, a screenshot) the images are
degraded, and restored with the bundled model at the QF each policy picks and at a grid of
fixed QFs (5, 10, 20, 30, 50, 70, 90, 100, then ``--refine`` times the midpoints between
the best and its neighbours; 90/95/100 for never-compressed inputs).  The table gives the mean PSNR gain
over the input in dB (never-compressed rows: the lowest PSNR against the input over the
images), with the QFs used, and ``auto`` minus the best fixed QF.

    python benchmarks/bench_chains.py                         # 4 images of ../shared/data/val, 256-px crops
    python benchmarks/bench_chains.py --count 8 --side 256 --refine 1   # the table in README.md and docs/qf-estimation.md
    python benchmarks/bench_chains.py --count 8 --side 384 --json chains.json
    python benchmarks/bench_chains.py --images ../shared/data/train/urban36 --count 4   # tuning images

Photos are cropped at their centre to ``--side`` (resized chains crop the source so that
the result has that side); "full size" rows use the whole image.  The screenshot rows use
one generated image (flat colour panels, buttons, text) at 256x256.  The thresholds of the
``auto`` rule were set on training images, so the validation images measure it fairly.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.training.chains import markdown_table, photo_chains, run_chain, screenshot, screenshot_chains

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"


def pick_images(folder: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` images spread evenly over the sorted PNGs of ``folder`` (all its subfolders)."""
    files = sorted(folder.rglob("*.png"))
    if not files:
        raise SystemExit(f"bench_chains: no PNG images under {folder}")
    chosen = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files)))]
    images = []
    for path in chosen:
        with Image.open(path) as image:
            images.append((str(path.relative_to(folder)), np.asarray(image.convert("RGB"))))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=VAL, help="folder of clean PNG photos (default: ../shared/data/val)")
    parser.add_argument("--count", type=int, default=4, help="photos used (spread over the folder)")
    parser.add_argument("--side", type=int, default=256, help="side of the degraded crops")
    parser.add_argument("--no-full-size", action="store_true", help="skip the full-size never-compressed row")
    parser.add_argument("--chains", nargs="*", help="only chains whose name contains one of these words")
    parser.add_argument("--refine", type=int, default=2, help="times the best fixed QF is refined between its neighbours")
    parser.add_argument("--json", type=Path, help="write every image's evidence and PSNR per QF here")
    args = parser.parse_args()

    images = pick_images(args.images, args.count)
    print(f"images: {', '.join(name for name, _ in images)}; crops of {args.side} px")
    restorer = Restorer(device="cpu")
    jobs = [(chain, [image for _, image in images]) for chain in photo_chains(not args.no_full_size)]
    jobs += [(chain, [screenshot()]) for chain in screenshot_chains()]
    if args.chains:
        jobs = [(c, i) for c, i in jobs if any(word.lower() in c.name.lower() for word in args.chains)]
    results, records = [], []
    for chain, photos in jobs:
        start = time.perf_counter()
        result = run_chain(restorer, chain, photos, args.side, refine=args.refine)
        results.append(result)
        records.append({"chain": chain.name, "clean": chain.clean, "oracle": result.oracle(),
                        "outcomes": [asdict(o) for o in result.outcomes]})
        print(f"{chain.name}: {time.perf_counter() - start:.0f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))
    print()
    print(markdown_table(results))


if __name__ == "__main__":
    main()
