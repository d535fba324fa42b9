"""FBCNN against the classical JPEG-artifact removers that install here (a benchmark, not a test).

Peers: ffmpeg's ``spp`` post-processing filter, BM3D (PyPI ``bm3d``) and
OpenCV's non-local means.  None of them knows the JPEG quality, so each gets
its strength tuned per QF on the first ``--calibrate`` images (the best of a
small grid by mean PSNR); the comparison runs on the images after those.
FBCNN runs blind twice: with the QF its own branch predicts, and with the
FBCNN-D estimate from the pixels (what ``fbcnn restore`` uses for an image
without a JPEG header).  Colour images, RGB PSNR, JPEG through
libjpeg as in training and ``fbcnn eval``.

    python benchmarks/compare_peers.py --limit 12
    python benchmarks/compare_peers.py --peers spp nlm --qf 10 40

Needs ``ffmpeg`` on PATH for spp and ``pip install bm3d`` for BM3D; a peer
that is missing is reported and left out.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from fbcnn_plugins.core.jpeg import jpeg_roundtrip
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.training.data import list_images

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"
Method = Callable[[np.ndarray, float], np.ndarray]  # (RGB uint8 JPEG, strength) -> RGB uint8


def ffmpeg_spp(image: np.ndarray, qp: float) -> np.ndarray:
    """spp at full chroma (4:4:4), so the RGB<->YUV round trip costs no chroma resolution."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "out.png"
        Image.fromarray(image).save(source)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-vf",
             f"format=yuv444p,spp=quality=6:qp={int(qp)}:mode=soft,format=rgb24", "-frames:v", "1", str(target)],
            check=True,
        )
        return np.asarray(Image.open(target).convert("RGB"))


def bm3d_rgb(image: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    out = bm3d.bm3d_rgb(image.astype(np.float32) / 255.0, sigma_psd=sigma / 255.0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def opencv_nlm(image: np.ndarray, h: float) -> np.ndarray:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


PEERS: dict[str, tuple[Method, tuple[float, ...], str]] = {
    "spp": (ffmpeg_spp, (1, 2, 3, 4, 6, 8, 12, 16, 24), "qp"),
    "bm3d": (bm3d_rgb, (6, 12, 20, 28, 36), "sigma"),
    "nlm": (opencv_nlm, (3, 5, 8, 11, 15, 20), "h"),
}


def available(name: str) -> str | None:
    """Why a peer cannot run here, or None."""
    if name == "spp" and shutil.which("ffmpeg") is None:
        return "ffmpeg not on PATH"
    if name == "bm3d":
        try:
            import bm3d  # noqa: F401
        except ImportError:
            return "bm3d not installed (pip install bm3d)"
    return None


def calibrate(method: Method, grid: tuple[float, ...], images: list[np.ndarray], qf: int) -> float:
    scores = []
    for strength in grid:
        scores.append(np.mean([psnr(clean, method(jpeg_roundtrip(clean, qf), strength)) for clean in images]))
    return grid[int(np.argmax(scores))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=VAL)
    parser.add_argument("--qf", type=int, nargs="+", default=[10, 20, 30, 40])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--limit", type=int, default=12, help="images compared (after the calibration ones)")
    parser.add_argument("--calibrate", type=int, default=2, help="images used to tune each peer's strength")
    parser.add_argument("--model", help="FBCNN model (default: the bundled one)")
    args = parser.parse_args()

    files = list_images([args.images])
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files[: args.calibrate + args.limit]]
    tuning, test = images[: args.calibrate], images[args.calibrate :]
    peers = []
    for name in args.peers:
        reason = available(name)
        if reason:
            print(f"{name}: left out ({reason})")
        else:
            peers.append(name)
    restorer = Restorer(args.model, device="cpu")
    restorer.restore(tuning[0][:64, :64] if tuning else test[0][:64, :64])  # load the model outside the timings
    megapixels = sum(im.shape[0] * im.shape[1] for im in test) / 1e6
    print(f"{len(test)} test images ({megapixels:.2f} MP), {len(tuning)} calibration images, from {args.images}")
    fbcnn_modes = ("predicted", "dominant")
    header = f"{'QF':>3} {'JPEG dB':>8}" + "".join(f"{'FBCNN ' + m:>18}" for m in fbcnn_modes)
    header += "".join(f"{name:>22}" for name in peers)
    print(header)
    for qf in args.qf:
        jpegs = [jpeg_roundtrip(clean, qf) for clean in test]
        base = np.mean([psnr(c, j) for c, j in zip(test, jpegs)])
        cells = []
        for mode in fbcnn_modes:
            started = time.perf_counter()
            qf_request = None if mode == "predicted" else mode
            gain = np.mean([psnr(c, restorer.restore(j, qf=qf_request).image) for c, j in zip(test, jpegs)]) - base
            cells.append(f"{gain:+.2f} {(time.perf_counter() - started) / megapixels:5.1f}s")
        for name in peers:
            method, grid, knob = PEERS[name]
            strength = calibrate(method, grid, tuning, qf)
            started = time.perf_counter()
            gain = np.mean([psnr(c, method(j, strength)) for c, j in zip(test, jpegs)]) - base
            seconds = (time.perf_counter() - started) / megapixels
            cells.append(f"{gain:+.2f} {seconds:5.1f}s {knob}={strength:g}")
        fbcnn_cells = "".join(f"{c:>18}" for c in cells[: len(fbcnn_modes)])
        peer_cells = "".join(f"{c:>22}" for c in cells[len(fbcnn_modes) :])
        print(f"{qf:>3} {base:>8.2f}{fbcnn_cells}{peer_cells}", flush=True)
    print("cells: mean PSNR gain over the JPEG input (dB), seconds per megapixel, tuned strength")


if __name__ == "__main__":
    main()
