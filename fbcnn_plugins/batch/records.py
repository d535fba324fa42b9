"""What a batch reports: one record per input, and the counts over them.

A record is a plain dict (a TypedDict for the type checker) so that ``fbcnn restore --json``
prints it as it is and a Ray worker can send it back as JSON.  Exactly one of ``error``,
``skipped`` or the restoration's fields (``qf``, ``seconds``, ...) says how the file ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict


class FileRecord(TypedDict, total=False):
    input: str
    output: str
    #: Why the input was left alone ("output exists", "written by fbcnn-plugins ...").
    skipped: str
    #: What went wrong, naming the file; the batch went on with the other files.
    error: str
    qf: int
    qf_source: str
    qf_predicted: float | None
    qf_reason: str
    size: list[int]
    frames: int
    seconds: float
    warnings: list[str]
    #: XCF inputs: the QF of each restored layer, and the layers left as they were.
    layers: list[dict[str, Any]]
    skipped_layers: list[dict[str, Any]]
    #: Said of a file whose report was lost but whose complete output is in place.
    note: str


@dataclass
class BatchReport:
    """Every record of a run, in the order the files were settled."""

    files: list[FileRecord] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for record in self.files if "error" in record)

    @property
    def skipped(self) -> int:
        return sum(1 for record in self.files if "skipped" in record)

    @property
    def restored(self) -> int:
        return len(self.files) - self.failed - self.skipped

    @property
    def ok(self) -> bool:
        """No file failed (skipped files are done work: another run, or an earlier one, wrote them)."""
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        return {"restored": self.restored, "skipped": self.skipped, "failed": self.failed, "files": self.files}
