"""The fbcnn filter against the VapourSynth deblockers that install from PyPI, on real codec output.

A benchmark, not a test.  It decodes the clips made by make_peer_clips.py with
BestSource (``core.bs``), runs each method on the decoded YUV, and scores the
result against the reference frames: PSNR in RGB (the clip converted with its
own matrix, range and chroma location) and on Y (the reference converted to
the clip's YUV the same way), averaged over frames, and frames per second of
the whole chain, decoder included, in one run on one machine.  Each peer is
run at a few strengths and reported at its best on each clip, so the
comparison is with the peer tuned after the fact; fbcnn runs blind (it
predicts each frame's QF).

Peers, each skipped when its plugin is missing:
``deblock.Deblock`` (pip install vapoursynth-deblock), ``dctf.DCTFilter``
(vapoursynth-dctfilter) and vsjetpack's ``vsdenoise.deblock_qed`` (vsjetpack; it also needs
vapoursynth-zsmooth).

    python benchmarks/make_peer_clips.py --out /tmp/peer_clips
    python benchmarks/bench_vs_peers.py /tmp/peer_clips
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import vapoursynth as vs
from PIL import Image

from fbcnn_plugins.vapoursynth import fbcnn

core = vs.core
Method = Callable[[vs.VideoNode], vs.VideoNode]


def peer_methods() -> dict[str, dict[str, Method]]:
    """Each installed peer with the settings it is tried at (the best one is reported)."""
    peers: dict[str, dict[str, Method]] = {}
    if hasattr(core, "deblock"):
        peers["deblock.Deblock"] = {f"quant={q}": (lambda c, q=q: core.deblock.Deblock(c, quant=q)) for q in (25, 35, 45)}
    if hasattr(core, "dctf"):
        factors = {
            "mild": [1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2],
            "strong": [1, 1, 1, 0.7, 0.5, 0.3, 0.1, 0],
            "stronger": [1, 1, 0.7, 0.4, 0.2, 0.1, 0, 0],
        }
        peers["dctf.DCTFilter"] = {name: (lambda c, f=f: core.dctf.DCTFilter(c, factors=f)) for name, f in factors.items()}
    try:
        from vsdenoise import deblock_qed
    except ImportError:
        pass
    else:
        peers["vsdenoise.deblock_qed"] = {
            f"quant={q}": (lambda c, q=q: deblock_qed(c, quant=q)) for q in ((24, 26), (32, 34), (40, 42))
        }
    return peers


def reference_clip(folder: Path, like: vs.VideoNode) -> vs.VideoNode:
    """The reference PNG frames as an RGB24 clip."""
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    blank = core.std.BlankClip(like, format=vs.RGB24, length=len(frames))

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][:, :, p])
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def planes(frame: vs.VideoFrame) -> np.ndarray:
    """The planes of an RGB frame as one (3, H, W) array."""
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])


def score(output: vs.VideoNode, source: vs.VideoNode, reference_rgb: vs.VideoNode) -> dict[str, float]:
    """RGB and Y PSNR against the reference, and fps of rendering ``output`` (decoder included)."""
    props = source.get_frame(0).props
    as_rgb = core.resize.Bicubic(output, format=vs.RGB24)  # reads matrix, range and siting from the frames
    reference_yuv = core.resize.Bicubic(
        reference_rgb, format=source.format.id, matrix=int(props["_Matrix"]),
        range=int(props["_Range"]), chromaloc=int(props.get("_ChromaLocation", 0)),
    )
    start = time.perf_counter()
    rendered = [np.asarray(f[0]).copy() for f in output.frames(close=True)]  # Y; RGB is compared below
    seconds = time.perf_counter() - start
    rgb, luma = [], []
    for n, y in enumerate(rendered):
        rgb.append(psnr(planes(as_rgb.get_frame(n)), planes(reference_rgb.get_frame(n))))
        luma.append(psnr(y, np.asarray(reference_yuv.get_frame(n)[0])))
    return {"rgb": float(np.mean(rgb)), "y": float(np.mean(luma)), "fps": len(rendered) / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", type=Path, help="the folder make_peer_clips.py wrote")
    parser.add_argument("--threads", type=int, default=None, help="core.num_threads (default: VapourSynth's)")
    args = parser.parse_args(argv)
    if not hasattr(core, "bs"):
        print("bench_vs_peers: needs BestSource: pip install vapoursynth-bestsource", file=sys.stderr)
        return 2
    if args.threads:
        core.num_threads = args.threads
    methods: dict[str, dict[str, Method]] = {"decoded (no filter)": {"": lambda c: c}, **peer_methods()}
    methods["fbcnn (blind, default)"] = {"": lambda c: fbcnn(c)}
    rows = []
    for name in ("mpeg2.mkv", "mjpeg.mkv"):
        source = core.bs.VideoSource(str(args.clips / name))
        reference = reference_clip(args.clips / "reference", source)
        for method, settings in methods.items():
            try:
                results = {setting: score(run(source), source, reference) for setting, run in settings.items()}
            except (vs.Error, AttributeError) as error:  # a peer whose own dependencies are missing
                print(f"{name:<10} {method:<24} skipped: {error}", flush=True)
                continue
            best = max(results, key=lambda s: results[s]["rgb"])
            rows.append((name, method, best, results[best]))
            print(f"{name:<10} {method:<24} {best:<12} RGB {results[best]['rgb']:6.2f} dB  "
                  f"Y {results[best]['y']:6.2f} dB  {results[best]['fps']:7.2f} fps", flush=True)
    print("\n| clip | method | best setting | RGB PSNR | Y PSNR | fps |")
    print("|---|---|---|---|---|---|")
    for name, method, setting, r in rows:
        print(f"| {name} | {method} | {setting or '-'} | {r['rgb']:.2f} | {r['y']:.2f} | {r['fps']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
