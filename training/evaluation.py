"""Measuring restoration quality the way the paper reports it.

Clean images are compressed with the same libjpeg path as training
(:mod:`fbcnn_plugins.core.jpeg`), restored through the public ``Restorer``
(so the numbers describe what users get, tiling included), and compared in
8-bit: RGB for colour models, MATLAB-style Y for gray ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fbcnn_plugins.core.jpeg import double_jpeg, jpeg_roundtrip
from fbcnn_plugins.core.metrics import psnr, psnr_b, ssim
from fbcnn_plugins.core.restorer import Restorer

from .image_files import list_images, load_training_image

QF_MODES = ("predicted", "given", "dominant")


@dataclass
class Condition:
    """One degradation: single JPEG at ``qf``, or double JPEG (qf1, qf2) with a grid shift."""

    qf: int
    qf2: int | None = None
    shift: tuple[int, int] = (0, 0)

    @property
    def label(self) -> str:
        if self.qf2 is None:
            return f"QF {self.qf}"
        return f"QF ({self.qf},{self.qf2}) shift ({self.shift[0]},{self.shift[1]})"

    @property
    def true_qf(self) -> int:
        """The QF a user would want undone: the stronger (smaller) compression."""
        return self.qf if self.qf2 is None else min(self.qf, self.qf2)

    def degrade(self, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reference, degraded): double JPEG drops shifted rows/columns from both."""
        if self.qf2 is None:
            return clean, jpeg_roundtrip(clean, self.qf)
        rows, cols = self.shift
        return clean[rows:, cols:], double_jpeg(clean, self.qf, self.qf2, self.shift)


@dataclass
class ConditionResult:
    condition: Condition
    jpeg: dict[str, float] = field(default_factory=dict)
    restored: dict[str, float] = field(default_factory=dict)
    qf_used: float = 0.0
    images: int = 0

    def to_dict(self) -> dict:
        return {
            "condition": self.condition.label, "qf": self.condition.qf, "qf2": self.condition.qf2,
            "shift": list(self.condition.shift), "images": self.images, "jpeg": self.jpeg,
            "restored": self.restored, "gain_psnr": self.restored["psnr"] - self.jpeg["psnr"],
            "mean_qf_used": self.qf_used,
        }


def measure(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(reference, test), "ssim": ssim(reference, test), "psnr_b": psnr_b(reference, test)}


def load_eval_images(folders: Sequence[str | Path], gray: bool, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    files = list_images(folders)[:limit] if limit else list_images(folders)
    images = [(str(path), load_training_image(path, gray)) for path in files]
    for name, image in images:
        if min(image.shape[:2]) < MIN_EVAL_SIDE:
            raise ValueError(f"{name}: {image.shape[1]}x{image.shape[0]} is too small to measure "
                             f"(SSIM and PSNR-B need at least {MIN_EVAL_SIDE}x{MIN_EVAL_SIDE})")
    return images


#: The smallest side an evaluation image may have: two JPEG blocks (PSNR-B's block edges,
#: a double JPEG's grid shift) and more than SSIM's 7-pixel window.
MIN_EVAL_SIDE = 16


def evaluate(
    images: list[tuple[str, np.ndarray]],
    conditions: Sequence[Condition],
    restorer: Restorer | None,
    qf_mode: str = "predicted",
    progress: Callable[[str], None] | None = None,
) -> list[ConditionResult]:
    """Mean PSNR / SSIM / PSNR-B of the JPEG input and (if ``restorer``) of the restored output."""
    if qf_mode not in QF_MODES:
        raise ValueError(f"qf mode must be one of {', '.join(QF_MODES)}, got {qf_mode!r}")
    results = []
    for condition in conditions:
        jpeg_scores, restored_scores, used = [], [], []
        for name, clean in images:
            reference, degraded = condition.degrade(clean)
            jpeg_scores.append(measure(reference, degraded))
            if restorer is not None:
                qf = {"given": condition.true_qf, "dominant": "dominant"}.get(qf_mode)
                result = restorer.restore(degraded, qf=qf)
                restored_scores.append(measure(reference, result.image))
                used.append(result.qf.value)
            if progress:
                progress(f"{condition.label}: {name}")
        result = ConditionResult(condition, _mean(jpeg_scores), _mean(restored_scores) if restored_scores else {},
                                 float(np.mean(used)) if used else float("nan"), len(images))
        results.append(result)
    return results


def _mean(scores: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
