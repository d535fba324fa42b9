"""``fbcnn restore``: batch restoration of image files for photo pipelines.

Every file is handled on its own: a bad one is reported with its name and
skipped, the others go on, and the exit status is non-zero at the end if
anything failed.  Outputs never replace inputs and never replace existing
files unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbcnn_plugins.image_files import READ_SUFFIXES, WRITE_FORMATS, ImageFileError, read_image, write_image

DEFAULT_SUFFIX = "_fbcnn"
XCF_SUFFIX = ".xcf"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "restore", help="remove JPEG artifacts from image files",
        description="Restore image files (JPEG, PNG, TIFF incl. 16-bit, WebP, BMP). Outputs are PNG unless "
        "-o names a file with another extension; inputs are never replaced.",
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
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="compute precision (default: fp32)")
    parser.add_argument("--tile", type=int, help="tile size in pixels, multiple of 8 (default: 512)")
    parser.add_argument("--overlap", type=int, help="tile overlap in pixels, multiple of 8 (default: 32; less for tiles under 72)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the 8 flips/rotations: a little more quality for 8x the time")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    parser.add_argument("--suffix", default=DEFAULT_SUFFIX, help=f"added to output names (default: {DEFAULT_SUFFIX})")
    parser.add_argument("--format", choices=sorted(s.lstrip(".") for s in WRITE_FORMATS), default="png",
                        help="output format when the output name is derived (default: png)")
    parser.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    parser.set_defaults(run=run)


@dataclass
class Job:
    source: Path
    target: Path


def expand_inputs(patterns: list[str], recursive: bool) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Files to restore, each with the folder it was found under (for mirroring), plus unmatched patterns."""
    found: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            files = sorted(p for p in walker if p.is_file() and p.suffix.lower() in READ_SUFFIXES)
            found.extend((p, path) for p in files)
        elif path.exists():
            found.append((path, path.parent))
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=recursive) if Path(p).is_file())
            if not matches:
                missing.append(pattern)
            found.extend((p, p.parent) for p in matches)
        else:
            missing.append(pattern)
    unique, seen = [], set()
    for source, root in found:
        key = source.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((source, root))
    return unique, missing


def plan_outputs(files: list[tuple[Path, Path]], args: argparse.Namespace) -> list[Job]:
    out: Path | None = args.output
    single_file_out = (
        out is not None and len(files) == 1 and out.suffix.lower() in (*WRITE_FORMATS, XCF_SUFFIX)
        and not out.is_dir()
    )
    jobs = []
    for source, root in files:
        if single_file_out:
            target = out
        else:
            extension = "xcf" if source.suffix.lower() == XCF_SUFFIX else args.format  # layers stay layers
            name = f"{source.stem}{args.suffix}.{extension}"
            if out is None:
                target = source.with_name(name)
            else:
                relative = source.parent.relative_to(root) if source.is_relative_to(root) else Path()
                target = out / relative / name
        jobs.append(Job(source, target))
    return jobs


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.core.quality import parse_qf

    try:
        qf = parse_qf(args.qf)
    except ValueError as error:
        print(f"fbcnn restore: --qf: {error}", file=sys.stderr)
        return 2
    files, missing = expand_inputs(args.inputs, args.recursive)
    results: list[dict[str, Any]] = [
        {"input": pattern, "error": f"{pattern}: no such file or folder, or nothing matches"} for pattern in missing
    ]
    for record in results:
        print(f"error: {record['error']}", file=sys.stderr)
    out = args.output
    if out is not None and len(files) > 1 and out.suffix.lower() in (*WRITE_FORMATS, XCF_SUFFIX) and not out.is_dir():
        print(f"fbcnn restore: {len(files)} inputs need -o to name a folder, not the file {out}", file=sys.stderr)
        return 2
    jobs = plan_outputs(files, args)
    if jobs:
        try:
            restorer = _make_restorer(args)
        except Exception as error:  # bad model, device or tiling: nothing can run
            print(f"fbcnn restore: {error}", file=sys.stderr)
            return 2
        results.extend(_run_jobs(jobs, restorer, qf, args))
    if not results:
        print("fbcnn restore: no input files", file=sys.stderr)
        return 2
    failed = sum(1 for r in results if "error" in r)
    done = len(results) - failed
    if args.json:
        print(json.dumps({"restored": done, "failed": failed, "files": results}, indent=2))
    else:
        seconds = sum(r.get("seconds", 0.0) for r in results)
        print(f"restored {done} of {len(results)} file(s) in {seconds:.1f} s" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def _make_restorer(args: argparse.Namespace):
    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.core.tiling import DEFAULT_TILE

    return Restorer(
        args.model, device=args.device, precision=args.precision,
        tile=args.tile or DEFAULT_TILE, overlap=args.overlap,
        self_ensemble=args.self_ensemble,
    )


def _run_jobs(jobs: list[Job], restorer, qf, args: argparse.Namespace) -> list[dict[str, Any]]:
    from tqdm import tqdm

    results = []
    claimed: dict[Path, Path] = {}  # output -> the input that produces it in this run
    bar = tqdm(jobs, unit="file", disable=len(jobs) < 2 or None, file=sys.stderr, leave=False)
    for job in bar:
        started = time.perf_counter()
        record: dict[str, Any] = {"input": str(job.source), "output": str(job.target)}
        try:
            target = job.target.resolve()
            if target in claimed:
                raise ImageFileError(f"{job.source}: same output as {claimed[target]} ({job.target}); use -o FOLDER or rename")
            claimed[target] = job.source
            record.update(_restore_one(job, restorer, qf, args))
            record["seconds"] = round(time.perf_counter() - started, 3)
            if not args.json:
                bar.write(f"{job.source} -> {job.target}  (QF {record['qf']}, {record['qf_source']})", file=sys.stderr)
        except (ImageFileError, ValueError, OSError, RuntimeError) as error:
            message = str(error) if str(job.source) in str(error) else f"{job.source}: {error}"
            record["error"] = message
            bar.write(f"error: {message}", file=sys.stderr)
        results.append(record)
    return results


def _restore_one(job: Job, restorer, qf, args: argparse.Namespace) -> dict[str, Any]:
    if job.target.exists() and job.target.resolve() == job.source.resolve():
        raise ImageFileError(f"{job.source}: output would replace the input; choose another -o or --suffix")
    if job.target.exists() and not args.overwrite:
        raise ImageFileError(f"{job.target}: output exists (use --overwrite to replace it)")
    if job.source.suffix.lower() == XCF_SUFFIX:
        return _restore_xcf(job, restorer, qf, args.overwrite)
    from fbcnn_plugins.image_files import output_format

    output_format(job.target)  # reject an unwritable extension before spending time on the image
    image = read_image(job.source)
    progress = _tile_progress(image.pixels.shape)
    if qf == "header":
        from fbcnn_plugins.core.qf_estimation import header_quality

        header = header_quality(job.source)
        if header is None:
            raise ImageFileError(f"{job.source}: --qf header needs a JPEG file (this one has no JPEG tables)")
        result = restorer.restore(image.pixels, header.quality, progress=progress)
        result.qf.source = "header"
    elif qf == "auto":
        from fbcnn_plugins.core.qf_choice import choose_qf

        chosen = choose_qf(restorer, image.pixels, jpeg_path=job.source)
        result = restorer.restore(image.pixels, chosen.value, progress=progress)
        result.qf = chosen
    else:
        result = restorer.restore(image.pixels, qf, progress=progress)
    job.target.parent.mkdir(parents=True, exist_ok=True)
    write_image(job.target, result.image, icc_profile=image.icc_profile, exif=image.exif, overwrite=args.overwrite)
    return {"qf": result.qf.value, "qf_source": result.qf.source, "qf_predicted": result.qf.predicted,
            "size": [int(image.pixels.shape[1]), int(image.pixels.shape[0])]}


def _restore_xcf(job: Job, restorer, qf, overwrite: bool) -> dict[str, Any]:
    """Every raster layer of an XCF file restored on its own; the layer stack is written back as XCF."""
    from fbcnn_plugins.xcf_files import read_xcf, restore_xcf

    if job.target.suffix.lower() != XCF_SUFFIX:
        raise ImageFileError(f"{job.source}: an XCF file is restored layer by layer into an XCF file; "
                             f"name the output .xcf (not {job.target.suffix or 'without extension'})")
    layer_qf = qf
    if qf == "header":
        from fbcnn_plugins.gimp.jpeg_settings import header_from_jpeg_settings

        header = header_from_jpeg_settings(read_xcf(job.source).parasites.get("jpeg-settings"))
        if header is None:
            raise ImageFileError(f"{job.source}: --qf header needs the JPEG settings GIMP keeps for images "
                                 "opened from a JPEG file; this XCF has none")
        layer_qf = header.value
    used = []

    def restore_layer(layer, pixels):
        if layer_qf == "auto":  # each layer's own JPEG grid (a pasted photo has its own), else the network
            from fbcnn_plugins.core.qf_choice import choose_qf

            chosen = choose_qf(restorer, pixels)
            result = restorer.restore(pixels, chosen.value)
            result.qf = chosen
        else:
            result = restorer.restore(pixels, layer_qf)
        used.append({"layer": layer.name, "qf": result.qf.value,
                     "qf_source": "header" if qf == "header" else result.qf.source})
        return result.image

    job.target.parent.mkdir(parents=True, exist_ok=True)
    records = restore_xcf(job.source, job.target, restore_layer, overwrite=overwrite)
    if not used:
        raise ImageFileError(f"{job.source}: no raster layer to restore "
                             f"({'; '.join(r['layer'] + ': ' + r['skipped'] for r in records) or 'no layers'})")
    return {"qf": used[0]["qf"], "qf_source": used[0]["qf_source"], "layers": used,
            "skipped_layers": [r for r in records if "skipped" in r]}


def _tile_progress(shape: tuple[int, ...]):
    """A per-tile progress bar for images large enough to take a while (over 4 MP)."""
    if shape[0] * shape[1] < 4_000_000 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(unit="tile", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update
