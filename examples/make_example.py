"""Draw the bundled example photo-like scene and save it as a blocky JPEG.

The scene is synthetic (drawn here, so the project owns it) but has what
shows JPEG damage: smooth gradients (banding and blocks), sharp edges and
lettering (ringing), fine stripes and gray-level texture.

    python examples/make_example.py   # writes examples/blocky.jpg
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT, QUALITY = 320, 240, 15


def draw_scene(seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    sky = np.stack([90 + 0.3 * y, 140 + 0.35 * y, 230 - 0.2 * y], axis=2)
    ground = np.stack([60 + 0.2 * x, 120 + 0.1 * y, 50 + 0.05 * x], axis=2)
    scene = np.where((y > 150 + 10 * np.sin(x / 25))[:, :, None], ground, sky)
    scene += rng.normal(0, 3, scene.shape)  # a little sensor-like grain
    image = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((215, 25, 285, 95), fill=(250, 215, 80), outline=(200, 120, 20), width=3)
    for i in range(12):  # fine stripes on a building
        draw.rectangle((30 + 6 * i, 70, 32 + 6 * i, 150), fill=(70, 70, 80))
    draw.rectangle((28, 60, 104, 70), fill=(150, 40, 40))
    draw.polygon([(140, 150), (175, 95), (210, 150)], fill=(40, 90, 40), outline=(20, 50, 20))
    font = ImageFont.load_default(size=28)
    draw.text((118, 180), "FBCNN", fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return image


def main() -> None:
    out = Path(__file__).resolve().parent / "blocky.jpg"
    draw_scene().save(out, quality=QUALITY)
    print(f"wrote {out} (JPEG quality {QUALITY})")


if __name__ == "__main__":
    main()
