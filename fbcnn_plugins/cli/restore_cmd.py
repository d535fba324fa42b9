"""``fbcnn restore``: batch restoration of image files for photo pipelines.

The whole batch is planned first (see ``batch_plan``): an output that is also
an input, an unwritable destination or a bad option stops the run before any
work, with exit status 2.  Then every file is handled on its own: a bad one is
reported with its name and skipped, the others go on, and the exit status is 1
at the end if anything failed.  Outputs never replace inputs, never replace
existing files unless ``--overwrite`` is given, and ``--skip-existing`` resumes
a batch.  A signal stops the run cleanly (no temporary file left, the finished
files reported) with status 128 + the signal number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from fbcnn_plugins.cli.batch_plan import Job, PlanError, plan_batch
from fbcnn_plugins.cli.signals import Interrupted
from fbcnn_plugins.files.formats import WRITE_FORMATS, XCF_SUFFIX
from fbcnn_plugins.ray.restore import add_ray_arguments

__all__ = ["DEFAULT_SUFFIX", "Job", "register", "run"]

DEFAULT_SUFFIX = "_fbcnn"


def _image_files():
    """The image reader and writer, imported on first use: it pulls in OpenCV and Pillow."""
    from fbcnn_plugins.files import images as image_files

    return image_files


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
    parser.add_argument("--tile", type=int, help="tile size in pixels, a positive multiple of 8 (default: 512)")
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


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.core.quality import parse_qf

    try:
        qf = parse_qf(args.qf)
    except ValueError as error:
        print(f"fbcnn restore: --qf: {error}", file=sys.stderr)
        return 2
    if args.tile is not None and (args.tile <= 0 or args.tile % 8):
        # Checked here too (not only by the Restorer) so that no path can read 0 as "the default".
        print(f"fbcnn restore: --tile: a positive multiple of 8, got {args.tile}", file=sys.stderr)
        return 2
    try:
        plan = plan_batch(args.inputs, output=args.output, suffix=args.suffix, fmt=args.format,
                          recursive=args.recursive, skip_existing=args.skip_existing)
    except PlanError as error:
        print(f"fbcnn restore: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a name or path the file system refuses (too long, a loop of links)
        print(f"fbcnn restore: {error.filename or ''}{': ' if error.filename else ''}{error.strerror or error}",
              file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = list(plan.missing)
    for record in plan.missing:
        print(f"error: {record['error']}", file=sys.stderr)
    for record in plan.skipped:
        if not args.quiet:
            print(f"skipped {record['input']}: {record['skipped']}", file=sys.stderr)
    results.extend(plan.skipped)
    jobs = plan.jobs
    interrupted: Interrupted | None = None
    if jobs and args.ray is not None:  # the same plan, restored by the workers of a Ray cluster
        from fbcnn_plugins.ray.restore import RaySetupError, restore_on_ray

        before = len(results)
        try:
            restore_on_ray(jobs, args, results)
        except RaySetupError as error:
            print(f"fbcnn restore: {error}", file=sys.stderr)
            return 2
        except Interrupted as stop:
            interrupted = stop
        not_done = len(jobs) - (len(results) - before)
    elif jobs:
        try:
            restorer = _make_restorer(args)
        except Exception as error:  # bad model, device or tiling: nothing can run
            print(f"fbcnn restore: {error}", file=sys.stderr)
            return 2
        before = len(results)
        try:
            _run_jobs(jobs, restorer, qf, args, results)
        except Interrupted as stop:  # the finished files are reported below; the current one left nothing
            interrupted = stop
        not_done = len(jobs) - (len(results) - before)
    if not results and interrupted is None:
        print("fbcnn restore: no input files", file=sys.stderr)
        return 2
    _report(results, args, interrupted, not_done if interrupted else 0)
    if interrupted is not None:
        return interrupted.exit_status
    return 1 if any("error" in r for r in results) else 0


def _report(results: list[dict[str, Any]], args: argparse.Namespace, interrupted: Interrupted | None, not_done: int) -> None:
    failed = sum(1 for r in results if "error" in r)
    skipped = sum(1 for r in results if "skipped" in r)
    done = len(results) - failed - skipped
    if args.json:
        report: dict[str, Any] = {"restored": done, "skipped": skipped, "failed": failed, "files": results}
        if interrupted is not None:
            report["interrupted"] = interrupted.name
        print(json.dumps(report, indent=2), flush=True)
    else:
        seconds = sum(r.get("seconds", 0.0) for r in results)
        print(f"restored {done} of {len(results)} file(s) in {seconds:.1f} s" + (f", {failed} failed" if failed else "")
              + (f", {skipped} skipped" if skipped else ""), flush=True)
    if interrupted is not None:
        print(f"fbcnn restore: stopped by {interrupted.name}; {not_done} file(s) not done, no partial output left; "
              "run again with --skip-existing to resume", file=sys.stderr, flush=True)


def _make_restorer(args: argparse.Namespace):
    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.core.tiling import DEFAULT_TILE

    return Restorer(
        args.model, device=args.device, precision=args.precision,
        tile=DEFAULT_TILE if args.tile is None else args.tile, overlap=args.overlap,
        self_ensemble=args.self_ensemble,
    )


def _run_jobs(jobs: list[Job], restorer, qf, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """Restore every job, appending one record per finished file to ``results`` as it finishes."""
    from fbcnn_plugins.cli.progress import BatchProgress

    image_files = _image_files()
    claimed: dict[Path, Path] = {}  # output -> the input that produces it in this run
    progress = BatchProgress(len(jobs), quiet=args.quiet)
    try:
        for job in jobs:
            progress.start(job.source)
            started = time.perf_counter()
            started_ns = time.time_ns()
            record: dict[str, Any] = {"input": str(job.source), "output": str(job.target)}
            try:
                target = job.target.resolve()
                if target in claimed:
                    raise image_files.ImageFileError(
                        f"{job.source}: same output as {claimed[target]} ({job.target}); use -o FOLDER or rename")
                claimed[target] = job.source
                record.update(_restore_one(job, restorer, qf, args, progress=progress))
                record["seconds"] = round(time.perf_counter() - started, 3)
                for note in record.get("warnings", []):
                    progress.line(f"warning: {note}")
                if not args.json:
                    frames = f", {record['frames']} frames" if record.get("frames", 1) > 1 else ""
                    progress.line(f"{job.source} -> {job.target}  (QF {record['qf']}, {record['qf_source']}{frames})")
            except Interrupted:
                if _written_since(job.target, started_ns):  # the stop came after the output was in place
                    record["seconds"] = round(time.perf_counter() - started, 3)
                    results.append(record)
                raise
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                record["error"] = _message(job, error)
                progress.line(f"error: {record['error']}")
            results.append(record)
            progress.advance()
    finally:
        progress.close()


def _written_since(target: Path, since_ns: int) -> bool:
    """Whether ``target`` was put in place after ``since_ns`` (so by this run's current file).

    File times come from the kernel's coarse clock, which may trail ``time.time_ns()`` by a
    tick; 20 ms of slack covers that, and an earlier run's output is older by far.
    """
    try:
        return target.stat().st_mtime_ns >= since_ns - 20_000_000
    except OSError:
        return False


def _message(job: Job, error: Exception) -> str:
    """The error as one line that names the file; unexpected error types keep their name."""
    named = str(job.source) in str(error) or str(job.target) in str(error)
    text = str(error) if named else f"{job.source}: {error}"
    expected = (ValueError, OSError, RuntimeError, _image_files().ImageFileError)
    return text if isinstance(error, expected) else f"{text} ({type(error).__name__})"


def _restore_one(job: Job, restorer, qf, args: argparse.Namespace, *, progress=None) -> dict[str, Any]:
    """Read, restore and write one file; the record's fields for the report."""
    image_files = _image_files()
    if job.target.exists() and job.target.resolve() == job.source.resolve():
        raise image_files.ImageFileError(f"{job.source}: output would replace the input; choose another -o or --suffix")
    if job.target.exists() and not args.overwrite:
        raise image_files.ImageFileError(f"{job.target}: output exists (use --overwrite to replace it, "
                                         "or --skip-existing to leave it)")
    if job.target.exists() and not image_files.is_restored_output(job.target):
        raise image_files.ImageFileError(f"{job.target}: exists and was not written by fbcnn-plugins; --overwrite "
                                         "replaces only earlier outputs (move it, or choose another -o or --suffix)")
    if job.source.suffix.lower() == XCF_SUFFIX:
        return _restore_xcf(job, restorer, qf, args.overwrite)
    fmt = image_files.output_format(job.target)  # reject an unwritable extension before spending time on the image
    image = image_files.read_image(job.source)
    notes = list(image.notes)
    frames = image.frames or [image.pixels]
    if len(frames) > 1:
        image_files.check_frames_fit(job.target, frames)  # before the work, not after
    change = image_files.depth_change(fmt, frames[0].dtype)
    if change:
        notes.append(f"{job.source}: {change}")
    header = None
    if qf == "header":
        from fbcnn_plugins.core.qf_estimation import header_quality

        header = header_quality(job.source)
        if header is None:
            raise image_files.ImageFileError(f"{job.source}: --qf header needs a JPEG file (this one has no JPEG tables)")
    restored, used = [], None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index, pixels in enumerate(frames):
            if progress is not None and len(frames) > 1:
                progress.stage(f"frame {index + 1} of {len(frames)}", pixels.shape)
            result = _restore_pixels(job, pixels, restorer, qf, header, used, progress)
            used = used or result.qf  # one QF for every frame: an animation keeps one look
            restored.append(result.image)
    for caught_warning in caught:  # each warning about the work once, naming the file
        if not issubclass(caught_warning.category, (UserWarning, RuntimeWarning)):
            continue  # deprecations and the like are for developers, not for this file's report
        text = str(caught_warning.message)
        note = text if str(job.source) in text else f"{job.source}: {text}"
        if note not in notes:
            notes.append(note)
    if progress is not None:
        progress.stage("writing", frames[0].shape)
    job.target.parent.mkdir(parents=True, exist_ok=True)
    image_files.write_frames(job.target, restored, durations=image.durations, loop=image.info.get("loop", 0),
                             icc_profile=image.icc_profile, exif=image.exif, overwrite=args.overwrite,
                             metadata=image.metadata, notes=notes)
    remove_stale_temporaries(job.target)
    record = {"qf": used.value, "qf_source": used.source, "qf_predicted": used.predicted,
              "size": [int(frames[0].shape[1]), int(frames[0].shape[0])]}
    if used.reason:
        record["qf_reason"] = used.reason
    if len(frames) > 1:
        record["frames"] = len(frames)
    if notes:
        record["warnings"] = notes
    return record


def remove_stale_temporaries(target: Path, *, older_than_s: float = 60.0) -> list[Path]:
    """Delete the temporary files a killed earlier write of ``target`` left beside it (none of ours is open now).

    A file goes when no process holds its write lock (its writer was killed), or, where the
    file system has no such locks, when it is older than ``older_than_s``: another process
    writing the same output at this moment keeps its temporary file.
    """
    import glob

    from fbcnn_plugins.core.atomic import abandoned, temporary_prefix

    removed = []
    now = time.time()
    pattern = f"{glob.escape(temporary_prefix(target))}*.part{glob.escape(target.suffix)}"
    for stale in target.parent.glob(pattern):
        try:
            if now - stale.stat().st_mtime > older_than_s or abandoned(stale):
                stale.unlink()
                removed.append(stale)
        except OSError:  # gone already, or not ours to remove: it is ignored by every run anyway
            continue
    return removed


def _restore_pixels(job: Job, pixels, restorer, qf, header, used, progress):
    """One frame through the restorer at the QF the options ask for (``used``: the first frame's, reused)."""
    tiles = progress.tiles(pixels.shape) if progress is not None else None
    if used is not None:  # the first frame's decision, "leave it as it is" included
        from fbcnn_plugins.core.qf_choice import restore_at

        result = restore_at(restorer, pixels, used, progress=tiles)
    elif header is not None:
        result = restorer.restore(pixels, header.quality, progress=tiles)
        result.qf.source = "header"
    elif qf == "auto":
        from fbcnn_plugins.core.qf_choice import choose_qf, restore_at

        if progress is not None:
            progress.stage("estimating QF", pixels.shape)
        chosen = choose_qf(restorer, pixels, jpeg_path=job.source)
        if progress is not None:
            progress.stage(f"restoring at QF {chosen.value}", pixels.shape)
        result = restore_at(restorer, pixels, chosen, progress=tiles)
    else:
        if progress is not None and qf in ("predicted", "dominant", None):
            progress.stage("estimating QF and restoring", pixels.shape)
        result = restorer.restore(pixels, qf, progress=tiles)
    return result


def _restore_xcf(job: Job, restorer, qf, overwrite: bool) -> dict[str, Any]:
    """Every raster layer of an XCF file restored on its own; the layer stack is written back as XCF."""
    from fbcnn_plugins.files.images import ImageFileError
    from fbcnn_plugins.files.xcf import read_xcf, restore_xcf

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
            from fbcnn_plugins.core.qf_choice import restore_auto

            result = restore_auto(restorer, pixels)
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
