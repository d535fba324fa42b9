"""Frames per second of the VapourSynth filter, and its overhead over calling the core directly.

A benchmark, not a test.  For each frame size it restores the same frames
in one run: through ``fbcnn_plugins.vapoursynth.fbcnn`` on the real
VapourSynth core, and through ``Restorer.restore`` in a plain loop.  The overhead compares the
plain loop with VapourSynth serving one request at a time; the parallel
figure is what vspipe gets when it asks for several frames at once.

Engine and precision are the defaults (``auto``: the fastest this machine computes
natively) unless ``--backends`` / ``--precisions`` name others.

    python benchmarks/bench_vapoursynth.py
    python benchmarks/bench_vapoursynth.py --sizes 720x480 --precisions fp32 bf16 --qf 25 --frames 8
    python benchmarks/bench_vapoursynth.py --sizes 1920x1080 --qf predicted --backends pytorch openvino
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time

import numpy as np
import torch

# Before VapourSynth's core loads its plugins: a plugin that bundles its own OpenVINO runtime
# (vs-mlrt's) would otherwise make the Python package refuse to load, and the filter fall back
# to PyTorch.  (In vspipe the core exists before the script runs; see docs/benchmarks.md.)
with contextlib.suppress(Exception):
    import openvino  # noqa: F401

import vapoursynth as vs

from fbcnn_plugins.core.device import precision_name
from fbcnn_plugins.core.jpeg import jpeg_roundtrip
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.vapoursynth import fbcnn


def make_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(count):
        base = np.stack([128 + 80 * np.sin((x + 7 * i) / 40), 100 + 0.1 * y, 160 - 0.05 * x], axis=2)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        frames.append(jpeg_roundtrip(noisy, 25).astype(np.float32) / 255.0)
    return frames


def as_clip(frames: list[np.ndarray]) -> vs.VideoNode:
    height, width = frames[0].shape[:2]
    blank = vs.core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=len(frames))

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][:, :, p])
        return out

    return vs.core.std.ModifyFrame(blank, blank, fill)


def measure(width: int, height: int, count: int, precision: str, qf: int | None, backend: str = "auto") -> dict:
    """Time each frame through both paths back to back and compare them frame by frame.

    Pairs (alternating which path goes first) cancel the drift of a shared, noisy
    machine; the overhead is the median of the per-frame time ratios.
    """
    frames = make_frames(width, height, count + 1)  # the last frame only warms both paths up
    precision_arg = None if precision == "auto" else precision
    with _backend(backend):
        clip = fbcnn(as_clip(frames), qf=qf, device="cpu", precision=precision_arg)
        restorer = Restorer(device="cpu", precision=precision_arg)
    # Full-size warm-up outside the timings: the first call at a tile shape pays one-off kernel setup.
    restorer.restore(frames[count], qf=qf)
    _ = clip.get_frame(count).props["FBCNN_QF"]

    def time_core(n: int) -> float:
        started = time.perf_counter()
        restorer.restore(frames[n], qf=qf)
        return time.perf_counter() - started

    def time_vs(n: int) -> float:  # one request at a time, like the core call: the layer's own cost
        started = time.perf_counter()
        _ = clip.get_frame(n).props["FBCNN_QF"]
        return time.perf_counter() - started

    core_times, vs_times = [], []
    for n in range(count):
        if n % 2:
            vs_times.append(time_vs(n))
            core_times.append(time_core(n))
        else:
            core_times.append(time_core(n))
            vs_times.append(time_vs(n))
    ratios = np.array(vs_times) / np.array(core_times)
    started = time.perf_counter()
    with _backend(backend):
        again = restored_again(frames[:count], qf, precision_arg)
    for frame in again.frames():  # vspipe-style, parallel requests
        _ = frame.props["FBCNN_QF"]
    parallel_seconds = time.perf_counter() - started
    return {
        "size": f"{width}x{height}", "precision": precision_name(restorer.precision), "backend": restorer.backend,
        "frames": count, "qf": "predicted" if qf is None else qf,
        "vs_fps": count / sum(vs_times), "vs_parallel_fps": count / parallel_seconds,
        "core_fps": count / sum(core_times), "overhead_pct": 100.0 * (float(np.median(ratios)) - 1.0),
        "overhead_range_pct": (100.0 * (ratios.min() - 1.0), 100.0 * (ratios.max() - 1.0)),
    }


@contextlib.contextmanager
def _backend(backend: str):
    """The filter has no engine argument (the core picks one): FBCNN_BACKEND, which the core reads, chooses it."""
    import os

    before = os.environ.get("FBCNN_BACKEND")
    if backend != "auto":
        os.environ["FBCNN_BACKEND"] = backend
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FBCNN_BACKEND", None)
        else:
            os.environ["FBCNN_BACKEND"] = before


def restored_again(frames: list[np.ndarray], qf: int | None, precision: str | None) -> vs.VideoNode:
    """A fresh filter instance, so no frame comes from the first instance's cache."""
    return fbcnn(as_clip(frames), qf=qf, device="cpu", precision=precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1920x1080", "720x480"])
    parser.add_argument("--precisions", nargs="+", default=["auto"], help="auto, fp32, bf16 (default: auto)")
    parser.add_argument("--backends", nargs="+", default=["auto"], help="auto, pytorch, openvino (default: auto)")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--qf", nargs="+", default=["predicted", "25"],
                        help="'predicted' (each path estimates the QF) and/or fixed QF values (the layer's cost alone)")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for backend, precision, qf in itertools.product(args.backends, args.precisions, args.qf):
            r = measure(width, height, args.frames, precision, None if qf == "predicted" else int(qf), backend)
            low, high = r["overhead_range_pct"]
            print(f"{r['size']:<10} {r['backend']:<8} {r['precision']:<5} qf={r['qf']:<9} frames={r['frames']}  core {r['core_fps']:.3f} fps  "
                  f"VapourSynth {r['vs_fps']:.3f} fps (overhead median {r['overhead_pct']:+.1f}%, "
                  f"frames {low:+.1f}..{high:+.1f}%)  "
                  f"VapourSynth with parallel requests {r['vs_parallel_fps']:.3f} fps", flush=True)
    print(f"VapourSynth threads: {vs.core.num_threads}, torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
