"""Which file extensions the command line reads and writes, and how it names its own outputs.

Kept free of any image library so that ``fbcnn`` builds its option parser
(and ``fbcnn models`` runs) without importing OpenCV, Pillow or PyTorch.
"""

from __future__ import annotations

import re

WRITE_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".webp": "WEBP", ".bmp": "BMP",
}
XCF_SUFFIX = ".xcf"
#: Every extension read; GIF is read (all its frames) but never written: its 256-colour palette would undo the work.
READ_SUFFIXES = set(WRITE_FORMATS) | {".jfif", ".jpe", ".gif", XCF_SUFFIX}  # XCF: layer by layer, see files.xcf
#: Formats that hold several frames or pages in one file.
MULTI_FRAME_FORMATS = {"PNG", "TIFF", "WEBP"}
#: Extensions of image formats we do not write: an output named like this is refused, not taken for a folder.
OTHER_IMAGE_SUFFIXES = {".gif", ".jfif", ".jpe", ".jp2", ".j2k", ".heic", ".heif", ".avif", ".jxl", ".ico",
                        ".psd", ".exr", ".hdr", ".pbm", ".pgm", ".ppm", ".pnm", ".tga", ".dds", ".pcx", ".svg"}
#: Written into every output (EXIF Software, which PNG, JPEG, TIFF and WebP carry): how a re-run on a folder
#: knows an earlier run's outputs, whatever their names.
OUTPUT_MARKER = "fbcnn-plugins"
#: The temporary files core.atomic writes beside an output: ".NAME.RANDOM.part.EXT".
TEMPORARY_NAME = re.compile(r"^\..+\.part(\.[A-Za-z0-9]+)?$")


def is_temporary_name(name: str) -> bool:
    """True for an unfinished write's temporary file (left behind only if the writer was killed)."""
    return bool(TEMPORARY_NAME.match(name))
