"""Reading and writing image files for the command line, without losing anything.

Pixels come back in their real depth (16-bit PNG/TIFF through OpenCV, whose
reader keeps 48-bit colour that Pillow would cut to 8 bits; float TIFF through
tifffile), upright (EXIF orientation applied), with the ICC profile and EXIF
kept so that the written file carries them where its format allows.  Every
frame of an animation or page of a multi-page TIFF is read, so none is lost
without a word.  Every write goes to a temporary file first and is renamed
into place, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fbcnn_plugins import __version__
from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.files.formats import MULTI_FRAME_FORMATS, OUTPUT_MARKER, READ_SUFFIXES, WRITE_FORMATS
from fbcnn_plugins.files.png_metadata import add_png_metadata
from fbcnn_plugins.files.tiff import write_tiff16, write_tiff_pages

__all__ = [
    "READ_SUFFIXES", "WRITE_FORMATS", "ImageFile", "ImageFileError", "check_regular_file", "is_restored_output",
    "output_format", "read_image", "write_frames", "write_image",
]

EIGHT_BIT_ONLY = {"JPEG", "WEBP", "BMP"}
EXIF_ORIENTATION = 0x0112
EXIF_SOFTWARE = 0x0131
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
#: Every frame of an animation is held in memory at once: this many times the one-image pixel limit in all.
FRAME_PIXEL_FACTOR = 4
UNSUPPORTED_MODES = {"CMYK", "I", "LAB", "HSV", "YCbCr"}


class ImageFileError(Exception):
    """A file cannot be read or written as an image; the message names the file."""


@dataclass
class ImageFile:
    pixels: np.ndarray  # the first (or only) frame
    path: Path
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    info: dict = field(default_factory=dict)
    #: Every frame of an animation or multi-page TIFF (``pixels`` is the first); None for a single image.
    frames: list[np.ndarray] | None = None
    #: Display time of each frame in milliseconds (animations), when the file says.
    durations: list[int] | None = None
    #: What the reader noticed but got past (a damaged EXIF tag); the caller shows these.
    notes: list[str] = field(default_factory=list)

    @property
    def frame_count(self) -> int:
        return len(self.frames) if self.frames else 1


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
    check_regular_file(path)
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
                count = int(getattr(image, "n_frames", 1) or 1)
                if count > 1:
                    return _read_frames(path, image, count, limit)
                image.load()
                return _decode(path, image)
    except ImageFileError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageFileError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except Image.DecompressionBombWarning as error:
        raise ImageFileError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except Image.UnidentifiedImageError:
        if _is_tiff(path):  # float colour TIFF: Pillow has no mode for it, tifffile reads it
            return _read_tiff_pages(path, limit)
        raise ImageFileError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageFileError(f"{path}: corrupt or truncated image ({error})") from None


def check_regular_file(path: Path) -> None:
    """Refuse anything but a regular file before opening it: reading a FIFO or a device would block forever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageFileError(f"{path}: no such file") from None
    except OSError as error:
        raise ImageFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise ImageFileError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else (
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
        raise ImageFileError(f"{path}: is {kind}, not a regular image file")


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(4) in TIFF_MAGIC


def _exif_of(image: Image.Image, notes: list[str], path: Path) -> tuple[Image.Exif | None, int]:
    """The EXIF block and the orientation it asks for; a damaged block or tag costs only itself."""
    try:
        exif = image.getexif()
    except Exception as error:  # Pillow raises several types for damaged EXIF
        notes.append(f"{path}: EXIF unreadable, left out ({error})")
        return None, 1
    raw = exif.get(EXIF_ORIENTATION, 1)
    try:
        orientation = int(raw or 1)
        if not 1 <= orientation <= 8:
            raise ValueError
    except (TypeError, ValueError):
        notes.append(f"{path}: EXIF orientation {raw!r} is not 1..8; shown as stored")
        orientation = 1
    return exif, orientation


def _decode(path: Path, image: Image.Image) -> ImageFile:
    mode = image.mode
    if mode in UNSUPPORTED_MODES:
        raise ImageFileError(f"{path}: unsupported image mode {mode} (use RGB, RGBA, gray or 16-bit)")
    notes: list[str] = []
    exif, orientation = _exif_of(image, notes, path)
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
    return ImageFile(
        pixels=_orient(np.array(pixels), orientation),
        path=path,
        format=image.format or "",
        icc_profile=image.info.get("icc_profile"),
        exif=_exif_bytes(exif, notes, path),
        notes=notes,
    )


def _exif_bytes(exif: Image.Exif | None, notes: list[str], path: Path) -> bytes | None:
    """The EXIF block to write back, its orientation reset (the pixels are upright now)."""
    if not exif:
        return None
    exif[EXIF_ORIENTATION] = 1
    try:
        return exif.tobytes()
    except Exception as error:
        notes.append(f"{path}: EXIF cannot be written back, left out ({error})")
        return None


def _read_frames(path: Path, image: Image.Image, count: int, limit: int) -> ImageFile:
    """Every frame of an animation (GIF, WebP, APNG) or page of a multi-page TIFF."""
    width, height = image.size
    if limit and width * height * count > FRAME_PIXEL_FACTOR * limit:
        raise ImageFileError(f"{path}: {count} frames of {width}x{height} exceed the limit of "
                             f"{FRAME_PIXEL_FACTOR * limit} pixels in all (possible decompression bomb)")
    if image.format == "TIFF":
        return _read_tiff_pages(path, limit)
    notes: list[str] = []
    exif, _ = _exif_of(image, notes, path)
    frames, durations = [], []
    for index in range(count):
        image.seek(index)
        frame = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB")
        frames.append(np.asarray(frame).copy())
        durations.append(int(image.info.get("duration", 0) or 0))
    return ImageFile(
        pixels=frames[0], path=path, format=image.format or "", icc_profile=image.info.get("icc_profile"),
        exif=_exif_bytes(exif, notes, path), frames=frames,
        durations=durations if any(durations) else None, info={"loop": image.info.get("loop", 0)}, notes=notes,
    )


def _read_tiff_pages(path: Path, limit: int) -> ImageFile:
    """TIFF pages through tifffile: every page, at its own depth (uint8, uint16 or float32)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)
            total = sum(int(np.prod(page.shape[:2])) for page in pages)
            if limit and total > FRAME_PIXEL_FACTOR * limit:
                raise ImageFileError(f"{path}: {len(pages)} pages of {total} pixels in all exceed the limit "
                                     f"(possible decompression bomb)")
            frames = [_tiff_page_pixels(path, page) for page in pages]
            icc = pages[0].tags.get("InterColorProfile")
            icc_profile = bytes(icc.value) if icc is not None else None
    except ImageFileError:
        raise
    except Exception as error:  # tifffile raises several types for damaged files
        raise ImageFileError(f"{path}: corrupt or unsupported TIFF ({error})") from None
    return ImageFile(pixels=frames[0], path=path, format="TIFF", icc_profile=icc_profile,
                     frames=frames if len(frames) > 1 else None)


def _tiff_page_pixels(path: Path, page) -> np.ndarray:
    pixels = page.asarray()
    if page.planarconfig == 2 and pixels.ndim == 3:  # planes stored one after another
        pixels = np.moveaxis(pixels, 0, 2)
    if pixels.dtype == np.float64 or pixels.dtype == np.float16:
        pixels = pixels.astype(np.float32)
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageFileError(f"{path}: unsupported TIFF sample type {pixels.dtype} (use 8 or 16-bit integers or float)")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 2, 3, 4)):
        raise ImageFileError(f"{path}: unsupported TIFF page layout {pixels.shape}")
    return np.ascontiguousarray(pixels)


def is_restored_output(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` was written by this program (its EXIF Software names it), whatever its name."""
    try:
        check_regular_file(Path(path))
        with Image.open(path) as image:
            software = image.getexif().get(EXIF_SOFTWARE)
            if not software and image.format == "PNG":
                software = image.info.get("Software")
    except Exception:  # an unreadable file is for the reader to report, not this check
        return False
    return isinstance(software, str) and software.startswith(OUTPUT_MARKER)


def output_marker() -> str:
    return f"{OUTPUT_MARKER} {__version__}"


def marked_exif(exif: bytes | None) -> bytes | None:
    """``exif`` with Software set to our marker (a new block if there was none); a damaged block stays as it was."""
    block = Image.Exif()
    if exif:
        try:
            block.load(exif)
        except Exception:
            return exif
    block[EXIF_SOFTWARE] = output_marker()
    try:
        return block.tobytes()
    except Exception:
        return exif


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
    mark: bool = True,
) -> Path:
    """Write atomically in the format the extension names; 16-bit survives in PNG/TIFF, float in TIFF.

    Float samples written to PNG become 16-bit (PNG has no float); see :func:`depth_change`.
    With ``overwrite=False`` an existing file at ``path`` (even one that appeared while the
    image was being restored) is left alone and the write fails.  ``mark`` names this program
    in the EXIF Software tag, which is how a later run recognises the file as an output.
    """
    return write_frames(path, [pixels], icc_profile=icc_profile, exif=exif, quality=quality,
                        overwrite=overwrite, mark=mark)


def write_frames(
    path: str | os.PathLike[str],
    frames: list[np.ndarray],
    *,
    durations: list[int] | None = None,
    loop: int = 0,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
    overwrite: bool = True,
    mark: bool = True,
) -> Path:
    """Write one image, or several as an animated PNG / WebP or a multi-page TIFF, atomically."""
    path = Path(path)
    fmt = output_format(path)
    if len(frames) > 1:
        check_frames_fit(path, frames)
    if mark:
        exif = marked_exif(exif)
    try:
        with atomic_target(path, replace=overwrite) as tmp:
            if len(frames) == 1:
                _write(tmp, fmt, frames[0], icc_profile, exif, quality)
            elif fmt == "TIFF":
                write_tiff_pages(tmp, [_tiff_ready(f) for f in frames], icc_profile=icc_profile, exif=exif)
            else:
                _write_animation(tmp, fmt, frames, durations, loop, icc_profile, exif, quality)
    except FileExistsError:
        raise ImageFileError(f"{path}: output exists (use --overwrite to replace it)") from None
    except ImageFileError:
        raise
    except Exception as error:
        raise ImageFileError(f"{path}: cannot write image ({error})") from None
    return path


def check_frames_fit(path: str | os.PathLike[str], frames: list[np.ndarray]) -> None:
    """Refuse, before any work, to write several frames where they cannot all go."""
    fmt = output_format(path)
    if fmt not in MULTI_FRAME_FORMATS:
        raise ImageFileError(f"{path}: {fmt} holds one image, not {len(frames)} frames; "
                             "write PNG (animated), TIFF (pages) or WebP (animated)")
    if fmt != "TIFF":
        if any(f.dtype != np.uint8 for f in frames):
            raise ImageFileError(f"{path}: an animated {fmt} holds 8-bit frames only; write TIFF to keep "
                                 f"{frames[0].dtype} pages")
        if len({f.shape[:2] for f in frames}) > 1:
            raise ImageFileError(f"{path}: the pages differ in size, which an animated {fmt} cannot hold; write TIFF")


def depth_change(fmt: str, dtype: np.dtype, frames: int = 1) -> str | None:
    """What writing ``dtype`` samples as ``fmt`` does to them, when it is not lossless; None when it is."""
    dtype = np.dtype(dtype)
    if dtype == np.float32 and fmt == "PNG":
        return "float samples clipped to [0, 1] and written as 16-bit PNG (use TIFF to keep float)"
    if dtype == np.float32 and fmt != "TIFF":
        return f"float samples clipped to [0, 1] and written as 8-bit {fmt} (use TIFF to keep float)"
    if dtype == np.uint16 and fmt in EIGHT_BIT_ONLY:
        return f"16-bit samples written as 8-bit {fmt} (use PNG or TIFF to keep 16 bits)"
    return None


def _tiff_ready(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.dtype in (np.uint8, np.uint16, np.float32) else _to_uint8(pixels)


def _write_animation(tmp: Path, fmt: str, frames: list[np.ndarray], durations: list[int] | None, loop: int,
                     icc: bytes | None, exif: bytes | None, quality: int) -> None:
    images = [Image.fromarray(_to_uint8(f)) for f in frames]
    mode = "RGBA" if any(i.mode in ("RGBA", "LA") for i in images) else ("RGB" if any(i.mode == "RGB" for i in images) else "L")
    images = [i.convert(mode) for i in images]
    options: dict = {"save_all": True, "append_images": images[1:], "loop": loop}
    if durations:
        options["duration"] = durations
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    if fmt == "WEBP":
        options["quality"] = quality
    images[0].save(tmp, format=fmt, **options)


def _write(tmp: Path, fmt: str, pixels: np.ndarray, icc: bytes | None, exif: bytes | None, quality: int) -> None:
    if pixels.dtype == np.float32:
        if fmt == "TIFF":
            write_tiff16(tmp, pixels, icc_profile=icc, exif=exif)
            return
        if fmt == "PNG":  # PNG has no float: 16 bits keep far more of it than 8
            pixels = np.rint(np.clip(pixels, 0.0, 1.0) * 65535.0).astype(np.uint16)
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
