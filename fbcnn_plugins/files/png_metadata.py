"""ICC profile and EXIF for PNG files written by an encoder that cannot embed them.

16-bit PNGs go through OpenCV, which writes pixels only; this adds the
``iCCP`` and ``eXIf`` chunks to its output, so a wide-gamut or camera photo
keeps its colour profile and tags at 16 bits as it does at 8.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Pillow's EXIF bytes start with the JPEG APP1 marker's name; PNG's eXIf holds the TIFF data alone.
APP1_EXIF_PREFIX = b"Exif\x00\x00"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def add_png_metadata(path: str | Path, *, icc_profile: bytes | None = None, exif: bytes | None = None) -> None:
    """Insert iCCP/eXIf chunks before the first IDAT of the PNG at ``path`` (in place; callers pass a temp file)."""
    if not icc_profile and not exif:
        return
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    extra = b""
    if icc_profile:
        extra += _chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        tiff = exif[len(APP1_EXIF_PREFIX):] if exif.startswith(APP1_EXIF_PREFIX) else exif
        extra += _chunk(b"eXIf", tiff)
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            path.write_bytes(data[:position] + extra + data[position:])
            return
        if kind in (b"iCCP", b"sRGB") and icc_profile:  # PNG allows one colour space statement
            data = data[:position] + data[position + 12 + length :]
            continue
        position += 12 + length
    raise ValueError(f"{path}: PNG has no image data")
