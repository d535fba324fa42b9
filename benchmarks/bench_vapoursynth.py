"""Frames per second of the VapourSynth filter, and its overhead over calling the core directly.

A benchmark, not a test.  For each frame size it restores the same frames
in one run: through ``fbcnn_plugins.vapoursynth.fbcnn`` on the real
VapourSynth core, and through ``Restorer.restore`` in a plain loop.  The overhead compares the
plain loop with VapourSynth serving one request at a time; the parallel
figure is what vspipe gets when it asks for several frames at once.

    python benchmarks/bench_vapoursynth.py
    python benchmarks/bench_vapoursynth.py --sizes 720x480 --precisions fp32 bf16 --frames 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import vapoursynth as vs

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


def measure(width: int, height: int, count: int, precision: str) -> dict:
    frames = make_frames(width, height, count + 1)  # the last frame only warms both paths up
    precision_arg = None if precision == "fp32" else precision
    clip = fbcnn(as_clip(frames), device="cpu", precision=precision_arg)
    restorer = Restorer(device="cpu", precision=precision_arg)
    # Full-size warm-up outside the timings: the first call at a tile shape pays one-off kernel setup.
    restorer.restore(frames[count])
    _ = clip.get_frame(count).props["FBCNN_QF"]
    started = time.perf_counter()
    for frame in frames[:count]:
        restorer.restore(frame)
    core_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for n in range(count):  # one request at a time, like the plain loop above: the layer's own cost
        _ = clip.get_frame(n).props["FBCNN_QF"]
    sequential_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for frame in restored_again(frames[:count], precision_arg).frames():  # vspipe-style, parallel requests
        _ = frame.props["FBCNN_QF"]
    parallel_seconds = time.perf_counter() - started
    return {
        "size": f"{width}x{height}", "precision": precision, "frames": count,
        "vs_fps": count / sequential_seconds, "vs_parallel_fps": count / parallel_seconds,
        "core_fps": count / core_seconds, "overhead_pct": 100.0 * (sequential_seconds / core_seconds - 1.0),
    }


def restored_again(frames: list[np.ndarray], precision: str | None) -> vs.VideoNode:
    """A fresh filter instance, so no frame comes from the first instance's cache."""
    return fbcnn(as_clip(frames), device="cpu", precision=precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1920x1080", "720x480"])
    parser.add_argument("--precisions", nargs="+", default=["fp32"])
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for precision in args.precisions:
            rows.append(measure(width, height, args.frames, precision))
            r = rows[-1]
            print(f"{r['size']:<10} {r['precision']:<5} frames={r['frames']}  core {r['core_fps']:.3f} fps  "
                  f"VapourSynth {r['vs_fps']:.3f} fps (overhead {r['overhead_pct']:+.1f}%)  "
                  f"VapourSynth with parallel requests {r['vs_parallel_fps']:.3f} fps", flush=True)
    print(f"VapourSynth threads: {vs.core.num_threads}, torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
