"""``fbcnn restore``: batch restoration of image files for photo pipelines.

A thin layer over :mod:`fbcnn_plugins.batch`, which does the work.  The whole batch is
planned first: an output that is also an input, an unwritable destination or a bad option
stops the run before any work, with exit status 2.  Then every file is handled on its own: a
bad one is reported with its name and skipped, the others go on, and the exit status is 1 at
the end if anything failed.  Outputs never replace inputs, never replace existing files unless
``--overwrite`` is given, and ``--skip-existing`` resumes a batch; several runs with
``--skip-existing`` may share a folder, each file is restored by one of them.  A signal stops
the run cleanly (no temporary file left, the finished files reported) with status 128 + the
signal number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fbcnn_plugins.batch import (
    DEFAULT_SUFFIX, BatchProgress, BatchReport, PlanError, RestoreOptions, make_restorer, plan_batch, run_plan,
)
from fbcnn_plugins.cli.signals import Interrupted
from fbcnn_plugins.files.formats import WRITE_FORMATS
from fbcnn_plugins.ray.restore import add_ray_arguments

__all__ = ["register", "run", "restore_options"]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "restore", help="remove JPEG artifacts from image files",
        description="Restore image files (JPEG, PNG, TIFF incl. 16-bit and float, WebP, BMP, GIF; every frame "
        "of an animation or page of a TIFF). Outputs are PNG unless -o names a file with another extension; "
        "inputs are never replaced, and an earlier run's outputs in a folder are never taken as inputs.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help="output file (one input) or folder (default: next to each input)")
    parser.add_argument("--qf", default="auto", metavar="auto|predicted|dominant|header|N",
                        help="quality factor driving the restoration: auto (the JPEG file's tables when they apply, "
                        "else FBCNN-D from the pixels, else the network), predicted (the network's estimate), "
                        "dominant (FBCNN-D, for double-compressed images), header (the JPEG file's tables) or 1..100")
    parser.add_argument("--model", metavar="NAME|PATH", help="registered model name or weights file (default: by image type)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                        help="compute precision (default: the fastest the hardware computes natively: bf16 on CPUs "
                        "with AVX-512-BF16/AMX and on recent CUDA GPUs, else fp32; see fbcnn bench)")
    parser.add_argument("--tile", type=int, help="tile size in pixels, a positive multiple of 8 (default: 512; 2048 on a CUDA GPU)")
    parser.add_argument("--overlap", type=int, help="tile overlap in pixels, multiple of 8 (default: 32; less for tiles under 72)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the 8 flips/rotations: a little more quality for 8x the time")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave inputs whose output exists alone: resumes a stopped batch")
    parser.add_argument("--suffix", default=DEFAULT_SUFFIX, help=f"added to output names (default: {DEFAULT_SUFFIX})")
    parser.add_argument("--format", choices=sorted(s.lstrip(".") for s in WRITE_FORMATS), default="png",
                        help="output format when the output name is derived (default: png)")
    parser.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines (errors and warnings still)")
    add_ray_arguments(parser)
    parser.set_defaults(run=run)


def restore_options(args: argparse.Namespace) -> RestoreOptions:
    """The batch options the command line gives (ValueError, starting with the option's name, for a bad one)."""
    return RestoreOptions(
        qf=args.qf, model=args.model, device=args.device, precision=args.precision, tile=args.tile,
        overlap=args.overlap, self_ensemble=args.self_ensemble, overwrite=args.overwrite,
        skip_existing=args.skip_existing,
    )


def run(args: argparse.Namespace) -> int:
    try:
        options = restore_options(args)
    except ValueError as error:
        print(f"fbcnn restore: --{error}", file=sys.stderr)
        return 2
    try:
        plan = plan_batch(args.inputs, output=args.output, suffix=args.suffix, fmt=args.format,
                          recursive=args.recursive, skip_existing=args.skip_existing)
    except PlanError as error:
        print(f"fbcnn restore: {error}", file=sys.stderr)
        return 2
    for record in plan.missing:
        print(f"error: {record['error']}", file=sys.stderr)
    for record in plan.skipped:
        if not args.quiet:
            print(f"skipped {record['input']}: {record['skipped']}", file=sys.stderr)
    report = BatchReport()
    interrupted: Interrupted | None = None
    if plan.jobs and args.ray is not None:  # the same plan, restored by the workers of a Ray cluster
        from fbcnn_plugins.ray.restore import RaySetupError, restore_on_ray

        report.files.extend([*plan.missing, *plan.skipped])
        try:
            restore_on_ray(plan.jobs, options, args, report.files)
        except RaySetupError as error:
            print(f"fbcnn restore: {error}", file=sys.stderr)
            return 2
        except Interrupted as stop:
            interrupted = stop
    else:
        restorer = None
        if plan.jobs:
            try:
                restorer = make_restorer(options)
            except Exception as error:  # bad model, device or tiling: nothing can run
                print(f"fbcnn restore: {error}", file=sys.stderr)
                return 2
        progress = BatchProgress(len(plan.jobs), quiet=args.quiet, show_results=not args.json)
        try:
            run_plan(plan, options, restorer=restorer, progress=progress, report=report)
        except Interrupted as stop:  # the finished files are reported below; the current one left nothing
            interrupted = stop
    if not report.files and interrupted is None:
        print("fbcnn restore: no input files", file=sys.stderr)
        return 2
    settled = len(report.files) - len(plan.missing) - len(plan.skipped)
    _report(report, args, interrupted, len(plan.jobs) - settled)
    if interrupted is not None:
        return interrupted.exit_status
    return 0 if report.ok else 1


def _report(report: BatchReport, args: argparse.Namespace, interrupted: Interrupted | None, not_done: int) -> None:
    if args.json:
        printed = report.to_dict()
        if interrupted is not None:
            printed["interrupted"] = interrupted.name
        print(json.dumps(printed, indent=2), flush=True)
    else:
        seconds = sum(r.get("seconds", 0.0) for r in report.files)
        print(f"restored {report.restored} of {len(report.files)} file(s) in {seconds:.1f} s"
              + (f", {report.failed} failed" if report.failed else "")
              + (f", {report.skipped} skipped" if report.skipped else ""), flush=True)
    if interrupted is not None:
        print(f"fbcnn restore: stopped by {interrupted.name}; {not_done} file(s) not done, no partial output left; "
              "run again with --skip-existing to resume", file=sys.stderr, flush=True)
