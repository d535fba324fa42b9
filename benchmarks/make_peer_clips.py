"""Make the MPEG-2 and MJPEG test clips for bench_vs_peers.py from ../shared/data/val.

Video codecs on still photos converge to near-lossless after the first frame,
so each photo becomes a short slow pan (a 640x360 window moving a few pixels
per frame), which keeps every frame hard to code, as real footage is.  The
pan frames are written as PNG (the reference), then encoded with ffmpeg:

* MPEG-2 at a fixed quantiser (blocking and ringing that move with the picture; I frames
  every 12; left-sited chroma, limited range, BT.601);
* MJPEG at a fixed quantiser (JPEG blocking per frame; centre-sited chroma, full range).

Fixed quantisers rather than bitrates: on clips this short, rate control has no room to settle.

    python benchmarks/make_peer_clips.py --out /tmp/peer_clips
    python benchmarks/make_peer_clips.py --photos 4 --frames-per-photo 6 --mpeg2-q 14 --mjpeg-q 12
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VAL = REPO.parent / "shared" / "data" / "val"
WIDTH, HEIGHT = 640, 360


def pan_frames(photo: Image.Image, count: int, step: int) -> list[np.ndarray]:
    """``count`` WIDTHxHEIGHT windows of ``photo`` (scaled to cover the pan), each ``step`` pixels further right and down."""
    need_w, need_h = WIDTH + step * count, HEIGHT + step * count // 2
    scale = max(need_w / photo.width, need_h / photo.height, 1.0)
    if scale > 1.0:
        photo = photo.resize((round(photo.width * scale + 0.5), round(photo.height * scale + 0.5)), Image.Resampling.LANCZOS)
    array = np.asarray(photo.convert("RGB"))
    return [np.ascontiguousarray(array[i * step // 2 : i * step // 2 + HEIGHT, i * step : i * step + WIDTH]) for i in range(count)]


def encode(frames_dir: Path, out: Path, codec_args: list[str]) -> None:
    command = ["ffmpeg", "-v", "error", "-y", "-framerate", "24", "-i", str(frames_dir / "%04d.png"), *codec_args, str(out)]
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", type=Path, default=DEFAULT_VAL, help=f"folder of PNG photos (default: {DEFAULT_VAL})")
    parser.add_argument("--out", type=Path, required=True, help="folder for the reference frames and the two clips")
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--frames-per-photo", type=int, default=6)
    parser.add_argument("--step", type=int, default=4, help="pan step in pixels per frame")
    parser.add_argument("--mpeg2-q", type=int, default=14, help="MPEG-2 quantiser scale (2 = best .. 31)")
    parser.add_argument("--mjpeg-q", type=int, default=12, help="MJPEG quantiser scale (2 = best .. 31)")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("make_peer_clips: ffmpeg is not installed (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    photos = [p for p in sorted(args.val.rglob("*.png")) if min(Image.open(p).size) >= 350][: args.photos]
    if len(photos) < args.photos:
        print(f"make_peer_clips: {args.val}: found {len(photos)} usable PNG photos, need {args.photos}", file=sys.stderr)
        return 2
    frames_dir = args.out / "reference"
    frames_dir.mkdir(parents=True, exist_ok=True)
    index = 0
    for path in photos:
        with Image.open(path) as photo:
            for frame in pan_frames(photo, args.frames_per_photo, args.step):
                Image.fromarray(frame).save(frames_dir / f"{index:04d}.png")
                index += 1
    bt601 = ["-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m"]
    encode(frames_dir, args.out / "mpeg2.mkv", ["-c:v", "mpeg2video", "-q:v", str(args.mpeg2_q), "-g", "12", "-pix_fmt", "yuv420p", *bt601])
    encode(frames_dir, args.out / "mjpeg.mkv", ["-c:v", "mjpeg", "-q:v", str(args.mjpeg_q), "-pix_fmt", "yuvj420p", *bt601])
    seconds = index / 24
    kbps = {name: round((args.out / name).stat().st_size * 8 / seconds / 1000) for name in ("mpeg2.mkv", "mjpeg.mkv")}
    (args.out / "clips.json").write_text(json.dumps({
        "photos": [str(p.relative_to(args.val)) for p in photos], "frames": index, "size": [WIDTH, HEIGHT],
        "mpeg2_q": args.mpeg2_q, "mjpeg_q": args.mjpeg_q, "kbit_per_s": kbps,
    }, indent=2) + "\n")
    print(f"{index} frames of {WIDTH}x{HEIGHT} from {len(photos)} photos, 24 fps: "
          + ", ".join(f"{args.out / name} ({rate} kb/s)" for name, rate in kbps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
