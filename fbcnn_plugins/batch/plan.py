"""Planning a batch before any work: which files are inputs, where each output goes, and what is refused.

Inputs and outputs are planned together so that no output can replace a file
the same run still has to read, and so that a re-run on a folder does not take
an earlier run's outputs (or the temporary files of a killed run) for new
photos.  An output is recognised by the EXIF Software tag our writer puts in
it, whatever its name, and by the naming rule (the output name of another
input of this run).  Destinations are checked for writability here, not after
hours of work.
"""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from fbcnn_plugins.batch.records import FileRecord
from fbcnn_plugins.files.formats import (
    OTHER_IMAGE_SUFFIXES, READ_SUFFIXES, WRITE_FORMATS, XCF_SUFFIX, is_temporary_name,
)

OUTPUT_SUFFIXES = (*WRITE_FORMATS, XCF_SUFFIX)
#: Added to an input's name to name its output when no output file is given.
DEFAULT_SUFFIX = "_fbcnn"


class PlanError(Exception):
    """The whole run is refused before any work (a usage error: exit status 2)."""


@dataclass(frozen=True)
class Job:
    """One file of a batch: ``source`` is read, ``target`` is written (never the same file)."""

    source: Path
    target: Path


@dataclass
class Plan:
    """What a batch will do, decided before any work: the jobs, and the inputs left out and why."""

    jobs: list[Job] = field(default_factory=list)
    #: Inputs left alone on purpose, each {"input": ..., "skipped": why} (and "output" when known).
    skipped: list[FileRecord] = field(default_factory=list)
    #: Inputs refused before any work, each {"input": ..., "error": ...} (and "output" when known):
    #: patterns that matched nothing, outputs whose names the file system cannot hold.
    missing: list[FileRecord] = field(default_factory=list)
    #: Planned to resume: existing outputs were left out, and one that appears during the run is skipped too.
    skip_existing: bool = False


@dataclass(frozen=True)
class Found:
    path: Path
    root: Path  # the folder it was found under, mirrored below -o
    explicit: bool  # named on the command line (not found in a folder or by a glob)


def check_suffix(suffix: str) -> None:
    """An output suffix is part of a file name: no folder separators, no NUL."""
    separators = {"/", os.sep, os.altsep or "/", "\0"}
    if any(char in suffix for char in separators):
        raise PlanError(f"--suffix {suffix!r}: must not contain '/' (outputs go next to their input, or under -o)")


def find_inputs(patterns: Sequence[str], recursive: bool) -> tuple[list[Found], list[str]]:
    """Files named, in folders, or matched by globs (each once), plus the patterns that matched nothing."""
    found: list[Found] = []
    missing: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            files = sorted(p for p in walker if _is_candidate(p))
            found.extend(Found(p, path, False) for p in files)
        elif path.exists() or path.is_symlink():
            found.append(Found(path, path.parent, True))  # read_image says what is wrong with it, if anything
        elif glob.has_magic(pattern):
            matches = sorted(_glob(pattern, recursive))
            matches = [p for p in matches if _is_candidate(p, any_suffix=True)]
            if not matches:
                missing.append(pattern)
            found.extend(Found(p, p.parent, False) for p in matches)
        else:
            missing.append(pattern)
    unique, seen = [], set()
    for item in found:
        key = _resolved(item.path)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique, missing


def _glob(pattern: str, recursive: bool) -> list[Path]:
    """The files a glob pattern matches; "**" (with --recursive) never follows a link to a folder.

    ``glob.glob`` follows them, so one link to ``..`` makes it walk the same folders again and
    again; pathlib's "**" does not.  Hidden files and folders match only where the pattern
    names them with a leading dot, as with ``glob.glob``.
    """
    if not (recursive and "**" in pattern):
        return [Path(p) for p in glob.glob(pattern)]  # without "**" expansion nothing can loop
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root, rest = Path(*parts[:first_magic]), Path(*parts[first_magic:])
    wants_hidden = any(part.startswith(".") for part in rest.parts)
    return [path for path in root.glob(str(rest))
            if wants_hidden or not any(part.startswith(".") for part in path.relative_to(root).parts)]


def _is_candidate(path: Path, any_suffix: bool = False) -> bool:
    """A regular file with an image extension that is not a killed run's temporary file."""
    return (path.is_file() and not is_temporary_name(path.name)
            and (any_suffix or path.suffix.lower() in READ_SUFFIXES))


def single_output_file(output: Path | None) -> bool:
    """Whether ``-o`` names one output file (by its extension) rather than a folder."""
    return output is not None and output.suffix.lower() in OUTPUT_SUFFIXES and not output.is_dir()


def output_name(source: Path, suffix: str, fmt: str) -> str:
    extension = "xcf" if source.suffix.lower() == XCF_SUFFIX else fmt  # layers stay layers
    return f"{source.stem}{suffix}.{extension}"


def plan_batch(
    patterns: Sequence[str | os.PathLike[str]],
    *,
    output: str | os.PathLike[str] | None = None,
    suffix: str = DEFAULT_SUFFIX,
    fmt: str = "png",
    recursive: bool = False,
    skip_existing: bool = False,
    is_output: Callable[[Path], bool] | None = None,
) -> Plan:
    """Inputs and their outputs, checked together; raises PlanError for a run that must not start.

    ``patterns`` are files, folders (their images; with ``recursive`` also those of their
    sub-folders) or glob patterns.  ``output`` is one output file (for one input) or a folder
    that mirrors the input folders (default: each output beside its input, named with
    ``suffix`` and the extension of ``fmt``).  With ``skip_existing`` an input whose output
    exists becomes a skipped record instead of a job: that is how a batch resumes.

    ``is_output(path)`` tells whether a file found in a folder is an earlier run's output
    (default: our EXIF marker, read by ``fbcnn_plugins.files.images.is_restored_output``).

    An output name longer than the file system allows becomes a record in ``Plan.missing``
    (the other files go on); any other path the file system refuses while planning (a loop of
    links, a name too long to look up) raises PlanError naming it, not a bare OSError.
    """
    try:
        return _plan(patterns, output=output, suffix=suffix, fmt=fmt, recursive=recursive,
                     skip_existing=skip_existing, is_output=is_output)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        raise PlanError(f"{where}{error.strerror or error}") from None


def _plan(patterns: Sequence[str | os.PathLike[str]], *, output: str | os.PathLike[str] | None, suffix: str,
          fmt: str, recursive: bool, skip_existing: bool, is_output: Callable[[Path], bool] | None) -> Plan:
    if isinstance(patterns, (str, os.PathLike)):
        raise TypeError("patterns: a list of files, folders or globs, not one string")
    check_suffix(suffix)
    output = None if output is None else Path(output)
    if output is not None and not output.is_dir() and output.suffix.lower() in OTHER_IMAGE_SUFFIXES:
        raise PlanError(f"-o {output}: cannot write {output.suffix} files; "
                        f"name a {', '.join(sorted(s.lstrip('.') for s in WRITE_FORMATS))} file or a folder")
    found, unmatched = find_inputs([os.fspath(p) for p in patterns], recursive)
    missing: list[FileRecord] = [{"input": p, "error": f"{p}: no such file or folder, or nothing matches"}
                                 for p in unmatched]
    plan = Plan(skip_existing=skip_existing, missing=missing)
    if single_output_file(output) and len(found) > 1:
        raise PlanError(f"{len(found)} inputs need -o to name a folder, not the file {output}")
    if is_output is None:
        from fbcnn_plugins.files.images import is_restored_output as is_output

    targets = {item.path: _target(item, output, suffix, fmt) for item in found}
    produced_by = {}
    for item in found:
        produced_by.setdefault(_resolved(targets[item.path]), item.path)
    kept: list[Found] = []
    for item in found:
        source = _resolved(item.path)
        producer = produced_by.get(source)
        if producer is not None and producer != item.path:
            if item.explicit:
                raise PlanError(f"{item.path} is both an input and the output of {producer}; "
                                "restoring it would read a file this run replaces (use another -o or --suffix)")
            plan.skipped.append({"input": str(item.path), "skipped": f"the output of {producer} in this run"})
            continue
        if _resolved(targets[item.path]) == source:
            raise PlanError(f"{item.path}: the output would replace the input; choose another -o or --suffix")
        if not item.explicit and is_output(item.path):
            plan.skipped.append({"input": str(item.path),
                                 "skipped": "written by fbcnn-plugins (an earlier run's output; name it to restore it again)"})
            continue
        kept.append(item)
    for item in kept:
        target = targets[item.path]
        too_long = name_too_long(target)
        if too_long:
            plan.missing.append({"input": str(item.path), "output": str(target), "error": f"{item.path}: {too_long}"})
            continue
        if skip_existing and target.exists():
            plan.skipped.append({"input": str(item.path), "output": str(target), "skipped": "output exists"})
            continue
        plan.jobs.append(Job(item.path, target))
    check_writable({job.target.parent for job in plan.jobs})
    return plan


def name_too_long(target: Path) -> str | None:
    """Why the file system cannot hold ``target``'s name, or None: checked before any work, not after."""
    from fbcnn_plugins.core.atomic import name_limit

    limit = name_limit(target.parent)
    size = len(os.fsencode(target.name))
    if size > limit:
        return (f"its output name {target.name} is {size} bytes, longer than the {limit} the file system allows "
                "(rename the input, or use a shorter --suffix)")
    return None


def _target(item: Found, output: Path | None, suffix: str, fmt: str) -> Path:
    if single_output_file(output):
        return output
    name = output_name(item.path, suffix, fmt)
    if output is None:
        return item.path.with_name(name)
    relative = item.path.parent.relative_to(item.root) if item.path.is_relative_to(item.root) else Path()
    return output / relative / name


def _resolved(path: Path) -> Path:
    """``path`` made absolute with its links followed; a name the file system refuses, or a loop of
    links (RuntimeError before Python 3.13), stays as it is."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def check_writable(folders: set[Path]) -> None:
    """Every output folder can be created and written to, tried with a real file (permissions lie for root)."""
    for folder in sorted(folders):
        existing = folder
        while not existing.exists():
            if existing.is_symlink():  # a dangling link: the folder cannot be made there
                break
            existing = existing.parent
        if not existing.is_dir():
            raise PlanError(f"cannot write outputs to {folder}: {existing} is not a folder")
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".fbcnn-write-check."):
                pass
        except OSError as error:
            where = "" if existing == folder else f" (no file can be created in {existing})"
            raise PlanError(f"cannot write outputs to {folder}{where}: {error.strerror or error}") from None
