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


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def plot_target_problem(plot: Path, source: Path) -> str | None:
    """Why the plot must not be written at ``plot``, or None: it never replaces the photo it is about."""
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        return f"name a {', '.join(s.lstrip('.') for s in PLOT_SUFFIXES)} file"
    try:
        if plot.resolve() == source.resolve() or (plot.exists() and plot.samefile(source)):
            return "is the input file; the plot would replace it"
    except OSError:
        pass
    if plot.exists() and not plot.is_file():
        return "is not a regular file"
    return None


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.core.restorer import Restorer

    if args.plot and len(args.files) != 1:
        print("fbcnn qf: --plot takes exactly one file", file=sys.stderr)
        return 2
    if args.plot:
        problem = plot_target_problem(args.plot, Path(args.files[0]))
        if problem:
            print(f"fbcnn qf: --plot {args.plot}: {problem}", file=sys.stderr)
            return 2
    try:
        restorer = Restorer(args.model, device=args.device)
    except ValueError as error:
        print(f"fbcnn qf: {error}", file=sys.stderr)
        return 2
    from fbcnn_plugins.batch.progress import BatchProgress
    from fbcnn_plugins.cli.signals import Interrupted

    reports: list[dict] = []
    progress = BatchProgress(len(args.files))
    try:
        failed = _estimate_all(args, restorer, reports, progress)
    except Interrupted as stop:  # the files already estimated are still reported
        progress.close()
        if args.json:
            print(json.dumps(reports, indent=2), flush=True)
        print(f"fbcnn qf: stopped by {stop.name} after {len(reports)} of {len(args.files)} file(s)", file=sys.stderr)
        return stop.exit_status
    progress.close()
    if args.json:
        print(json.dumps(reports, indent=2))
    return 1 if failed else 0


def _estimate_all(args: argparse.Namespace, restorer, reports: list[dict], progress) -> int:
    """Every file's estimates appended to ``reports`` as they are made; the number of files that failed."""
    from fbcnn_plugins.core.qf_estimation import dominant_quality, header_quality
    from fbcnn_plugins.files.images import ImageFileError, read_image

    failed = 0
    for path in args.files:
        progress.start(path)
        try:
            image = read_image(path)
            eight_bit = image.pixels if image.pixels.dtype.name == "uint8" else None
            if eight_bit is None:
                raise ImageFileError(f"{path}: QF estimation reads 8-bit images; this one is {image.pixels.dtype}")
            header = header_quality(path)
            progress.stage("network QF", eight_bit.shape)
            predicted, strength = restorer.predict_qf_and_strength(eight_bit)
            progress.stage("FBCNN-D", eight_bit.shape)
            dominant = dominant_quality(eight_bit)
            auto = _auto_decision(path, eight_bit, predicted, dominant, strength, restorer)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch or its report
            failed += 1
            message = str(error) if str(path) in str(error) else f"{path}: {error}"
            if not isinstance(error, (ImageFileError, ValueError, OSError)):
                message += f" ({type(error).__name__})"
            progress.line(f"error: {message}")
            reports.append({"file": str(path), "error": message})
            progress.advance()
            continue
        report = {
            "file": str(path),
            "header": None if header is None else {
                "quality": header.quality, "exact": header.exact, "custom_tables": header.custom_tables,
                "mean_table_error": header.error, "progressive": header.progressive,
                "chroma": header.chroma},
            "predicted": round(predicted, 2),
            "strength": None if strength is None else round(strength, 2),
            "dominant": {"quality": dominant.quality, "shift": dominant.shift,
                         "double_compressed": dominant.double_compressed, "mse": dominant.mse,
                         "depth": dominant.depth},
            "auto": {"qf": auto.qf, "source": auto.source, "reason": auto.reason,
                     "exact_edge_share": auto.exact_edge_share},
        }
        reports.append(report)
        if not args.json:
            head = "-" if header is None else f"{header.quality}{'' if header.exact else ' (custom tables, closest)'}"
            verdict = "non-aligned double JPEG" if dominant.double_compressed else "single or aligned"
            strength_text = "" if strength is None else f", strength {strength:.1f}"
            print(f"{path}: header {head}, predicted {predicted:.1f}{strength_text}, dominant {dominant.quality} "
                  f"at shift {dominant.shift} ({verdict}); auto {auto.qf} ({auto.source}: {auto.reason})")
        if args.plot:
            from fbcnn_plugins.cli.qf_plot import plot_curves

            plot_curves(dominant, args.plot, title=str(path))
            if not args.json:
                print(f"wrote {args.plot}")
        progress.advance()
    return failed


def _auto_decision(path, pixels, predicted: float, dominant, strength: float | None, restorer):
    """What ``--qf auto`` would use for this file, from the estimates already made (the core's one rule)."""
    from fbcnn_plugins.core.qf_choice import decide_on, header_estimate, model_rules

    header = header_estimate(path, *pixels.shape[:2])
    return decide_on(pixels, predicted, strength, header=header, dominant=dominant,
                     **model_rules(restorer, pixels))
