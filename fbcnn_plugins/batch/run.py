"""Running a planned batch in this process: file after file, each claimed first, a bad one reported and passed.

A file that fails gets a record naming it and the problem, and the batch goes on.  Before a
file is restored its output is claimed (see ``claims``): a file another run sharing the folder
is working on is left to it and looked at again at the end, when it is normally done; with
``skip_existing`` an output that another run finished meanwhile is a skipped file, not a
failure.  A stop (``KeyboardInterrupt``, which the command line raises for SIGINT/SIGTERM)
propagates after the records of the finished files are in place; the file being written then
leaves no temporary file and no partial output.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from fbcnn_plugins.batch.claims import Claim, remove_orphan_claim, try_claim, wait_for_claim
from fbcnn_plugins.batch.job import RestoreOptions, error_message, make_restorer, restore_file
from fbcnn_plugins.batch.plan import Job, Plan
from fbcnn_plugins.batch.progress import BatchProgress
from fbcnn_plugins.batch.records import BatchReport, FileRecord

if TYPE_CHECKING:
    from fbcnn_plugins.core.restorer import Restorer

#: Why a file is skipped whose output another run wrote while this one was running.
WRITTEN_BY_ANOTHER_RUN = "output exists (written by another run meanwhile)"


def run_plan(plan: Plan, options: RestoreOptions, *, restorer: Restorer | None = None,
             progress: BatchProgress | None = None, report: BatchReport | None = None) -> BatchReport:
    """Restore every job of ``plan``; the report holds the plan's own records, then one per job.

    A plan made with ``skip_existing`` runs with it (an output another run writes meanwhile is
    skipped too).  ``restorer`` defaults to :func:`make_restorer` of ``options`` (made only when
    there is work).  On a stop the exception propagates; pass your own ``report`` to keep the
    records made so far.
    """
    if plan.skip_existing and not options.skip_existing:
        options = dataclasses.replace(options, skip_existing=True)
    report = BatchReport() if report is None else report
    report.files.extend(plan.missing)
    report.files.extend(plan.skipped)
    for record in plan.skipped:
        if "output" in record:  # a finished output: a killed run's claim on it has no more use
            remove_orphan_claim(Path(record["output"]))
    run_jobs(plan.jobs, options, restorer=restorer, progress=progress, records=report.files)
    return report


def run_jobs(jobs: Sequence[Job], options: RestoreOptions, *, restorer: Restorer | None = None,
             progress: BatchProgress | None = None, records: list[FileRecord] | None = None) -> list[FileRecord]:
    """Restore ``jobs`` in order, appending one record per file to ``records`` as each is settled.

    A job whose output another run holds is put off until the others are done, then waited
    for.  Returns ``records``.
    """
    records = [] if records is None else records
    if jobs and restorer is None:
        restorer = make_restorer(options)
    clashes = same_output_errors(jobs)
    put_off: list[Job] = []
    try:
        for index, job in enumerate(jobs):
            if index in clashes:
                _note(records, progress, clashes[index])
                continue
            try:
                claim = try_claim(job.target)
            except OSError as error:
                _note(records, progress, _unclaimable(job, error))
                continue
            if claim is None:
                put_off.append(job)
            else:
                _settle(job, claim, restorer, options, progress, records)
        for job in put_off:  # by now normally finished by the run that held it
            if progress is not None and not progress.quiet:
                progress.line(f"waiting for {job.target}: another run is restoring it")
            try:
                claim = wait_for_claim(job.target)
            except OSError as error:
                _note(records, progress, _unclaimable(job, error))
                continue
            _settle(job, claim, restorer, options, progress, records)
    finally:
        if progress is not None:
            progress.close()
    return records


def same_output_errors(jobs: Sequence[Job]) -> dict[int, FileRecord]:
    """Error records for the jobs whose output an earlier job of ``jobs`` writes, by their index.

    The plan keeps them (two inputs named alike, ``a.jpg`` and ``a.png``), so that the first
    is restored and the second reported; neither replaces the other.
    """
    producers: dict[Path, Path] = {}  # output -> the input that produces it
    clashes: dict[int, FileRecord] = {}
    for index, job in enumerate(jobs):
        target = job.target.resolve()
        if target in producers:
            clashes[index] = {"input": str(job.source), "output": str(job.target),
                              "error": f"{job.source}: same output as {producers[target]} ({job.target}); "
                              "use -o FOLDER or rename"}
        else:
            producers[target] = job.source
    return clashes


def restore_one(job: Job, restorer: Restorer, options: RestoreOptions, *,
                progress: BatchProgress | None = None) -> FileRecord:
    """One job to its record, errors included: claimed (waiting while another run holds it), restored, written.

    For callers that spread the jobs themselves (the Ray executor); only a stop propagates.
    """
    try:
        claim = wait_for_claim(job.target)
    except OSError as error:
        return _unclaimable(job, error)
    settled: list[FileRecord] = []
    _settle(job, claim, restorer, options, progress, settled)
    return settled[-1]


def _settle(job: Job, claim: Claim, restorer: Restorer, options: RestoreOptions,
            progress: BatchProgress | None, records: list[FileRecord]) -> None:
    """Restore the claimed ``job`` and append its record (on a stop, only if its output was already in place)."""
    record: FileRecord = {"input": str(job.source), "output": str(job.target)}
    started = time.perf_counter()
    started_ns = time.time_ns()
    try:
        with claim:  # released, and its file removed, however this ends
            existed = job.target.exists()
            if existed and options.skip_existing:
                record["skipped"] = WRITTEN_BY_ANOTHER_RUN
            else:
                if progress is not None:
                    progress.start(job.source)
                try:
                    record.update(restore_file(job, restorer, options, progress=progress))
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                    if options.skip_existing and not existed and job.target.exists():
                        # Written by a run that could not be kept out (no flock here): done work, not a
                        # failure; the seconds below are what this run spent on work made redundant.
                        record["skipped"] = WRITTEN_BY_ANOTHER_RUN
                    else:
                        record["error"] = error_message(job, error)
                if "error" not in record:
                    record["seconds"] = round(time.perf_counter() - started, 3)
            _note(records, progress, record)
    except KeyboardInterrupt:
        # A stop can land after the output is in place but before its record (or while the claim is
        # released): the output is complete, so the file is reported as done.
        if not any(kept is record for kept in records) and _written_since(job.target, started_ns):
            record.setdefault("seconds", round(time.perf_counter() - started, 3))
            records.append(record)
        raise


def _unclaimable(job: Job, error: OSError) -> FileRecord:
    """The record of a job whose output folder refuses even the claim file."""
    return {"input": str(job.source), "output": str(job.target),
            "error": f"{job.target}: cannot claim the output ({error.strerror or error})"}


def _note(records: list[FileRecord], progress: BatchProgress | None, record: FileRecord) -> None:
    records.append(record)
    if progress is not None:
        progress.finished(record)


def _written_since(target: Path, since_ns: int) -> bool:
    """Whether ``target`` was put in place after ``since_ns`` (so by this run's current file).

    File times come from the kernel's coarse clock, which may trail ``time.time_ns()`` by a
    tick; 20 ms of slack covers that, and an earlier run's output is older by far.
    """
    try:
        return target.stat().st_mtime_ns >= since_ns - 20_000_000
    except OSError:
        return False
