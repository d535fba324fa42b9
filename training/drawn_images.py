"""Random drawn images (screenshots, UI, slides, memes' captions) for fitting how to restore them.

Drawn content restores differently from photos: text and flat panels next to sharp edges are
smoothed away at the strength that suits a photo saved at the same QF, so a JPEG of a
screenshot restores best at a lighter strength than its header's QF.  How much lighter is a
property of each model, measured on images like these (``qf_head collect --families drawn``)
and fitted into its card (``training/single_saves.py --family drawn``).  They are drawn from a
seed, never the benchmark's fixed screenshot (:func:`fbcnn_plugins.training.chains.screenshot`).
"""

from __future__ import annotations

import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LIGHT_BACKGROUNDS = ((246, 246, 248), (255, 255, 255), (240, 240, 235), (250, 248, 240))
DARK_BACKGROUNDS = ((30, 30, 34), (43, 43, 43), (18, 24, 38))
ACCENTS = ((52, 120, 246), (220, 53, 69), (40, 167, 69), (255, 193, 7), (108, 117, 125), (111, 66, 193), (23, 162, 184))


def random_words(rng: np.random.Generator, count: int) -> str:
    letters = string.ascii_letters + string.digits
    return " ".join("".join(rng.choice(list(letters), size=int(rng.integers(2, 9)))) for _ in range(count))


def font(rng: np.random.Generator) -> ImageFont.ImageFont:
    """The bitmap default font (hard pixel edges) or the scalable one at a random size (anti-aliased)."""
    if rng.random() < 0.3:
        return ImageFont.load_default()
    return ImageFont.load_default(size=float(rng.integers(9, 26)))


def drawn_image(rng: np.random.Generator, height: int = 256, width: int = 256) -> np.ndarray:
    """One random drawn RGB image: flat panels, lines, buttons and text on a light or dark theme."""
    dark = rng.random() < 0.3
    palette = DARK_BACKGROUNDS if dark else LIGHT_BACKGROUNDS
    background = palette[int(rng.integers(len(palette)))]
    ink = (230, 230, 230) if dark else (int(rng.integers(0, 60)),) * 3
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.7:  # a title bar
        bar = int(rng.integers(14, 30))
        draw.rectangle([0, 0, width, bar], fill=ACCENTS[int(rng.integers(len(ACCENTS)))] if rng.random() < 0.4 else (45, 52, 64))
        draw.text((6, 2), random_words(rng, 3), fill=(240, 240, 240), font=font(rng))
    for _ in range(int(rng.integers(1, 5))):  # panels
        left, top = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        right, bottom = left + int(rng.integers(20, width)), top + int(rng.integers(20, height // 2))
        fill = tuple(int(c) for c in np.clip(np.array(background) + rng.integers(-25, 26, 3), 0, 255))
        draw.rectangle([left, top, right, bottom], fill=fill, outline=ink if rng.random() < 0.4 else None)
    y = int(rng.integers(20, 40))
    while y < height - 10:  # text lines, buttons, rules
        kind = rng.random()
        if kind < 0.6:
            draw.text((int(rng.integers(4, 30)), y), random_words(rng, int(rng.integers(2, 8))), fill=ink, font=font(rng))
            y += int(rng.integers(14, 30))
        elif kind < 0.85:
            left = int(rng.integers(4, max(5, width - 80)))
            accent = ACCENTS[int(rng.integers(len(ACCENTS)))]
            draw.rounded_rectangle([left, y, left + int(rng.integers(40, 90)), y + int(rng.integers(16, 26))],
                                   radius=int(rng.integers(0, 6)), fill=accent, outline=ink if rng.random() < 0.3 else None)
            draw.text((left + 6, y + 3), random_words(rng, 1), fill=(255, 255, 255), font=font(rng))
            y += int(rng.integers(24, 36))
        else:
            shade = tuple(int(c) for c in np.clip(np.array(background) - 40 if not dark else np.array(background) + 40, 0, 255))
            draw.line([4, y, width - 4, y], fill=shade, width=int(rng.integers(1, 3)))
            y += int(rng.integers(6, 14))
    if rng.random() < 0.3:  # an icon
        x, yy, r = int(rng.integers(10, width - 30)), int(rng.integers(10, height - 30)), int(rng.integers(5, 14))
        draw.ellipse([x, yy, x + 2 * r, yy + 2 * r], fill=ACCENTS[int(rng.integers(len(ACCENTS)))])
    return np.asarray(image)
