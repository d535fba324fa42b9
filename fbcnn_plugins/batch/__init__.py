"""Restoring batches of image files from Python, with the same planning, writing and resume as ``fbcnn restore``.

The steps, each usable on its own:

- :func:`plan_batch`: which files are inputs, where each output goes, and what is refused
  (``PlanError``) before any work; with ``skip_existing`` finished outputs are left out, which
  is how a batch resumes.
- :func:`restore_file`: one job read, restored and written atomically, with its metadata.
- :func:`run_plan` / :func:`run_jobs`: every job in this process, a bad file reported and
  passed, each output claimed first so that runs sharing a folder restore each file once.
- :func:`restore_one`: one job to its record (errors included), for executors that spread the
  jobs themselves (``fbcnn_plugins.ray.restore``).

The command line (``fbcnn restore``) and the Ray executor are callers of this package.
Importing it is light: OpenCV, Pillow and PyTorch load with the first file.
"""

from fbcnn_plugins.batch.claims import Claim, claim_path, try_claim, wait_for_claim
from fbcnn_plugins.batch.job import (
    OutputExists, RestoreOptions, error_message, make_restorer, remove_stale_temporaries, restore_file,
    temporaries_of,
)
from fbcnn_plugins.batch.plan import DEFAULT_SUFFIX, Job, Plan, PlanError, plan_batch
from fbcnn_plugins.batch.progress import BatchProgress
from fbcnn_plugins.batch.records import BatchReport, FileRecord
from fbcnn_plugins.batch.run import WRITTEN_BY_ANOTHER_RUN, restore_one, run_jobs, run_plan, same_output_errors

__all__ = [
    "DEFAULT_SUFFIX", "WRITTEN_BY_ANOTHER_RUN", "BatchProgress", "BatchReport", "Claim", "FileRecord", "Job",
    "OutputExists", "Plan", "PlanError", "RestoreOptions", "claim_path", "error_message", "make_restorer",
    "plan_batch", "remove_stale_temporaries", "restore_file", "restore_one", "run_jobs", "run_plan",
    "same_output_errors", "temporaries_of", "try_claim", "wait_for_claim",
]
