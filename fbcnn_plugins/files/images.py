"""Reading and writing image files for the command line, without losing anything.

Pixels come back in their real depth (16-bit PNG/TIFF through OpenCV, whose
reader keeps 48-bit colour that Pillow would cut to 8 bits; float TIFF through
tifffile), upright (EXIF orientation applied), with the ICC profile and EXIF
kept so that the written file carries them where its format allows (and so
are XMP, a JPEG comment, PNG text and the DPI; what the output format cannot
hold is named in the file's notes).  Every frame of an animation or page of a
multi-page TIFF is read, so none is lost without a word; a camera's MPO file
is read as the JPEG it starts with.  Every file is encoded in memory, written
to a temporary file, flushed and checked, and only then renamed into place:
an interrupted run or a full disk never leaves a truncated output.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fbcnn_plugins import __version__
from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.files.formats import MULTI_FRAME_FORMATS, OUTPUT_MARKER, READ_SUFFIXES, WRITE_FORMATS, XCF_SUFFIX
from fbcnn_plugins.files.png_metadata import add_png_metadata
from fbcnn_plugins.files.tiff import encode_tiff_pages

__all__ = [
    "READ_SUFFIXES", "WRITE_FORMATS", "ImageFile", "ImageFileError", "check_regular_file", "is_restored_output",
    "metadata_losses", "output_format", "read_image", "write_complete", "write_frames", "write_image",
]

EIGHT_BIT_ONLY = {"JPEG", "WEBP", "BMP"}
EXIF_ORIENTATION = 0x0112
EXIF_SOFTWARE = 0x0131
TIFF_ORIENTATION = 274
#: Tags of a TIFF's own directory that describe how its pixels are stored (size, samples, strips, tiles,
#: palette, compression...), and its ICC profile and XMP (carried on their own).  Pillow hands them out
#: as the file's "EXIF"; written into another file they would describe pixels it does not have.
TIFF_STRUCTURE_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 290, 291, 292, 293,
    297, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, 512, 513, 514,
    515, 517, 518, 519, 520, 521, 529, 530, 531, 532, 700, 34675, 37724, 50341,
})
#: The largest EXIF block a JPEG APP1 segment holds ("Exif\0\0" and the TIFF data).
JPEG_EXIF_LIMIT = 65533
#: The PNG text keyword of an XMP packet (always an iTXt chunk: readers look for XMP there only).
XMP_KEY = "XML:com.adobe.xmp"
#: Written into the BMP file header's two reserved fields, which the format leaves to the application
#: that wrote the file (BMP has no EXIF): how a later run recognises a BMP output.
BMP_MARKER = b"FBcn"
#: Appended after the last byte of a restored XCF (GIMP reads only what its pointers reach).
XCF_MARKER = f"\0{OUTPUT_MARKER} output\0".encode()
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
    #: Other metadata to carry over: "xmp" (bytes), "comment" (bytes), "text" (PNG text, dict), "dpi".
    metadata: dict = field(default_factory=dict)

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
                if image.format == "MPO":  # a JPEG with a depth map, preview or stereo view appended
                    return _read_mpo(path, image, count)
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


def _read_mpo(path: Path, image: Image.Image, count: int) -> ImageFile:
    """The primary image of an MPO file: the photo itself, read as the JPEG it is (its tables, EXIF, ICC)."""
    image.seek(0)
    image.load()
    decoded = _decode(path, image)
    decoded.format = "JPEG"
    if count > 1:
        decoded.notes.append(f"{path}: {count - 1} more image(s) after the photo (MPO: depth map, preview or "
                             "stereo view) left out; the output holds the photo")
    return decoded


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
        if image.format == "TIFF":
            for code in TIFF_STRUCTURE_TAGS & set(exif):
                del exif[code]
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
    elif mode in ("L", "RGB") and "transparency" in image.info:  # a PNG colour key (tRNS): make it real alpha
        image = image.convert(mode + "A")
        mode = image.mode
    if mode.startswith("I;16"):
        pixels = np.asarray(image.convert("I;16")).astype(np.uint16)
    elif mode == "F":
        pixels = np.asarray(image, dtype=np.float32)
    elif mode in ("L", "LA", "RGB", "RGBA"):
        pixels = np.asarray(image)
        if mode in ("RGB", "RGBA") and image.format in ("PNG", "TIFF"):
            deep = _read_deep(path)
            if deep is not None and deep.shape == pixels.shape:
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
        metadata=_metadata_of(image),
    )


def _metadata_of(image: Image.Image) -> dict:
    """XMP, a JPEG comment, PNG text chunks and the DPI: what Pillow reads besides ICC and EXIF."""
    info, found = image.info, {}
    xmp = info.get("xmp") or info.get(XMP_KEY)
    if xmp:
        found["xmp"] = xmp.encode() if isinstance(xmp, str) else bytes(xmp)
    if isinstance(info.get("comment"), bytes) and info["comment"]:
        found["comment"] = info["comment"]
    if image.format == "PNG":
        text = {k: v for k, v in info.items() if isinstance(v, str) and k != XMP_KEY}
        if text:
            found["text"] = text
    dpi = info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2 and all(isinstance(d, (int, float)) and d > 0 for d in dpi):
        found["dpi"] = (round(float(dpi[0]), 3), round(float(dpi[1]), 3))
    return found


def _exif_bytes(exif: Image.Exif | None, notes: list[str], path: Path) -> bytes | None:
    """The EXIF block to write back, its orientation reset (the pixels are upright now)."""
    if not exif:
        return None
    if EXIF_ORIENTATION in exif:
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
    exif, orientation = _exif_of(image, notes, path)
    metadata = _metadata_of(image)
    frames, durations = [], []
    for index in range(count):
        image.seek(index)
        frame = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB")
        frames.append(_orient(np.asarray(frame).copy(), orientation))  # upright, as the tag (reset below) asked
        durations.append(int(image.info.get("duration", 0) or 0))
    return ImageFile(
        pixels=frames[0], path=path, format=image.format or "", icc_profile=image.info.get("icc_profile"),
        exif=_exif_bytes(exif, notes, path), frames=frames,
        durations=durations if any(durations) else None, info={"loop": image.info.get("loop", 0)}, notes=notes,
        metadata=metadata,
    )


def _read_tiff_pages(path: Path, limit: int) -> ImageFile:
    """TIFF pages through tifffile: every page, at its own depth (uint8, uint16 or float32)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)
            # Pixels from the declared width and length: a planar page's shape starts with its samples.
            sizes = [int(page.imagewidth) * int(page.imagelength) for page in pages]
            if limit and max(sizes) > limit:
                raise ImageFileError(f"{path}: a page of {max(sizes)} pixels exceeds the limit of {limit} "
                                     "(possible decompression bomb)")
            if limit and sum(sizes) > FRAME_PIXEL_FACTOR * limit:
                raise ImageFileError(f"{path}: {len(pages)} pages of {sum(sizes)} pixels in all exceed the limit "
                                     f"(possible decompression bomb)")
            frames = [_orient(_tiff_page_pixels(path, page), _tiff_orientation(page)) for page in pages]
            icc = pages[0].tags.get("InterColorProfile")
            icc_profile = bytes(icc.value) if icc is not None else None
    except ImageFileError:
        raise
    except Exception as error:  # tifffile raises several types for damaged files
        raise ImageFileError(f"{path}: corrupt or unsupported TIFF ({error})") from None
    return ImageFile(pixels=frames[0], path=path, format="TIFF", icc_profile=icc_profile,
                     frames=frames if len(frames) > 1 else None)


def _tiff_orientation(page) -> int:
    """A page's Orientation tag (1..8; anything else is taken as 1): its pixels are turned upright on reading."""
    tag = page.tags.get(TIFF_ORIENTATION)
    try:
        value = int(tag.value) if tag is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


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
        with open(path, "rb") as stream:
            head = stream.read(14)
            if head.startswith(b"gimp xcf "):
                stream.seek(max(0, os.fstat(stream.fileno()).st_size - len(XCF_MARKER)))
                return stream.read() == XCF_MARKER
            if head.startswith(b"BM"):
                return head[6:10] == BMP_MARKER
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


def write_image(path: str | os.PathLike[str], pixels: np.ndarray, **options: Any) -> Path:
    """Write one image atomically in the format the extension names; ``options`` as for :func:`write_frames`.

    16-bit survives in PNG/TIFF, float in TIFF; float samples written to PNG become 16-bit
    (PNG has no float), see :func:`depth_change`.
    """
    return write_frames(path, [pixels], **options)


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
    metadata: dict | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write one image, or several as an animated PNG / WebP or a multi-page TIFF, atomically.

    The file is encoded in memory first and then written, flushed to the disk and its size
    checked before it takes its name: a full disk fails the write and leaves the old file.
    With ``overwrite=False`` an existing file at ``path`` (even one that appeared while the
    image was being restored) is left alone and the write fails.  ``mark`` names this program
    in the EXIF Software tag (in a BMP, in its header's reserved fields), which is how a later
    run recognises the file as an output.  What the format cannot hold of ``metadata`` (see
    :attr:`ImageFile.metadata`) and of the EXIF is appended to ``notes``.
    """
    path = Path(path)
    fmt = output_format(path)
    if len(frames) > 1:
        check_frames_fit(path, frames)
    metadata = dict(metadata or {})
    lost = metadata_losses(fmt, metadata, frames, icc_profile=icc_profile, exif=exif)
    if mark:
        exif = marked_exif(exif)
    exif = _exif_that_fits(fmt, exif, lost)
    try:
        data = _encode(fmt, frames, durations, loop, icc_profile, exif, quality, metadata)
        if fmt == "BMP" and mark:
            data = data[:6] + BMP_MARKER + data[10:]
        with atomic_target(path, replace=overwrite) as tmp:
            write_complete(tmp, data)
    except FileExistsError:
        raise ImageFileError(f"{path}: output exists (use --overwrite to replace it)") from None
    except ImageFileError:
        raise
    except Exception as error:
        raise ImageFileError(f"{path}: cannot write image ({error})") from None
    if notes is not None:
        notes.extend(f"{path}: {what}" for what in lost)
    return path


#: Which formats hold which metadata (as this writer writes them).
KEEPS = {
    "icc": {"JPEG", "PNG", "TIFF", "WEBP"},
    "exif": {"JPEG", "PNG", "TIFF", "WEBP"},
    "xmp": {"JPEG", "PNG", "TIFF", "WEBP"},
    "comment": {"JPEG", "PNG"},
    "text": {"PNG"},
    "dpi": {"JPEG", "PNG", "TIFF", "BMP"},
}
METADATA_NAMES = {"icc": "ICC profile", "exif": "EXIF", "xmp": "XMP", "comment": "JPEG comment",
                  "text": "PNG text", "dpi": "DPI"}


def metadata_losses(fmt: str, metadata: dict, frames: list[np.ndarray], *, icc_profile: bytes | None = None,
                    exif: bytes | None = None) -> list[str]:
    """What writing these frames and this metadata as ``fmt`` leaves out, one line each (none when nothing)."""
    present = {"icc": icc_profile, "exif": exif, **{k: metadata.get(k) for k in ("xmp", "comment", "text", "dpi")}}
    lost = [f"{METADATA_NAMES[k]} left out ({fmt} has no place for it)"
            for k, value in present.items() if value and fmt not in KEEPS[k]]
    if fmt == "JPEG" and frames[0].ndim == 3 and frames[0].shape[2] in (2, 4):
        lost.append("transparency (alpha) left out: JPEG has none; write PNG, TIFF or WebP to keep it")
    return lost


def _exif_that_fits(fmt: str, exif: bytes | None, lost: list[str]) -> bytes | None:
    """A JPEG holds at most 64 KB of EXIF: a block the marker pushed over that goes without the marker."""
    if fmt != "JPEG" or exif is None or len(exif) <= JPEG_EXIF_LIMIT:
        return exif
    unmarked = Image.Exif()
    try:
        unmarked.load(exif)
        if str(unmarked.get(EXIF_SOFTWARE, "")).startswith(OUTPUT_MARKER):
            del unmarked[EXIF_SOFTWARE]
        if unmarked.get(EXIF_ORIENTATION) == 1:  # upright is what a reader assumes without the tag
            del unmarked[EXIF_ORIENTATION]
        data = unmarked.tobytes()
    except Exception:
        data = b""
    if data and len(data) <= JPEG_EXIF_LIMIT:
        lost.append("EXIF kept without the Software tag (the block is at JPEG's 64 KB limit), so a later run "
                    "does not recognise this file as an output")
        return data
    lost.append(f"EXIF left out: {len(exif)} bytes exceed the 64 KB a JPEG holds")
    return None


def write_complete(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, flush it to the disk and check its size: a full disk raises, never truncates."""
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
        written = os.fstat(stream.fileno()).st_size
    if written != len(data):
        raise OSError(f"only {written} of {len(data)} bytes reached the disk")


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


def _encode(fmt: str, frames: list[np.ndarray], durations: list[int] | None, loop: int, icc: bytes | None,
            exif: bytes | None, quality: int, metadata: dict) -> bytes:
    """The whole file, in memory."""
    if fmt == "TIFF" and (len(frames) > 1 or frames[0].dtype != np.uint8):
        return encode_tiff_pages([_tiff_ready(f) for f in frames], icc_profile=icc, exif=exif,
                                 xmp=metadata.get("xmp"), dpi=metadata.get("dpi"))
    if len(frames) > 1:
        return _encode_animation(fmt, frames, durations, loop, icc, exif, quality, metadata)
    return _encode_one(fmt, frames[0], icc, exif, quality, metadata)


def _pillow_options(fmt: str, icc: bytes | None, exif: bytes | None, quality: int, metadata: dict) -> dict:
    options: dict = {}
    if icc and fmt in KEEPS["icc"]:
        options["icc_profile"] = icc
    if exif and fmt in KEEPS["exif"]:
        options["exif"] = exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if metadata.get("dpi") and fmt in KEEPS["dpi"]:
        options["dpi"] = metadata["dpi"]
    xmp = metadata.get("xmp")
    if fmt in ("JPEG", "WEBP") and xmp:
        options["xmp"] = xmp
    if fmt == "JPEG" and metadata.get("comment"):
        options["comment"] = metadata["comment"]
    if fmt == "TIFF" and xmp:
        options["tiffinfo"] = {700: xmp}
    if fmt == "PNG":
        from PIL import PngImagePlugin

        chunks = PngImagePlugin.PngInfo()
        for key, value in png_text(metadata).items():
            if _latin1(value) and key != XMP_KEY:
                chunks.add_text(key, value)
            else:
                chunks.add_itxt(key, value)
        options["pnginfo"] = chunks
    return options


def png_text(metadata: dict) -> dict[str, str]:
    """The PNG text chunks that carry ``metadata``'s text, XMP and comment."""
    text = dict(metadata.get("text") or {})
    if metadata.get("xmp"):
        text[XMP_KEY] = bytes(metadata["xmp"]).decode("utf-8", "replace")
    if metadata.get("comment") and "Comment" not in text:
        text["Comment"] = bytes(metadata["comment"]).decode("utf-8", "replace")
    return text


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _encode_animation(fmt: str, frames: list[np.ndarray], durations: list[int] | None, loop: int,
                      icc: bytes | None, exif: bytes | None, quality: int, metadata: dict) -> bytes:
    images = [Image.fromarray(_to_uint8(f)) for f in frames]
    mode = "RGBA" if any(i.mode in ("RGBA", "LA") for i in images) else ("RGB" if any(i.mode == "RGB" for i in images) else "L")
    images = [i.convert(mode) for i in images]
    options = _pillow_options(fmt, icc, exif, quality, metadata)
    options.update({"save_all": True, "append_images": images[1:], "loop": loop})
    if durations:
        options["duration"] = durations
    stream = io.BytesIO()
    images[0].save(stream, format=fmt, **options)
    return stream.getvalue()


def _encode_one(fmt: str, pixels: np.ndarray, icc: bytes | None, exif: bytes | None, quality: int,
                metadata: dict) -> bytes:
    if pixels.dtype == np.float32 and fmt == "PNG":  # PNG has no float: 16 bits keep far more of it than 8
        pixels = np.rint(np.clip(pixels, 0.0, 1.0) * 65535.0).astype(np.uint16)
    if pixels.dtype == np.uint16 and fmt == "PNG":
        if pixels.ndim == 3 and pixels.shape[2] == 2:  # OpenCV takes no 16-bit gray+alpha: keep the depth as RGBA
            pixels = np.dstack([pixels[:, :, 0]] * 3 + [pixels[:, :, 1]])
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        bgr = pixels if pixels.ndim == 2 else pixels[:, :, [2, 1, 0, 3][: pixels.shape[2]]]
        done, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
        if not done:
            raise ImageFileError("OpenCV failed to encode a 16-bit PNG")
        return add_png_metadata(encoded.tobytes(), icc_profile=icc, exif=exif, text=png_text(metadata),
                                dpi=metadata.get("dpi"))
    image = Image.fromarray(_to_uint8(pixels))
    if fmt == "JPEG" and image.mode in ("LA", "RGBA"):
        image = image.convert(image.mode[:-1])
    stream = io.BytesIO()
    image.save(stream, format=fmt, **_pillow_options(fmt, icc, exif, quality, metadata))
    return stream.getvalue()


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        array = pixels
    elif pixels.dtype == np.uint16:
        array = np.rint(pixels / 257.0).astype(np.uint8)
    else:
        array = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return array.reshape(array.shape[:2]) if array.ndim == 3 and array.shape[2] == 1 else array
