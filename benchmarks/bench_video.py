"""The fbcnn filter on real codec output: MPEG-2, H.264, HEVC and MJPEG clips (a benchmark, not a test).

Each validation photo becomes a clip of a camera moving over it (pan, zoom, a little
rotation; every other clip with an object moving across it), made by the same code as the
video training pairs (``fbcnn_plugins.training.video_clips``), from photos the training never
saw.  ffmpeg encodes each clip with each codec setting; BestSource decodes it, as a
restorer's script would; the filter runs on the decoded YUV clip.  For every method it
reports the PSNR gain over the decoded clip on Y (against the source converted to the clip's
YUV) and on RGB (the output converted with the clip's own colorimetry), and **flicker**: the
mean absolute difference between the output's and the source's frame-to-frame changes (lower
is steadier), beside the decoded clip's.

Methods: the filter's default (``fbcnn(clip)``), the photo model's default, the default model
at each fixed strength, and the VapourSynth deblockers that are installed (``deblock.Deblock``,
``dctf.DCTFilter``), each at its best setting per codec.

    python benchmarks/bench_video.py                       # 4 photos x 16 frames, 480x272
    python benchmarks/bench_video.py --photos 8 --frames 24 --json video.json
    python benchmarks/bench_video.py --speed 1920x1080 --frames 4   # fps, video model against photo model
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import vapoursynth as vs
from PIL import Image

from fbcnn_plugins.core.catalog import default_model_entry
from fbcnn_plugins.training.video_clips import Encoding, camera_frames, check_tools, encode
from fbcnn_plugins.vapoursynth import fbcnn
from fbcnn_plugins.vapoursynth.colorimetry import frame_colorimetry

REPO = Path(__file__).resolve().parents[1]
core = vs.core
Method = Callable[[vs.VideoNode], vs.VideoNode]
DEFAULT_VAL = REPO.parent / "shared" / "data" / "val"
#: The settings people meet: MPEG-2 at DVD-like quantisers (about 0.6, 0.3 and 0.15 bits per pixel at
#: 480x272; the bitrate each gave is reported), x264 and
#: x265 from good to poor, MJPEG as a JPEG-only reference.
ENCODINGS = [
    Encoding("mpeg2", 8), Encoding("mpeg2", 14), Encoding("mpeg2", 22),
    Encoding("h264", 28), Encoding("h264", 32), Encoding("h264", 38),
    Encoding("hevc", 30), Encoding("hevc", 34), Encoding("hevc", 38),
    Encoding("mjpeg", 12),
]
FIXED_QFS = (10, 30, 50, 70, 90)


def load_photos(folder: Path, count: int) -> list[np.ndarray]:
    """``count`` photos from the validation folder, or scikit-image's when it is missing."""
    if folder.is_dir():
        paths = sorted(folder.rglob("*.png"))
        step = max(1, len(paths) // count)  # spread over both validation sets
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths[::step][:count]]
    from skimage import data

    samples = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    return samples[:count]


@dataclass
class Clip:
    source: np.ndarray  # (T, H, W, 3) uint8
    path: Path
    kbit_per_s: float


def make_clips(photos: list[np.ndarray], encoding: Encoding, folder: Path, *, frames: int, width: int, height: int,
               seed: int) -> list[Clip]:
    clips = []
    for index, photo in enumerate(photos):
        rng = np.random.default_rng([seed, index])
        sprite = photos[(index + 1) % len(photos)][:96, :128] if index % 2 else None
        source = camera_frames(photo, rng, frames=frames, width=width, height=height, sprite=sprite)
        path = encode(source, encoding, folder / f"{encoding.codec}-{encoding.level:g}-{index}.mkv")
        clips.append(Clip(source, path, path.stat().st_size * 8 / (frames / 24) / 1000))
    return clips


def source_clip(frames: np.ndarray, like: vs.VideoNode) -> vs.VideoNode:
    blank = core.std.BlankClip(like, format=vs.RGB24, length=frames.shape[0])

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n, :, :, p])
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def render(clip: vs.VideoNode) -> tuple[np.ndarray, np.ndarray]:
    """Y planes (T, H, W) and RGB frames (T, H, W, 3) of a YUV clip, RGB by the clip's own colorimetry."""
    rgb = core.resize.Bicubic(clip, format=vs.RGB24)
    luma = np.stack([np.asarray(f[0]).copy() for f in clip.frames(close=True)])
    colour = np.stack([np.stack([np.asarray(f[p]) for p in range(3)], axis=-1) for f in rgb.frames(close=True)])
    return luma, colour


def flicker(frames: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference between the frame-to-frame changes of ``frames`` and of ``reference``."""
    return float(np.mean(np.abs(np.diff(frames.astype(np.float32), axis=0) - np.diff(reference.astype(np.float32), axis=0))))


def score(decoded: vs.VideoNode, method: Method, clips: list[Clip]) -> dict[str, float]:
    """PSNR (Y, RGB), flicker and fps of ``method`` on ``decoded``: the clips spliced in order.

    One splice per codec setting means one filter instance (one model compile) per method;
    flicker is measured within each clip, never across the cut between two of them.
    """
    colorimetry = frame_colorimetry(decoded.get_frame(0).props, None)
    source = np.concatenate([c.source for c in clips])
    reference = source_clip(source, decoded)
    reference_yuv = core.resize.Bicubic(reference, format=decoded.format.id, matrix=colorimetry.matrix,
                                        range_s=colorimetry.range_name, chromaloc=colorimetry.chroma_location)
    reference_y = np.stack([np.asarray(f[0]).copy() for f in reference_yuv.frames(close=True)])
    start = time.perf_counter()
    luma, colour = render(method(decoded))
    seconds = time.perf_counter() - start
    cuts = np.cumsum([c.source.shape[0] for c in clips])[:-1]
    return {
        "y": float(np.mean([psnr(a, b) for a, b in zip(luma, reference_y)])),
        "rgb": float(np.mean([psnr(a, b) for a, b in zip(colour, source)])),
        "flicker": float(np.mean([flicker(a, b) for a, b in zip(np.split(luma, cuts), np.split(reference_y, cuts))])),
        "fps": luma.shape[0] / seconds,
    }


def methods(photo_model: str) -> dict[str, dict[str, Method]]:
    """Each method with the settings it is tried at (the best setting per codec is reported)."""
    chosen: dict[str, dict[str, Method]] = {
        "decoded": {"": lambda c: c},
        "fbcnn default": {"": lambda c: fbcnn(c)},
        f"fbcnn, {photo_model}": {"": lambda c: fbcnn(c, model=photo_model)},
        "fbcnn, fixed QF": {f"qf={q}": (lambda c, q=q: fbcnn(c, qf=q)) for q in FIXED_QFS},
    }
    if hasattr(core, "deblock"):
        chosen["deblock.Deblock"] = {f"quant={q}": (lambda c, q=q: core.deblock.Deblock(c, quant=q)) for q in (25, 35, 45)}
    if hasattr(core, "dctf"):
        factors = {"mild": [1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2], "strong": [1, 1, 1, 0.7, 0.5, 0.3, 0.1, 0]}
        chosen["dctf.DCTFilter"] = {name: (lambda c, f=f: core.dctf.DCTFilter(c, factors=f)) for name, f in factors.items()}
    return chosen


def run(photos: list[np.ndarray], encodings: list[Encoding], *, frames: int, width: int, height: int,
        seed: int, log: Callable[[str], None] = print) -> list[dict]:
    photo_model = default_model_entry(False).name
    rows = []
    with tempfile.TemporaryDirectory(prefix="fbcnn-bench-video-") as folder:
        for encoding in encodings:
            clips = make_clips(photos, encoding, Path(folder), frames=frames, width=width, height=height, seed=seed)
            decoded = core.std.Splice([core.bs.VideoSource(str(c.path), cachemode=0) for c in clips])
            results = {name: {setting: score(decoded, method, clips) for setting, method in settings.items()}
                       for name, settings in methods(photo_model).items()}
            base = results["decoded"][""]
            for name, settings in results.items():
                best = max(settings, key=lambda s: settings[s]["y"])
                r = settings[best]
                row = {"encoding": encoding.label, "kbit_per_s": float(np.mean([c.kbit_per_s for c in clips])),
                       "method": name, "setting": best, "y_gain": r["y"] - base["y"], "rgb_gain": r["rgb"] - base["rgb"],
                       "y": r["y"], "rgb": r["rgb"], "flicker": r["flicker"], "decoded_flicker": base["flicker"], "fps": r["fps"]}
                rows.append(row)
                log(f"{encoding.label:<16} {row['kbit_per_s']:6.0f} kb/s  {name:<28} {best or '-':<10} "
                    f"Y {row['y']:6.2f} ({row['y_gain']:+.2f})  RGB {row['rgb']:6.2f} ({row['rgb_gain']:+.2f})  "
                    f"flicker {row['flicker']:.3f} / {row['decoded_flicker']:.3f}")
    return rows


def filter_speed(width: int, height: int, frames: int, rounds: int = 2) -> dict[str, float]:
    """Frames per second of ``fbcnn(clip)`` with the video model and with the photo model on the same
    YUV frames, alternating rounds so that a shared machine's drift hits both alike."""
    rng = np.random.default_rng(0)
    pictures = [np.clip(rng.normal(128, 40, (height, width, 3)), 0, 255).astype(np.uint8) for _ in range(frames)]
    rgb = source_clip(np.stack(pictures), core.std.BlankClip(width=width, height=height, format=vs.RGB24))
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P8, matrix_s="709")
    photo_model = default_model_entry(False).name
    filters = {"video model (default)": fbcnn(yuv), f"{photo_model}": fbcnn(yuv, model=photo_model)}
    for clip in filters.values():  # one frame each first: the compile and the first tile shapes
        clip.get_frame(0)
    seconds = {name: 0.0 for name in filters}
    for _ in range(rounds):
        for name, clip in filters.items():
            started = time.perf_counter()
            for n in range(1, frames):
                clip.get_frame(n)
            seconds[name] += time.perf_counter() - started
    return {name: rounds * (frames - 1) / value for name, value in seconds.items()}


def table(rows: list[dict]) -> str:
    lines = ["| clip | kbit/s | method | best setting | Y gain (dB) | RGB gain (dB) | flicker (decoded) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "decoded":
            lines.append(f"| {r['encoding']} | {r['kbit_per_s']:.0f} | decoded | - | {r['y']:.2f} dB | {r['rgb']:.2f} dB | "
                         f"{r['flicker']:.3f} |")
            continue
        lines.append(f"| {r['encoding']} | | {r['method']} | {r['setting'] or '-'} | {r['y_gain']:+.2f} | "
                     f"{r['rgb_gain']:+.2f} | {r['flicker']:.3f} ({r['decoded_flicker']:.3f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", type=Path, default=DEFAULT_VAL, help="folder of lossless photos (default: ../shared/data/val; "
                        "scikit-image's photos when it is missing)")
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=272)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--codec", action="append", choices=["mpeg2", "h264", "hevc", "mjpeg"],
                        help="only these codecs (repeatable; default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--speed", metavar="WxH", help="instead: the filter's fps at this frame size, video model against "
                        "photo model (e.g. 1920x1080)")
    args = parser.parse_args(argv)
    try:
        check_tools()
    except RuntimeError as error:
        print(f"bench_video: {error}", file=sys.stderr)
        return 2
    if args.speed:
        width, height = (int(v) for v in args.speed.split("x"))
        for name, fps in filter_speed(width, height, args.frames).items():
            print(f"{args.speed} {name}: {fps:.3f} fps")
        return 0
    encodings = [e for e in ENCODINGS if not args.codec or e.codec in args.codec]
    rows = run(load_photos(args.val, args.photos), encodings, frames=args.frames, width=args.width, height=args.height,
               seed=args.seed)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
