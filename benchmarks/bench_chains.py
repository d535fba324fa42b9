"""How well ``auto`` picks the QF on realistic degradation chains (a benchmark, not a test).

For each chain (single JPEG at 4:2:0, 4:4:4 and 4:2:2, progressive, with an encoder's own
tables, sharpened and camera-like JPEGs, PNG of a JPEG, aligned and shifted double JPEG,
JPEG -> resize -> JPEG, never-compressed images from 1 px thin to full size, a screenshot)
the images, in colour and in gray, are degraded, and restored with the bundled colour or
gray model at the QF each policy picks and at a grid of fixed QFs (5, 10, 20, 30, 50, 70,
90, 100, then ``--refine`` times the midpoints between the best and its neighbours;
90/95/100 for never-compressed inputs).  The table gives the mean PSNR gain over the input in dB (never-compressed rows: the lowest PSNR against the input over the
images), with the QFs used, and ``auto`` minus the best fixed QF.

    python benchmarks/bench_chains.py                         # 4 images of ../shared/data/val, 256-px crops, colour and gray
    python benchmarks/bench_chains.py --count 8 --side 256    # the tables in README.md and docs/qf-estimation.md
    python benchmarks/bench_chains.py --modes gray --chains "x -> JPEG"   # the gray resize chains only
    python benchmarks/bench_chains.py --count 8 --side 384 --json chains.json
    python benchmarks/bench_chains.py --tables-from chains.json   # the tables again, also of a run cut short
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
from fbcnn_plugins.training.chains import (
    Chain, ChainResult, Outcome, markdown_table, photo_chains, run_chain, screenshot, screenshot_chains,
)

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"


def pick_images(folder: Path, count: int, gray: bool = False) -> list[tuple[str, np.ndarray]]:
    """``count`` images spread evenly over the sorted PNGs of ``folder`` (all its subfolders), as RGB or gray."""
    files = sorted(folder.rglob("*.png"))
    if not files:
        raise SystemExit(f"bench_chains: no PNG images under {folder}")
    chosen = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files)))]
    images = []
    for path in chosen:
        with Image.open(path) as image:
            images.append((str(path.relative_to(folder)), np.asarray(image.convert("L" if gray else "RGB"))))
    return images


def tables_from_json(path: Path) -> str:
    """The tables of a run from its ``--json`` file (also of a run cut short: the chains it finished)."""
    by_mode: dict[str, list[ChainResult]] = {}
    for record in json.loads(path.read_text()):
        outcomes = []
        for values in record["outcomes"]:
            values = dict(values, psnr_at={int(qf): value for qf, value in values["psnr_at"].items()})
            outcomes.append(Outcome(**values))
        chain = Chain(record["chain"], make=None, clean=record["clean"])
        by_mode.setdefault(record.get("mode", "color"), []).append(ChainResult(chain, outcomes))
    return "\n\n".join(f"{mode}:\n\n{markdown_table(results)}" for mode, results in by_mode.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=VAL, help="folder of clean PNG photos (default: ../shared/data/val)")
    parser.add_argument("--count", type=int, default=4, help="photos used (spread over the folder)")
    parser.add_argument("--side", type=int, default=256, help="side of the degraded crops")
    parser.add_argument("--no-full-size", action="store_true", help="skip the full-size never-compressed row")
    parser.add_argument("--chains", nargs="*", help="only chains whose name contains one of these words")
    parser.add_argument("--refine", type=int, default=2, help="times the best fixed QF is refined between its neighbours")
    parser.add_argument("--json", type=Path, help="write every image's evidence and PSNR per QF here")
    parser.add_argument("--modes", nargs="+", choices=["color", "gray"], default=["color", "gray"],
                        help="colour photos with the colour model, gray photos with the gray model, or both")
    parser.add_argument("--tables-from", type=Path, help="only print the tables of an earlier run's --json file")
    args = parser.parse_args()
    if args.tables_from:
        print(tables_from_json(args.tables_from))
        return

    restorer = Restorer(device="cpu")
    records, tables = [], []
    for mode in args.modes:
        gray = mode == "gray"
        images = pick_images(args.images, args.count, gray)
        print(f"{mode}: images {', '.join(name for name, _ in images)}; crops of {args.side} px")
        shot = screenshot() if not gray else np.asarray(Image.fromarray(screenshot()).convert("L"))
        jobs = [(chain, [image for _, image in images]) for chain in photo_chains(not args.no_full_size, gray)]
        jobs += [(chain, [shot]) for chain in screenshot_chains()]
        if args.chains:
            jobs = [(c, i) for c, i in jobs if any(word.lower() in c.name.lower() for word in args.chains)]
        results = []
        for chain, photos in jobs:
            start = time.perf_counter()
            result = run_chain(restorer, chain, photos, args.side, refine=args.refine)
            results.append(result)
            records.append({"mode": mode, "chain": chain.name, "clean": chain.clean, "oracle": result.oracle(),
                            "outcomes": [asdict(o) for o in result.outcomes]})
            print(f"{mode}, {chain.name}: {time.perf_counter() - start:.0f} s", flush=True)
            if args.json:
                args.json.write_text(json.dumps(records, indent=1))
        tables.append(f"{'Colour' if not gray else 'Gray'} ({len(images)} photos, the bundled {mode} model):\n\n"
                      + markdown_table(results))
    print()
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
