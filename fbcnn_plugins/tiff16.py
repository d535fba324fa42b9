"""16-bit TIFF output that keeps the photo's ICC profile and its identifying EXIF tags.

OpenCV writes 48-bit TIFF but no metadata, and Pillow cannot write 16-bit
colour at all, so deep TIFFs go through tifffile.  The ICC profile matters most
(a wide-gamut 16-bit photo without it shows wrong colours); of the EXIF, the
text tags that TIFF keeps in its main directory (camera, date, author,
copyright) are carried over.  The EXIF sub-directory with exposure settings is
not: tifffile has no writer for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

#: EXIF tags of the main directory (IFD0) that are also baseline TIFF tags, written as extra tags:
#: Make, Model, Artist, Copyright.
MAIN_TEXT_TAGS = frozenset({271, 272, 315, 33432})
DESCRIPTION, SOFTWARE, DATETIME = 270, 305, 306
TIFF_DATETIME = re.compile(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")


def write_tiff16(path: str | Path, pixels: np.ndarray, *, icc_profile: bytes | None = None, exif: bytes | None = None) -> None:
    """Write uint16 gray (H,W), RGB or RGBA (H,W,3|4) as deflate-compressed TIFF."""
    if pixels.dtype != np.uint16:
        raise ValueError(f"write_tiff16 takes uint16 pixels, not {pixels.dtype}")
    text = exif_text_tags(exif)
    rgb = pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    tifffile.imwrite(
        path, pixels,
        photometric="rgb" if rgb else "minisblack",
        extrasamples=["unassalpha"] if rgb and pixels.shape[2] == 4 else None,
        compression="zlib",
        iccprofile=icc_profile or None,
        metadata=None,  # no tifffile JSON in ImageDescription: the photo's own description goes there
        description=text.get(DESCRIPTION),
        software=text.get(SOFTWARE, False),
        datetime=text.get(DATETIME),
        extratags=[(code, "s", 0, value, True) for code, value in text.items() if code in MAIN_TEXT_TAGS],
    )


def exif_text_tags(exif: bytes | None) -> dict[int, str]:
    """The non-empty ASCII tags of an EXIF block's main directory that a TIFF can hold.

    Metadata must never cost the pixels: an unreadable EXIF block gives no tags, a tag that
    is not 7-bit ASCII (TIFF's ASCII type) is left out, and so is a DateTime that is not
    TIFF's "YYYY:MM:DD HH:MM:SS" (tifffile refuses any other).
    """
    if not exif:
        return {}
    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except Exception:  # Pillow raises several types for damaged EXIF; none of them should stop the write
        return {}
    wanted = MAIN_TEXT_TAGS | {DESCRIPTION, SOFTWARE, DATETIME}
    tags = {}
    for code, value in parsed.items():
        if code not in wanted or not isinstance(value, str):
            continue
        value = value.strip("\x00").strip()
        if value and value.isascii() and (code != DATETIME or TIFF_DATETIME.fullmatch(value)):
            tags[code] = value
    return tags
