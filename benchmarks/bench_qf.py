"""Accuracy and speed of the QF estimators on ../shared/data/val (a benchmark, not a test).

Accuracy: for each condition, the share of images whose estimate is within
the tolerance of the QF to undo (single: +-2 of the QF; double: +-5 of QF1,
or of min(QF1, QF2) for aligned or QF1 > QF2 cases).  Speed: the fast
FBCNN-D estimator on a 512x512 image against the brute-force loop of real
re-encodings (64 shifts x 100 QFs) on the same image, in the same run.

    python benchmarks/bench_qf.py                 # everything
    python benchmarks/bench_qf.py --limit 10      # first 10 images
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fbcnn_plugins.core.jpeg import double_jpeg, jpeg_roundtrip
from fbcnn_plugins.core.qf_estimation import brute_force_curve, dominant_quality, header_quality, select_dominant
from fbcnn_plugins.training.data import list_images, load_training_image

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"


def header_exactness(rgb: np.ndarray) -> dict[str, int]:
    """How many of the qualities 1..100 the header estimate gets exactly, per encoder (colour image)."""
    encoders = {
        "Pillow": lambda q: _pillow_jpeg(rgb, q),
        "OpenCV": lambda q: cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes(),
    }
    exact = {}
    for name, encode in encoders.items():
        exact[name] = 0
        for quality in range(1, 101):
            found = header_quality(io.BytesIO(encode(quality)))
            exact[name] += int(found is not None and found.exact and found.quality == quality)
    return exact


def _pillow_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def conditions(rng: np.random.Generator) -> list[tuple[str, callable, int, int]]:
    """(label, degrade(plane) -> plane, target QF, tolerance)."""
    cases = [(f"single {q}", lambda p, q=q: jpeg_roundtrip(p, q), q, 2) for q in (10, 20, 30, 40, 50, 60, 70, 80, 90)]
    for q1, q2 in ((10, 30), (10, 50), (30, 50), (20, 90)):
        cases.append((f"double ({q1},{q2}) shift (4,4)", lambda p, a=q1, b=q2: double_jpeg(p, a, b, (4, 4)), q1, 5))
        shift = tuple(int(v) for v in rng.integers(1, 8, size=2))
        cases.append((f"double ({q1},{q2}) shift {shift}", lambda p, a=q1, b=q2, s=shift: double_jpeg(p, a, b, s), q1, 5))
    for q1, q2, shift in ((30, 10, (0, 0)), (50, 20, (0, 0)), (10, 30, (0, 0)), (50, 20, (4, 4)), (70, 30, (2, 5))):
        label = f"{'aligned' if shift == (0, 0) else 'QF1>QF2'} ({q1},{q2}) shift {shift}"
        cases.append((label, lambda p, a=q1, b=q2, s=shift: double_jpeg(p, a, b, s), min(q1, q2), 5))
    return cases


def speed(plane: np.ndarray) -> tuple[float, float, float]:
    """Seconds for the fast estimator (all cores, then one thread; median of 3) and the brute force."""
    crop = np.ascontiguousarray(plane[:512, :512])
    degraded = jpeg_roundtrip(crop, 30)
    fast = []
    for workers in (None, 1):
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            dominant_quality(degraded, workers=workers)
            timings.append(time.perf_counter() - started)
        fast.append(float(np.median(timings)))
    started = time.perf_counter()
    select_dominant({(i, j): brute_force_curve(degraded, (i, j), jpeg_roundtrip) for i in range(8) for j in range(8)})
    brute = time.perf_counter() - started
    return fast[0], fast[1], brute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=VAL)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    parser.add_argument("--no-accuracy", action="store_true", help="only the speed comparison")
    args = parser.parse_args()
    files = list_images([args.images])[: args.limit]
    planes = [load_training_image(f, gray=True) for f in files]
    rng = np.random.default_rng(0)
    rgb = np.asarray(Image.open(files[0]).convert("RGB"))
    for encoder, count in header_exactness(rgb).items():
        print(f"header QF exact for {encoder} JPEGs at {count} of qualities 1..100")
    print(f"{len(planes)} images from {args.images} (Y channel)")
    print(f"{'condition':<34} {'within tol':>10} {'mean |err|':>10}")
    for label, degrade, target, tolerance in ([] if args.no_accuracy else conditions(rng)):
        errors = []
        for plane in planes:
            found = dominant_quality(degrade(plane)).quality
            errors.append(abs((found if found is not None else 0) - target))
        hits = np.mean(np.array(errors) <= tolerance) * 100
        print(f"{label:<34} {hits:>9.0f}% {np.mean(errors):>10.1f}   (tolerance +-{tolerance})", flush=True)
    if not args.no_speed:
        largest = max(planes, key=lambda p: p.shape[0] * p.shape[1])
        fast, fast_one_thread, brute = speed(largest)
        size = f"{min(512, largest.shape[1])}x{min(512, largest.shape[0])}"
        print(f"speed on {size}: fast {fast:.2f} s ({os.cpu_count()} threads; {fast_one_thread:.2f} s on one), "
              f"brute force (one encoder loop) {brute:.1f} s: {brute / fast:.0f}x faster ({brute / fast_one_thread:.0f}x)")


if __name__ == "__main__":
    main()
