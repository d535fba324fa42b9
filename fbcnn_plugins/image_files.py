"""Reading and writing image files for the command line, without losing anything.

Pixels come back in their real depth (16-bit PNG/TIFF through OpenCV, whose
reader keeps 48-bit colour that Pillow would cut to 8 bits), upright
(EXIF orientation applied), with the ICC profile and EXIF kept so that the
written file carries them where its format allows.  Every write goes to a
temporary file first and is renamed into place, so an interrupted run never
leaves a half-written output.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.png_metadata import add_png_metadata
from fbcnn_plugins.tiff16 import write_tiff16

WRITE_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".webp": "WEBP", ".bmp": "BMP",
}
READ_SUFFIXES = set(WRITE_FORMATS) | {".jfif", ".jpe", ".xcf"}  # XCF: layer by layer, see xcf_files
EIGHT_BIT_ONLY = {"JPEG", "WEBP", "BMP"}
EXIF_ORIENTATION = 0x0112
UNSUPPORTED_MODES = {"CMYK", "I", "LAB", "HSV", "YCbCr"}


class ImageFileError(Exception):
    """A file cannot be read or written as an image; the message names the file."""


@dataclass
class ImageFile:
    pixels: np.ndarray
    path: Path
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    info: dict = field(default_factory=dict)


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an HxW[xC] array."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[::-1, :],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms[orientation](array)) if orientation in transforms else array


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> ImageFile:
    """Decode ``path`` into a numpy array (uint8, uint16 or float32; gray, gray+alpha, RGB or RGBA)."""
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"{path}: no such file")
    if path.is_dir():
        raise ImageFileError(f"{path}: is a folder, not an image")
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if limit and width * height > limit:
                    raise ImageFileError(
                        f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of {limit} "
                        "(possible decompression bomb)"
                    )
                image.load()
                return _decode(path, image)
    except ImageFileError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageFileError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except Image.DecompressionBombWarning as error:
        raise ImageFileError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except Image.UnidentifiedImageError:
        raise ImageFileError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageFileError(f"{path}: corrupt or truncated image ({error})") from None


def _decode(path: Path, image: Image.Image) -> ImageFile:
    mode = image.mode
    if mode in UNSUPPORTED_MODES:
        raise ImageFileError(f"{path}: unsupported image mode {mode} (use RGB, RGBA, gray or 16-bit)")
    exif = image.getexif()
    orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
    if mode in ("1", "P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else ("L" if mode == "1" else "RGB"))
        mode = image.mode
    if mode.startswith("I;16"):
        pixels = np.asarray(image.convert("I;16")).astype(np.uint16)
    elif mode == "F":
        pixels = np.asarray(image, dtype=np.float32)
    elif mode in ("L", "LA", "RGB", "RGBA"):
        pixels = np.asarray(image)
        if mode in ("RGB", "RGBA") and image.format in ("PNG", "TIFF"):
            deep = _read_deep(path)
            if deep is not None and deep.shape[:2] == pixels.shape[:2]:
                pixels = deep
    else:
        raise ImageFileError(f"{path}: unsupported image mode {mode}")
    if exif:
        exif[EXIF_ORIENTATION] = 1
    return ImageFile(
        pixels=_orient(np.array(pixels), orientation),
        path=path,
        format=image.format or "",
        icc_profile=image.info.get("icc_profile"),
        exif=exif.tobytes() if exif else None,
    )


def _read_deep(path: Path) -> np.ndarray | None:
    """16-bit colour through OpenCV, or None when the file is 8-bit."""
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3:
        return None
    order = [2, 1, 0, 3] if decoded.shape[2] == 4 else [2, 1, 0]
    return np.ascontiguousarray(decoded[:, :, order])


def output_format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return WRITE_FORMATS[suffix]
    except KeyError:
        raise ImageFileError(f"{path}: cannot write {suffix or 'files without an extension'}; use one of {', '.join(sorted(WRITE_FORMATS))}") from None


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
    overwrite: bool = True,
) -> Path:
    """Write atomically in the format the extension names; 16-bit and float survive in PNG/TIFF.

    With ``overwrite=False`` an existing file at ``path`` (even one that appeared while the
    image was being restored) is left alone and the write fails.
    """
    path = Path(path)
    fmt = output_format(path)
    try:
        with atomic_target(path, replace=overwrite) as tmp:
            _write(tmp, fmt, pixels, icc_profile, exif, quality)
    except FileExistsError:
        raise ImageFileError(f"{path}: output exists (use --overwrite to replace it)") from None
    except ImageFileError:
        raise
    except Exception as error:
        raise ImageFileError(f"{path}: cannot write image ({error})") from None
    return path


def _write(tmp: Path, fmt: str, pixels: np.ndarray, icc: bytes | None, exif: bytes | None, quality: int) -> None:
    if pixels.dtype == np.uint16 and fmt in ("PNG", "TIFF"):
        if pixels.ndim == 3 and pixels.shape[2] == 2:  # neither writer takes 16-bit gray+alpha: keep the depth as RGBA
            pixels = np.dstack([pixels[:, :, 0]] * 3 + [pixels[:, :, 1]])
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        if fmt == "TIFF":
            write_tiff16(tmp, np.ascontiguousarray(pixels), icc_profile=icc, exif=exif)
            return
        bgr = pixels if pixels.ndim == 2 else pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(bgr)):
            raise ImageFileError(f"{tmp}: OpenCV failed to write 16-bit PNG")
        add_png_metadata(tmp, icc_profile=icc, exif=exif)
        return
    if pixels.dtype == np.float32 and fmt == "TIFF" and (pixels.ndim == 2 or pixels.shape[2] == 1):
        Image.fromarray(pixels.reshape(pixels.shape[:2]), mode="F").save(tmp, format="TIFF")
        return
    image = Image.fromarray(_to_uint8(pixels))
    options: dict = {}
    if icc:
        options["icc_profile"] = icc
    if exif and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        options["exif"] = exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
        if fmt == "JPEG" and image.mode in ("LA", "RGBA"):
            image = image.convert(image.mode[:-1])
    image.save(tmp, format=fmt, **options)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        array = pixels
    elif pixels.dtype == np.uint16:
        array = np.rint(pixels / 257.0).astype(np.uint8)
    else:
        array = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return array.reshape(array.shape[:2]) if array.ndim == 3 and array.shape[2] == 1 else array
