"""``fbcnn qf``: every QF estimate for a file, side by side (header, network, FBCNN-D)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("qf", help="estimate the JPEG quality factor of image files")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--model", metavar="NAME|PATH", help="model whose QF branch predicts (default: by image type)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", type=Path, metavar="OUT.png",
                        help="draw the re-compression MSE curves of the best shifts (one file only; needs matplotlib)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.core.qf_estimation import dominant_quality, header_quality
    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.image_files import ImageFileError, read_image

    if args.plot and len(args.files) != 1:
        print("fbcnn qf: --plot takes exactly one file", file=sys.stderr)
        return 2
    try:
        restorer = Restorer(args.model, device=args.device)
    except ValueError as error:
        print(f"fbcnn qf: {error}", file=sys.stderr)
        return 2
    reports, failed = [], 0
    for path in args.files:
        try:
            image = read_image(path)
            eight_bit = image.pixels if image.pixels.dtype.name == "uint8" else None
            if eight_bit is None:
                raise ImageFileError(f"{path}: QF estimation reads 8-bit images; this one is {image.pixels.dtype}")
            header = header_quality(path)
            predicted = restorer.predict_qf(eight_bit)
            dominant = dominant_quality(eight_bit)
        except (ImageFileError, ValueError, OSError) as error:
            failed += 1
            message = str(error) if str(path) in str(error) else f"{path}: {error}"
            print(f"error: {message}", file=sys.stderr)
            reports.append({"file": str(path), "error": message})
            continue
        report = {
            "file": str(path),
            "header": None if header is None else {
                "quality": header.quality, "exact": header.exact, "custom_tables": header.custom_tables,
                "mean_table_error": header.error, "progressive": header.progressive},
            "predicted": round(predicted, 2),
            "dominant": {"quality": dominant.quality, "shift": dominant.shift,
                         "double_compressed": dominant.double_compressed, "mse": dominant.mse},
        }
        reports.append(report)
        if not args.json:
            head = "-" if header is None else f"{header.quality}{'' if header.exact else ' (custom tables, closest)'}"
            verdict = "non-aligned double JPEG" if dominant.double_compressed else "single or aligned"
            print(f"{path}: header {head}, predicted {predicted:.1f}, dominant {dominant.quality} "
                  f"at shift {dominant.shift} ({verdict})")
        if args.plot:
            from fbcnn_plugins.qf_plot import plot_curves

            plot_curves(dominant, args.plot, title=str(path))
            if not args.json:
                print(f"wrote {args.plot}")
    if args.json:
        print(json.dumps(reports, indent=2))
    return 1 if failed else 0
