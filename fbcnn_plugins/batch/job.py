"""Restoring one file of a batch: read it, restore every frame (or XCF layer), write the output atomically.

The output keeps what the input carried besides its pixels: ICC profile, EXIF (upright, the
orientation tag reset), animation timing, bit depth where the format holds it; and it names
this program in EXIF Software, which is how a later run on the folder knows it for an output.
An existing output is never replaced unless the options say ``overwrite``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fbcnn_plugins.batch.plan import Job
from fbcnn_plugins.batch.progress import BatchProgress
from fbcnn_plugins.batch.records import FileRecord
from fbcnn_plugins.core.quality import parse_qf
from fbcnn_plugins.files.formats import XCF_SUFFIX

if TYPE_CHECKING:
    import numpy as np

    from fbcnn_plugins.core.quality import QFEstimate
    from fbcnn_plugins.core.restorer import Restorer, RestoreResult


class OutputExists(Exception):
    """The job's output is there already and the options say neither overwrite nor skip."""


@dataclass(frozen=True)
class RestoreOptions:
    """How every file of a batch is restored and written; the fields are ``fbcnn restore``'s options.

    ``qf``: ``"auto"`` (the JPEG file's tables when they apply, else the pixels' estimate, else
    the network's), ``"predicted"``, ``"dominant"``, ``"header"`` or 1..100.  ``model``: a
    registered name or a weights file (default: by image type).  ``overwrite`` replaces existing
    outputs (never inputs); ``skip_existing`` leaves an input whose output exists alone, also
    when another run sharing the folder wrote it while this one was running.
    """

    qf: int | str = "auto"
    model: str | None = None
    device: str = "auto"
    precision: str | None = None
    tile: int | None = None
    overlap: int | None = None
    self_ensemble: bool = False
    overwrite: bool = False
    skip_existing: bool = False

    def __post_init__(self) -> None:
        """Bad values raise ValueError before any work; the message starts with the field's name."""
        try:
            object.__setattr__(self, "qf", parse_qf(self.qf))
        except ValueError as error:
            raise ValueError(f"qf: {error}") from None
        if self.tile is not None and (isinstance(self.tile, bool) or self.tile <= 0 or self.tile % 8):
            # Checked here as well as by the Restorer, so that no caller can have 0 read as "the default".
            raise ValueError(f"tile: a positive multiple of 8, got {self.tile}")
        if self.overwrite and self.skip_existing:
            raise ValueError("overwrite: excludes skip_existing (replace outputs, or leave them)")


def make_restorer(options: RestoreOptions) -> Restorer:
    """The restorer the options describe (loads the model: raises for a bad model, device or tiling)."""
    from fbcnn_plugins.core.restorer import Restorer

    return Restorer(
        options.model, device=options.device, precision=options.precision,
        tile=options.tile, overlap=options.overlap,
        self_ensemble=options.self_ensemble,
    )


def error_message(job: Job, error: Exception) -> str:
    """The error as one line that names the file; unexpected error types keep their name."""
    from fbcnn_plugins.files.images import ImageFileError

    named = str(job.source) in str(error) or str(job.target) in str(error)
    text = str(error) if named else f"{job.source}: {error}"
    expected = (ValueError, OSError, RuntimeError, ImageFileError, OutputExists)
    return text if isinstance(error, expected) else f"{text} ({type(error).__name__})"


def restore_file(job: Job, restorer: Restorer, options: RestoreOptions, *,
                 progress: BatchProgress | None = None) -> FileRecord:
    """Read, restore and write one file; the record's fields for the report.

    Raises for a file that cannot be done (ImageFileError and the like, naming the file), and
    OutputExists when the output is there and ``options.overwrite`` is not set.
    """
    from fbcnn_plugins.files import images as image_files

    qf = options.qf
    if job.target.exists() and job.target.resolve() == job.source.resolve():
        raise image_files.ImageFileError(f"{job.source}: output would replace the input; choose another -o or --suffix")
    if job.target.exists() and not options.overwrite:
        raise OutputExists(f"{job.target}: output exists (use --overwrite to replace it, "
                           "or --skip-existing to leave it)")
    if job.target.exists() and not image_files.is_restored_output(job.target):
        raise image_files.ImageFileError(f"{job.target}: exists and was not written by fbcnn-plugins; --overwrite "
                                         "replaces only earlier outputs (move it, or choose another -o or --suffix)")
    if job.source.suffix.lower() == XCF_SUFFIX:
        return _restore_xcf(job, restorer, qf, options.overwrite)
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
                             icc_profile=image.icc_profile, exif=image.exif, overwrite=options.overwrite,
                             metadata=image.metadata, notes=notes)
    remove_stale_temporaries(job.target)
    record: FileRecord = {"qf": used.value, "qf_source": used.source, "qf_predicted": used.predicted,
              "size": [int(frames[0].shape[1]), int(frames[0].shape[0])]}
    if used.reason:
        record["qf_reason"] = used.reason
    if len(frames) > 1:
        record["frames"] = len(frames)
    if notes:
        record["warnings"] = notes
    return record


def temporaries_of(target: Path) -> list[Path]:
    """The temporary files beside ``target`` that writes of it make (``core.atomic``'s naming, with the stem
    shortened where a long output name leaves no room for the temporary name's random part)."""
    import glob

    from fbcnn_plugins.core.atomic import temporary_prefix

    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f"{glob.escape(temporary_prefix(target))}*.part{glob.escape(target.suffix)}"))


def remove_stale_temporaries(target: Path, *, older_than_s: float = 60.0) -> list[Path]:
    """Delete the temporary files a killed earlier write of ``target`` left beside it (none of ours is open now).

    A file goes when no process holds its write lock (its writer was killed), or, where the
    file system has no such locks, when it is older than ``older_than_s``: another process
    writing the same output at this moment keeps its temporary file.
    """
    from fbcnn_plugins.core.atomic import abandoned

    removed = []
    now = time.time()
    for stale in temporaries_of(target):
        try:
            if now - stale.stat().st_mtime > older_than_s or abandoned(stale):
                stale.unlink()
                removed.append(stale)
        except OSError:  # gone already, or not ours to remove: it is ignored by every run anyway
            continue
    return removed


def _restore_pixels(job: Job, pixels: np.ndarray, restorer: Restorer, qf: int | str, header, used: QFEstimate | None,
                    progress: BatchProgress | None) -> RestoreResult:
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


def _restore_xcf(job: Job, restorer: Restorer, qf: int | str, overwrite: bool) -> FileRecord:
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
