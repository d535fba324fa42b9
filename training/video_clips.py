"""Short camera-like clips made from still images, encoded and decoded by real video codecs.

Video codecs damage footage differently from JPEG: H.264 and HEVC deblock in the loop and
leave blur, ringing on 4x4..32x32 transforms and motion-compensated error; MPEG-2 blocks on
an 8x8 grid that moves with the picture between I frames.  A still image encoded as video
converges to near-lossless after the first frame, so every clip here moves like a camera
(pan, zoom, a little rotation), and some carry an object moving across the background, so
that P and B frames have real prediction error to code.

The same code makes the training pairs (``training/video_pairs.py``) and the benchmark clips
(``benchmarks/bench_video.py``), so the two describe the same damage.  Encoding is ffmpeg's
(libx264, libx265, mpeg2video, mjpeg); decoding is BestSource in VapourSynth, converted to RGB
by zimg from the frame's own colorimetry, which is what a restorer's script does.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FPS = 24
#: Codecs and what their ``level`` means: CRF for x264/x265, the quantiser scale (2 best .. 31)
#: for MPEG-2 and MJPEG.  MPEG-2 is set by quantiser, not bitrate: on clips of a few dozen frames
#: ffmpeg's rate control has no room to settle and overshoots its target two- or threefold; the
#: benchmark reports the bitrate each quantiser gave.
CODECS = ("mpeg2", "h264", "hevc", "mjpeg")
_BT601_TAGS = ["-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m"]


class CodecUnavailable(RuntimeError):
    """ffmpeg (or one of its encoders) or VapourSynth's BestSource is not installed."""


@dataclass(frozen=True)
class Encoding:
    """One codec at one setting, e.g. ``Encoding("h264", 32)`` for x264 at CRF 32."""

    codec: str
    level: float

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")

    @property
    def label(self) -> str:
        if self.codec == "mpeg2":
            return f"MPEG-2 q {self.level:g}"
        if self.codec == "mjpeg":
            return f"MJPEG q {self.level:g}"
        return f"{'H.264' if self.codec == 'h264' else 'HEVC'} CRF {self.level:g}"

    def ffmpeg_arguments(self) -> list[str]:
        """Encoder arguments: one thread each, so that clips encode alike on any machine."""
        if self.codec == "mpeg2":  # DVD's GOP: an I frame every 12, two B frames between references
            return ["-c:v", "mpeg2video", "-q:v", f"{self.level:g}", "-g", "12", "-bf", "2", "-threads", "1",
                    "-pix_fmt", "yuv420p", "-color_range", "tv"]
        if self.codec == "h264":
            return ["-c:v", "libx264", "-preset", "medium", "-crf", f"{self.level:g}", "-bf", "3", "-threads", "1",
                    "-pix_fmt", "yuv420p", "-color_range", "tv"]
        if self.codec == "hevc":
            return ["-c:v", "libx265", "-preset", "fast", "-crf", f"{self.level:g}", "-pix_fmt", "yuv420p",
                    "-color_range", "tv", "-x265-params", "log-level=error:pools=1:frame-threads=1"]
        return ["-c:v", "mjpeg", "-q:v", f"{self.level:g}", "-pix_fmt", "yuvj420p", "-color_range", "pc"]


def check_tools() -> None:
    """Raise CodecUnavailable naming what is missing to encode and decode clips."""
    if shutil.which("ffmpeg") is None:
        raise CodecUnavailable("ffmpeg is not installed (Debian: apt-get install ffmpeg)")
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    missing = [name for name in ("libx264", "libx265", "mpeg2video", "mjpeg") if f" {name} " not in encoders]
    if missing:
        raise CodecUnavailable(f"ffmpeg lacks the encoders {', '.join(missing)}")
    import vapoursynth as vs

    if not hasattr(vs.core, "bs"):
        raise CodecUnavailable("VapourSynth's BestSource is not installed (pip install vapoursynth-bestsource)")


def _affine(center: tuple[float, float], scale: float, angle: float, size: tuple[int, int]) -> np.ndarray:
    """The 2x3 matrix mapping output pixel (x, y) to the source point it shows (for WARP_INVERSE_MAP)."""
    width, height = size
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    cx, cy = center
    # Output centre maps to ``center``; the axes are rotated by ``angle`` and scaled by ``scale``.
    return np.array([[cos, -sin, cx - cos * width / 2 + sin * height / 2],
                     [sin, cos, cy - sin * width / 2 - cos * height / 2]], dtype=np.float64)


def camera_frames(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    frames: int,
    width: int,
    height: int,
    sprite: np.ndarray | None = None,
) -> np.ndarray:
    """``frames`` RGB frames of a camera moving over ``image``: (T, H, W, 3) uint8.

    The camera pans at 0.5..5 px a frame, zooms by up to 1 % a frame and turns by up to 0.15
    degrees a frame, all drawn from ``rng``, and stays inside the image.  ``sprite`` (an RGB
    patch) is blended in with a soft elliptical edge and moves on its own path: motion that a
    global camera model cannot predict, as people and cars in real footage.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    scale = rng.uniform(1.0, max(1.0, min(2.0, image.shape[1] / (width * 1.2), image.shape[0] / (height * 1.2))))
    if scale > 1.05:  # shrink once with area averaging, so the warp below never aliases
        image = cv2.resize(image, (round(image.shape[1] / scale), round(image.shape[0] / scale)), interpolation=cv2.INTER_AREA)
    # The frame's centre keeps 0.6 of a frame from the image's edges (room for the zoom and the
    # turn); the pan is slowed where the image leaves less room than the path needs.
    margin_x, margin_y = 0.6 * width, 0.6 * height
    room_x, room_y = max(0.0, image.shape[1] - 2 * margin_x), max(0.0, image.shape[0] - 2 * margin_y)
    speed, heading = rng.uniform(0.5, 5.0), rng.uniform(0, 2 * math.pi)
    vx, vy = speed * math.cos(heading), speed * math.sin(heading)
    fit = min(1.0, room_x / (abs(vx) * frames + 1e-9), room_y / (abs(vy) * frames + 1e-9))
    vx, vy = vx * fit, vy * fit
    start = (
        margin_x + rng.uniform(0, room_x - abs(vx) * frames + 1e-9) + max(0.0, -vx) * frames,
        margin_y + rng.uniform(0, room_y - abs(vy) * frames + 1e-9) + max(0.0, -vy) * frames,
    )
    zoom_rate = math.exp(rng.uniform(-0.01, 0.01))
    turn_rate = math.radians(rng.uniform(-0.15, 0.15))
    velocity = (vx, vy)
    sprite_path = _sprite_path(rng, sprite, frames, width, height) if sprite is not None else None
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        center = (start[0] + velocity[0] * t, start[1] + velocity[1] * t)
        matrix = _affine(center, 1.0 / zoom_rate**t, turn_rate * t, (width, height))
        out[t] = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
        if sprite_path is not None:
            _paste(out[t], sprite, sprite_path[t])
    return out


def _sprite_path(rng: np.random.Generator, sprite: np.ndarray, frames: int, width: int, height: int) -> list[tuple[int, int]]:
    """Top-left corners of the sprite, frame by frame, on a straight path that crosses the frame."""
    h, w = sprite.shape[:2]
    x0, y0 = rng.uniform(-w / 2, width - w / 2), rng.uniform(-h / 2, height - h / 2)
    speed, heading = rng.uniform(2.0, 8.0), rng.uniform(0, 2 * math.pi)
    return [(round(x0 + speed * math.cos(heading) * t), round(y0 + speed * math.sin(heading) * t)) for t in range(frames)]


def _paste(frame: np.ndarray, sprite: np.ndarray, corner: tuple[int, int]) -> None:
    """Blend ``sprite`` into ``frame`` at ``corner`` through a soft ellipse, clipped to the frame."""
    h, w = sprite.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    radius = ((xx - (w - 1) / 2) / (w / 2)) ** 2 + ((yy - (h - 1) / 2) / (h / 2)) ** 2
    alpha = np.clip((1.0 - radius) * 4.0, 0.0, 1.0)[:, :, None]
    x, y = corner
    top, left = max(0, y), max(0, x)
    bottom, right = min(frame.shape[0], y + h), min(frame.shape[1], x + w)
    if bottom <= top or right <= left:
        return
    part = (slice(top - y, bottom - y), slice(left - x, right - x))
    region = frame[top:bottom, left:right].astype(np.float32)
    blended = region * (1 - alpha[part]) + sprite[part].astype(np.float32) * alpha[part]
    frame[top:bottom, left:right] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def encode(frames: np.ndarray, encoding: Encoding, path: str | Path) -> Path:
    """Encode RGB frames (T, H, W, 3) with ffmpeg into ``path`` (Matroska), tagged BT.601."""
    path = Path(path)
    count, height, width, _ = frames.shape
    full_range = encoding.codec == "mjpeg"
    scale = f"scale=out_color_matrix=bt601:out_range={'pc' if full_range else 'tv'}:flags=bicubic+accurate_rnd"
    command = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", str(FPS), "-i", "-", "-vf", scale, *encoding.ffmpeg_arguments(), *_BT601_TAGS, str(path)]
    result = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed to encode {path.name} ({encoding.label}): {result.stderr.decode(errors='replace').strip()}")
    return path


def decode(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``path`` with BestSource: RGB (T, H, W, 3) and Y (T, H, W) uint8, and each frame's picture type.

    RGB is zimg's bicubic conversion with the frame's own matrix, range and chroma location (what
    the filter's ``yuv_mode="rgb"`` does); Y is the decoded luma plane as it is (``yuv_mode="luma"``).
    """
    import vapoursynth as vs

    core = vs.core
    clip = core.bs.VideoSource(str(path), cachemode=0)
    rgb = core.resize.Bicubic(clip, format=vs.RGB24)
    count = clip.num_frames
    out_rgb = np.empty((count, clip.height, clip.width, 3), dtype=np.uint8)
    out_y = np.empty((count, clip.height, clip.width), dtype=np.uint8)
    kinds = []
    for n, (yuv_frame, rgb_frame) in enumerate(zip(clip.frames(close=True), rgb.frames(close=True))):
        out_y[n] = np.asarray(yuv_frame[0])
        for p in range(3):
            out_rgb[n, :, :, p] = np.asarray(rgb_frame[p])
        kind = yuv_frame.props.get("_PictType", b"?")
        kinds.append(kind.decode() if isinstance(kind, bytes) else str(kind))
    return out_rgb, out_y, kinds
