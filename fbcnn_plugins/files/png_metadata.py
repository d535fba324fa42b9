"""ICC profile and EXIF for PNG files written by an encoder that cannot embed them.

16-bit PNGs go through OpenCV, which writes pixels only; this adds the
``iCCP``, ``eXIf``, ``pHYs`` and text chunks to its output, so a wide-gamut or
camera photo keeps its colour profile, tags, XMP and DPI at 16 bits as it does at 8.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Pillow's EXIF bytes start with the JPEG APP1 marker's name; PNG's eXIf holds the TIFF data alone.
APP1_EXIF_PREFIX = b"Exif\x00\x00"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def add_png_metadata(
    data: bytes, *, icc_profile: bytes | None = None, exif: bytes | None = None,
    text: dict[str, str] | None = None, dpi: tuple[float, float] | None = None,
) -> bytes:
    """The PNG ``data`` with iCCP, eXIf, pHYs and text chunks inserted before its first IDAT."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    extra = b""
    if icc_profile:
        extra += _chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        tiff = exif[len(APP1_EXIF_PREFIX):] if exif.startswith(APP1_EXIF_PREFIX) else exif
        extra += _chunk(b"eXIf", tiff)
    if dpi:
        per_metre = [max(1, round(d / INCH_IN_METRES)) for d in dpi]
        extra += _chunk(b"pHYs", struct.pack(">IIB", per_metre[0], per_metre[1], 1))
    for key, value in (text or {}).items():
        extra += _text_chunk(key, value)
    if not extra:
        return data
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            return data[:position] + extra + data[position:]
        if (kind in (b"iCCP", b"sRGB") and icc_profile) or (kind == b"pHYs" and dpi):  # one of each allowed
            data = data[:position] + data[position + 12 + length :]
            continue
        position += 12 + length
    raise ValueError("PNG has no image data")


INCH_IN_METRES = 0.0254


def _text_chunk(key: str, value: str) -> bytes:
    """tEXt when the value is Latin-1, else (and for XMP) iTXt, UTF-8."""
    keyword = key.encode("latin-1", "replace")[:79]
    if key != "XML:com.adobe.xmp":  # XMP is read from iTXt only
        try:
            return _chunk(b"tEXt", keyword + b"\x00" + value.encode("latin-1"))
        except UnicodeEncodeError:
            pass
    return _chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + value.encode("utf-8"))
