"""16-bit and float TIFF output that keeps the photo's ICC profile and its identifying EXIF tags.

OpenCV writes 48-bit TIFF but no metadata, and Pillow cannot write 16-bit
colour or float colour at all, so deep TIFFs (and multi-page ones) go through tifffile.  The ICC profile matters most
(a wide-gamut 16-bit photo without it shows wrong colours); of the EXIF, the
text tags that TIFF keeps in its main directory (camera, date, author,
copyright) are carried over.  The EXIF sub-directory with exposure settings is
not: tifffile has no writer for it.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

#: EXIF tags of the main directory (IFD0) that are also baseline TIFF tags, written as extra tags:
#: Make, Model, Artist, Copyright.
MAIN_TEXT_TAGS = frozenset({271, 272, 315, 33432})
DESCRIPTION, SOFTWARE, DATETIME = 270, 305, 306
XMP_TAG = 700
TIFF_DATETIME = re.compile(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")


TIFF_SAMPLE_TYPES = (np.uint8, np.uint16, np.float32)


def encode_tiff_pages(
    pages: list[np.ndarray], *, icc_profile: bytes | None = None, exif: bytes | None = None,
    xmp: bytes | None = None, dpi: tuple[float, float] | None = None,
) -> bytes:
    """A TIFF file, in memory, with one page per array (a multi-page TIFF when there are several).

    Each page keeps its depth (uint8, uint16 or float32).  Gray+alpha pages become RGBA: TIFF
    readers handle an extra sample on gray badly.  The XMP packet goes in tag 700 and the DPI
    in the resolution tags of every page.
    """
    text = exif_text_tags(exif)
    stream = io.BytesIO()
    with tifffile.TiffWriter(stream) as writer:
        for pixels in pages:
            if pixels.dtype not in TIFF_SAMPLE_TYPES:
                raise ValueError(f"TIFF pages take uint8, uint16 or float32 pixels, not {pixels.dtype}")
            if pixels.ndim == 3 and pixels.shape[2] == 1:
                pixels = pixels[:, :, 0]
            if pixels.ndim == 3 and pixels.shape[2] == 2:
                pixels = np.dstack([pixels[:, :, 0]] * 3 + [pixels[:, :, 1]])
            rgb = pixels.ndim == 3 and pixels.shape[2] in (3, 4)
            extratags = [(code, "s", 0, value, True) for code, value in text.items() if code in MAIN_TEXT_TAGS]
            if xmp:
                extratags.append((XMP_TAG, "B", len(xmp), bytes(xmp), True))
            writer.write(
                np.ascontiguousarray(pixels),
                photometric="rgb" if rgb else "minisblack",
                extrasamples=["unassalpha"] if rgb and pixels.shape[2] == 4 else None,
                compression="zlib",
                iccprofile=icc_profile or None,
                metadata=None,  # no tifffile JSON in ImageDescription: the photo's own description goes there
                description=text.get(DESCRIPTION),
                software=text.get(SOFTWARE, False),
                datetime=text.get(DATETIME),
                resolution=tuple(dpi) if dpi else None,
                resolutionunit="INCH" if dpi else None,
                extratags=extratags,
            )
    return stream.getvalue()


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
