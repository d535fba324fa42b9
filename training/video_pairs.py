"""Training pairs of codec damage: clean frames and the same frames through MPEG-2, H.264, HEVC or MJPEG.

``build`` makes camera-like clips from the training images (``video_clips.camera_frames``),
encodes each with one codec at one setting drawn from a wide range, decodes it as a restorer's
script would, and stores clean and decoded frames in one ``.npz`` per clip.  Clips are made
one by one and written atomically, so an interrupted build resumes where it stopped; the same
seed always gives the same clips.

    python -m fbcnn_plugins.training.video_pairs --out runs/video-pairs --clips 300
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fbcnn_plugins.core.jpeg import rgb_to_y

from .data import list_images, load_training_image
from .video_clips import CodecUnavailable, Encoding, camera_frames, check_tools, decode, encode

#: How often each codec is drawn, and the range of its setting (see ``video_clips.Encoding``).
#: The ranges run past the usual ones on both sides, so the network meets light and heavy damage.
CODEC_MIX: dict[str, tuple[float, int, int]] = {
    "h264": (0.35, 24, 42),
    "hevc": (0.30, 26, 42),
    "mpeg2": (0.25, 3, 24),
    "mjpeg": (0.10, 3, 20),
}


@dataclass
class ClipPair:
    """One clip: clean and decoded RGB (T, H, W, 3), clean and decoded Y (T, H, W), uint8."""

    clean: np.ndarray
    decoded: np.ndarray
    clean_y: np.ndarray
    decoded_y: np.ndarray
    encoding: Encoding
    picture_types: str

    def save(self, path: Path) -> None:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz", delete=False) as stream:
            np.savez(stream, clean=self.clean, decoded=self.decoded, clean_y=self.clean_y, decoded_y=self.decoded_y,
                     codec=self.encoding.codec, level=self.encoding.level, picture_types=self.picture_types)
        os.replace(stream.name, path)

    @classmethod
    def load(cls, path: str | Path) -> "ClipPair":
        with np.load(path) as data:
            return cls(data["clean"], data["decoded"], data["clean_y"], data["decoded_y"],
                       Encoding(str(data["codec"]), float(data["level"])), str(data["picture_types"]))


def draw_encoding(rng: np.random.Generator) -> Encoding:
    codecs = list(CODEC_MIX)
    weights = np.array([CODEC_MIX[c][0] for c in codecs])
    codec = codecs[rng.choice(len(codecs), p=weights / weights.sum())]
    _, low, high = CODEC_MIX[codec]
    return Encoding(codec, int(rng.integers(low, high + 1)))


def make_pair(image: np.ndarray, sprite_source: np.ndarray | None, rng: np.random.Generator, *,
              frames: int, width: int, height: int, workdir: Path) -> ClipPair:
    """One clip over ``image`` (with a moving crop of ``sprite_source`` when given), encoded and decoded."""
    sprite = None
    if sprite_source is not None:
        side_h, side_w = int(rng.integers(48, height // 2)), int(rng.integers(48, width // 2))
        top = int(rng.integers(0, max(1, sprite_source.shape[0] - side_h)))
        left = int(rng.integers(0, max(1, sprite_source.shape[1] - side_w)))
        sprite = sprite_source[top : top + side_h, left : left + side_w]
    clean = camera_frames(image, rng, frames=frames, width=width, height=height, sprite=sprite)
    encoding = draw_encoding(rng)
    decoded, decoded_y, kinds = decode(encode(clean, encoding, workdir / "clip.mkv"))
    if decoded.shape != clean.shape:
        raise RuntimeError(f"{encoding.label}: decoded {decoded.shape[0]} frames of {clean.shape[0]}")
    return ClipPair(clean, decoded, rgb_to_y(clean), decoded_y, encoding, "".join(kinds))


def build(out: Path, train_dirs: Sequence[str | Path], *, clips: int, frames: int = 12, width: int = 384,
          height: int = 256, seed: int = 2026, sprite_ratio: float = 0.5) -> int:
    """Write ``clips`` pairs into ``out`` (those already there are kept); returns how many were made."""
    check_tools()
    out.mkdir(parents=True, exist_ok=True)
    paths = list_images(train_dirs)
    images = [im for im in (load_training_image(p, gray=False) for p in paths)
              if im.shape[0] >= height * 1.2 and im.shape[1] >= width * 1.2]
    if not images:
        raise FileNotFoundError(f"no training image of at least {round(width * 1.2)}x{round(height * 1.2)} under {', '.join(map(str, train_dirs))}")
    made, started = 0, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fbcnn-video-pairs-") as workdir:
        for index in range(clips):
            target = out / f"clip{index:05d}.npz"
            if target.exists():
                continue
            rng = np.random.default_rng([seed, index])
            image = images[int(rng.integers(len(images)))]
            sprite_source = images[int(rng.integers(len(images)))] if rng.random() < sprite_ratio else None
            pair = make_pair(image, sprite_source, rng, frames=frames, width=width, height=height, workdir=Path(workdir))
            pair.save(target)
            made += 1
            print(f"{target.name}: {pair.encoding.label}, {pair.picture_types} ({time.perf_counter() - started:.0f} s)", flush=True)
    return made


def load_pairs(folder: str | Path) -> list[ClipPair]:
    files = sorted(Path(folder).glob("clip*.npz"))
    if not files:
        raise FileNotFoundError(f"{folder}: no video training pairs (make them with python -m fbcnn_plugins.training.video_pairs)")
    return [ClipPair.load(p) for p in files]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the clip*.npz pairs")
    parser.add_argument("--train-dir", action="append", dest="train_dirs",
                        help="folder of lossless training images (repeatable; default: ../shared/data/train's large-image folders)")
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    train_dirs = args.train_dirs or [f"../shared/data/train/{name}" for name in ("debian_wallpapers", "urban36", "bsds_train200", "bsds_val32")]
    try:
        build(args.out, train_dirs, clips=args.clips, frames=args.frames, width=args.width, height=args.height, seed=args.seed)
    except (CodecUnavailable, FileNotFoundError) as error:
        print(f"video_pairs: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
