"""``fbcnn restore --ray``: the same batch restoration, spread over the workers of a Ray cluster.

The driver (the machine where ``fbcnn restore`` runs) plans the whole job
exactly as the local run does: which files, which output name for each, which
outputs already exist.  Only the restoration itself moves to the cluster:
Ray Data's ``map_batches`` feeds one file at a time to a fixed pool of actors,
each of which loads the model once (through the core's catalogue, as the
local run does) and then restores and writes file after file through the
batch API the local run uses (``fbcnn_plugins.batch``).  That is why the
outputs are the same files, byte for byte: the same reader, the same
``Restorer`` call, the same atomic writer, the same claim on each output.

Why actors and one file per block: loading the network is the expensive part
of a worker's start, so a worker keeps it for the whole job; and a block of
one file means a worker that dies (killed, out of memory, a lost node) costs
the cluster only that file, which Ray runs again on a restarted actor
(``max_restarts`` / ``max_task_retries``).  A file that keeps killing its worker
is given up after ``MAX_FILE_RETRIES`` and reported as failed, so one poison
file cannot stall an archive.

Outputs are written by the workers straight into the output folder, so every
node must see the inputs and the output folder under the same paths (a shared
filesystem).  Re-running the same command skips every output that exists: an
output only ever appears complete (atomic rename), so an existing one is a
finished one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from fbcnn_plugins.batch import (
    BatchProgress, FileRecord, Job, RestoreOptions, claim_path, remove_stale_temporaries, same_output_errors,
    temporaries_of, wait_for_claim,
)

INSTALL_HINT = 'fbcnn restore --ray needs Ray: pip install "fbcnn-plugins[ray]" (or pip install "ray[data]")'
#: A file whose worker dies this many times more is reported as failed instead of tried again.
MAX_FILE_RETRIES = 3
#: At most this many blocks; beyond it several files share a block (and a retry).
MAX_BLOCKS = 100_000
_ADDRESS = re.compile(r"^(auto|local|(ray://)?[\w.\-\[\]:]+:\d+)$")


class RaySetupError(RuntimeError):
    """The job cannot start on Ray (Ray missing, no cluster, bad worker counts); nothing was restored."""


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--ray`` options of ``fbcnn restore``."""
    group = parser.add_argument_group("running on a Ray cluster (needs fbcnn-plugins[ray])")
    group.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="restore on a Ray cluster: ADDRESS as for ray.init (host:port, ray://host:port, auto, local; "
        "default: the running cluster or RAY_ADDRESS, else a new one on this machine). Inputs and -o must be "
        "on a filesystem every node sees. Put --ray after the inputs, or write --ray=ADDRESS",
    )
    group.add_argument("--ray-workers", type=int, metavar="N",
                       help="number of model-holding workers (default: as many as the cluster's CPUs or GPUs allow)")
    group.add_argument("--ray-cpus-per-worker", type=float, default=1.0, metavar="N",
                       help="CPUs reserved by each worker, also its thread count (default: 1)")
    group.add_argument("--ray-gpus-per-worker", type=float, metavar="N",
                       help="GPUs reserved by each worker (default: 1 when the cluster has GPUs and --device "
                       "is not cpu, else 0)")


def fbcnn_environment() -> dict[str, str]:
    """The driver's FBCNN_* variables (engine choice and the like), for the workers to run as it would."""
    return {key: value for key, value in os.environ.items() if key.startswith("FBCNN_")}


def check_ray_installed() -> None:
    """Raise RaySetupError with the install command when Ray (with Ray Data) is missing."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise RaySetupError(INSTALL_HINT) from None


def check_address(address: str) -> str | None:
    """The address for ``ray.init`` (None: find or start one); a path here means --ray swallowed an input."""
    if address == "":
        return None
    if not _ADDRESS.match(address) or Path(address).exists():
        raise RaySetupError(
            f"--ray {address}: not a Ray address (host:port, ray://host:port, auto or local); "
            "if it is an input, put --ray after the inputs or write --ray=ADDRESS"
        )
    return address


# -- the worker ------------------------------------------------------------------------------

class RestoreWorker:
    """A Ray Data actor: one loaded model, then file after file through the batch API, as the local run does."""

    def __init__(self, options: dict[str, Any], workdir: str, cpus: float) -> None:
        # Relative paths in the plan mean what they meant on the driver: the cluster shares its files.
        if not os.path.isdir(workdir):
            raise RuntimeError(f"fbcnn restore --ray: the folder {workdir} does not exist on this node; "
                               "every node needs the inputs and outputs under the same paths")
        os.chdir(workdir)
        import torch

        from fbcnn_plugins.batch import RestoreOptions, make_restorer

        torch.set_num_threads(max(1, int(cpus)))
        # Only a retried file finds its output here (the driver left out the ones there before the
        # run, or another run wrote it meanwhile): it is done, not failed, unless --overwrite asks again.
        self.options = RestoreOptions(**{**options, "skip_existing": not options["overwrite"]})
        self.restorer = make_restorer(self.options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from fbcnn_plugins.batch import Job, restore_one

        records = [
            json.dumps(restore_one(Job(Path(source), Path(target)), self.restorer, self.options))
            for source, target in zip(batch["source"], batch["target"])
        ]
        return {"index": list(batch["index"]), "record": records}


# -- the driver ------------------------------------------------------------------------------

def restore_on_ray(jobs: Sequence[Job], options: RestoreOptions, args: argparse.Namespace,
                   results: list[FileRecord]) -> None:
    """Restore the planned ``jobs`` on the cluster, appending one record per job to ``results`` in plan order.

    ``options`` say how each file is restored, ``args`` carry the ``--ray`` options and the
    report's (``quiet``, ``json``).  A job whose output exists is skipped without being sent
    (unless --overwrite): that is what makes re-running the command resume it.  Raises
    RaySetupError when the job cannot start; on a signal the records of the finished files are
    appended before it propagates.
    """
    address = check_address(args.ray)
    check_ray_installed()
    records: list[FileRecord | None] = [None] * len(jobs)
    clashes = same_output_errors(jobs)
    todo = []
    for index, job in enumerate(jobs):
        if index in clashes:
            records[index] = clashes[index]
        elif job.target.exists() and not options.overwrite:
            records[index] = {"input": str(job.source), "output": str(job.target), "skipped": "output exists"}
        else:
            todo.append(index)
    if todo:
        _check_model(options)
    progress = BatchProgress(len(jobs), quiet=args.quiet, show_results=not args.json and not args.quiet)
    done = 0
    for record in records:
        if record is not None:
            done += 1
            progress.finished(record, f"[{done}/{len(jobs)}] ")
    finished = False
    try:
        if todo:
            for index, record in _run_on_cluster([jobs[i] for i in todo], todo, options, args, address):
                records[index] = record
                done += 1
                progress.finished(record, f"[{done}/{len(jobs)}] ")
        finished = True
    finally:
        progress.close()
        _remove_lost_writes([jobs[i] for i in todo])
        for index, job in enumerate(jobs):
            if records[index] is None and index in todo and job.target.exists():
                # Written by a worker (atomically, so complete) whose report was still on its way.
                records[index] = {"input": str(job.source), "output": str(job.target),
                                  "note": "written; its worker's report did not reach the driver before the stop"}
            if finished and records[index] is None:
                records[index] = {
                    "input": str(job.source), "output": str(job.target),
                    "error": f"{job.source}: its worker was lost {MAX_FILE_RETRIES + 1} times while restoring it "
                    "(out of memory, or a node lost?)",
                }
                progress.line(f"error: {records[index]['error']}")
        results.extend(r for r in records if r is not None)


def _check_model(options: RestoreOptions) -> None:
    """A wrong model name or file, or bad tiling, fails here before the cluster is touched."""
    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.core.tiling import DEFAULT_TILE, check_tiling, default_overlap

    tile = options.tile or DEFAULT_TILE
    try:
        check_tiling(tile, default_overlap(tile) if options.overlap is None else options.overlap)
        if options.model is not None:
            load_model(options.model)
    except Exception as error:
        raise RaySetupError(str(error)) from None


def _run_on_cluster(jobs: Sequence[Job], indices: list[int], options: RestoreOptions, args: argparse.Namespace,
                    address: str | None):
    """Yield (plan index, record) as workers finish files, in whatever order they finish."""
    # Ray's and the workers' messages go to stderr: stdout carries only the report (--json).
    with contextlib.redirect_stdout(sys.stderr), _connected(address):
        import ray
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts files over the whole job
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a file given up after its retries is reported, not fatal
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        workers, resources = _worker_shape(ray.cluster_resources(), args)
        rows = [{"index": i, "source": str(job.source), "target": str(job.target)} for i, job in zip(indices, jobs)]
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        with warnings.catch_warnings():
            # Ray 2.5x marks actor options passed this way as deprecated but has no named parameter for
            # them yet; its default (retry forever) would let one file that kills its worker stall the job.
            warnings.simplefilter("ignore", DeprecationWarning)
            restored = dataset.map_batches(
                RestoreWorker, batch_size=1, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
                fn_constructor_kwargs={"options": dataclasses.asdict(options), "workdir": os.getcwd(), "cpus": resources["num_cpus"]},
                runtime_env={"env_vars": fbcnn_environment()},
                max_restarts=-1, max_task_retries=MAX_FILE_RETRIES, **resources,
            )
        try:
            for row in restored.iter_rows():
                yield int(row["index"]), json.loads(row["record"])
        except (RaySetupError, KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as error:  # workers that cannot start (bad device, missing folder) stop the whole job
            raise RaySetupError(f"the job stopped on the cluster: {_root_cause(error)} "
                                "(finished outputs are kept; the same command resumes)") from None


def _root_cause(error: BaseException) -> str:
    """The worker's own error line: Ray wraps it in its own exceptions, with tracebacks in the text."""
    chain, seen = [], set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    for link in chain:
        lines = [line.strip() for line in str(link).splitlines()]
        raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): \S", line)]
        if raised:
            name, message = raised[-1].split(": ", 1)
            return f"{name.rsplit('.', 1)[-1]}: {message}"
    return f"{type(chain[0]).__name__}: {str(chain[0]).strip().splitlines()[-1] if str(chain[0]).strip() else ''}"


@contextlib.contextmanager
def _connected(address: str | None):
    """Connected to the cluster for the block; a connection made here is closed after it."""
    import ray

    if ray.is_initialized():  # a caller's own connection is left to the caller
        yield
        return
    # ray.init puts its own SIGTERM handler in place (it ends the process on the spot); the command's
    # handlers go back afterwards, so a signal still stops the job cleanly with the finished files reported.
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=True, log_to_driver=True)
    except Exception as error:  # no cluster at that address, or a local one could not start
        raise RaySetupError(f"cannot connect to Ray at {address or 'auto'}: {error}") from None
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    try:
        yield
    finally:
        ray.shutdown()


def _worker_shape(cluster: dict[str, float], args: argparse.Namespace) -> tuple[int, dict[str, float]]:
    """How many workers, and what each reserves, from the cluster's resources and the options."""
    cpus = float(args.ray_cpus_per_worker)
    gpus = args.ray_gpus_per_worker
    if gpus is None:
        gpus = 1.0 if cluster.get("GPU", 0) >= 1 and args.device != "cpu" else 0.0
    if cpus <= 0 or gpus < 0:
        raise RaySetupError("--ray-cpus-per-worker must be above 0 and --ray-gpus-per-worker at least 0")
    fits = int(cluster.get("CPU", 0) // cpus)
    if gpus > 0:
        fits = min(fits, int(cluster.get("GPU", 0) // gpus))
    if fits < 1:
        raise RaySetupError(f"the Ray cluster ({_describe(cluster)}) has no room for one worker of "
                            f"{cpus:g} CPU and {gpus:g} GPU")
    workers = args.ray_workers or fits
    if workers < 1 or workers > fits:
        raise RaySetupError(f"--ray-workers {workers}: the cluster ({_describe(cluster)}) holds 1..{fits} workers "
                            f"of {cpus:g} CPU and {gpus:g} GPU")
    return workers, {"num_cpus": cpus, "num_gpus": gpus}


def _describe(cluster: dict[str, float]) -> str:
    return f"{cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU"


def _remove_lost_writes(jobs: Sequence[Job], *, grace_s: float = 20.0) -> None:
    """The claim and temporary files of writes that a lost or stopped worker never finished.

    They go once the file's claim is free: a worker that is still ending (a stop shuts the job's
    workers down) gets ``grace_s`` in all to let go, and a file that another run sharing the
    folder is writing keeps its files.
    """
    deadline = time.monotonic() + grace_s
    for job in jobs:
        if not (claim_path(job.target).exists() or temporaries_of(job.target)):
            continue
        claim = wait_for_claim(job.target, timeout_s=max(0.0, deadline - time.monotonic()))
        if claim is not None:
            with claim:
                remove_stale_temporaries(job.target, older_than_s=0)
