"""The quality factor (QF) that drives restoration, and where it came from.

Every front end (CLI, GIMP, VapourSynth) reports a :class:`QFEstimate`, so a
user always sees both the number and its source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

QF_MIN, QF_MAX = 1, 100

#: Values accepted for ``qf`` besides an integer.  "auto" is the network's prediction;
#: "dominant" is the FBCNN-D pixel estimator; "header" (files only) the JPEG tables' quality.
QF_MODES = ("auto", "predicted", "dominant", "header")


@dataclass
class QFEstimate:
    """The QF used for a restoration.

    ``value`` drives the network; ``source`` is ``"given"``, ``"predicted"``,
    ``"dominant"`` or ``"header"``; ``predicted`` is the network's own
    estimate whenever it was computed (a float, before rounding); ``shift``
    and ``double_compressed`` come with the dominant estimate; ``reason`` says, for ``auto``,
    which evidence decided and why (see :mod:`fbcnn_plugins.core.qf_choice`); ``chroma`` is a
    header estimate's chroma subsampling (``"4:2:0"``, ``"4:2:2"``, ``"4:4:4"``), which changes
    the strength a header QF calls for.
    """

    value: int
    source: str
    predicted: float | None = None
    shift: tuple[int, int] | None = None
    double_compressed: bool | None = None
    reason: str | None = None
    chroma: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def qf_to_scalar(qf: float) -> float:
    """The network's control input for a QF: q = 1 - QF/100."""
    return 1.0 - float(qf) / 100.0


def scalar_to_qf(q: float) -> float:
    return (1.0 - float(q)) * 100.0


def clamp_qf(qf: float) -> int:
    return int(min(QF_MAX, max(QF_MIN, round(qf))))


def parse_qf(qf: int | str | None) -> int | str:
    """Normalise a user's ``qf`` into an int 1..100 or one of :data:`QF_MODES`."""
    if qf is None:
        return "auto"
    if isinstance(qf, str):
        text = qf.strip().lower()
        if text in QF_MODES:
            return text
        try:
            qf = int(text)
        except ValueError:
            raise ValueError(f"qf must be an integer 1..100 or one of {', '.join(QF_MODES)}, got {qf!r}") from None
    if isinstance(qf, bool) or not isinstance(qf, (int, float)) or int(qf) != qf:
        raise ValueError(f"qf must be an integer 1..100, got {qf!r}")
    if not QF_MIN <= int(qf) <= QF_MAX:
        raise ValueError(f"qf must be in {QF_MIN}..{QF_MAX}, got {qf}")
    return int(qf)
