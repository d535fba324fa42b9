"""Restoring the raster layers of GIMP XCF files without GIMP.

gimpformats (2025) cannot read the XCF files GIMP 3 writes (it stops at
layer properties it does not know) and refuses to save any XCF, so this
module reads and writes the format itself, for the one job it has: replace
the pixels of raster layers and keep everything else exactly as it was.

It does that by *appending*: the restored tiles of each layer are added at
the end of a byte-for-byte copy of the file and the layer's tile pointers are
redirected to them.  Every property, parasite, channel, path, layer mask,
group and text layer stays identical; the old tiles remain as dead bytes
(the file grows by the size of the restored layers), and a marker after the
last tile tells a later run that the file is an output.  Layer groups (their
pixels are a projection GIMP recomputes), text layers (GIMP re-renders them
from their text) and indexed layers are left untouched and reported.

Every size the file declares (image, layers, tile pointers) is checked against
the same pixel limit as any other image before anything is allocated, so a
small file cannot make the reader allocate gigabytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fbcnn_plugins.core.atomic import atomic_target
from PIL import Image

from fbcnn_plugins.files.images import XCF_MARKER, ImageFileError, check_regular_file, write_complete

TILE = 64
PROP_END, PROP_COMPRESSION, PROP_OFFSETS, PROP_VISIBLE = 0, 17, 15, 8
PROP_PARASITES, PROP_TEXT_LAYER_FLAGS, PROP_GROUP_ITEM = 21, 26, 29
COMPRESSION_NONE, COMPRESSION_RLE, COMPRESSION_ZLIB = 0, 1, 2
#: Layer types: channels, and whether the last channel is alpha.  4 and 5 are indexed.
LAYER_TYPES = {0: (3, False), 1: (4, True), 2: (1, False), 3: (2, True)}
#: XCF precision codes (file version 7 and later): (big-endian component dtype, linear light).
PRECISIONS = {
    100: (">u1", True), 150: (">u1", False), 175: (">u1", False),
    200: (">u2", True), 250: (">u2", False), 275: (">u2", False),
    300: (">u4", True), 350: (">u4", False), 375: (">u4", False),
    500: (">f2", True), 550: (">f2", False), 575: (">f2", False),
    600: (">f4", True), 650: (">f4", False), 675: (">f4", False),
    700: (">f8", True), 750: (">f8", False), 775: (">f8", False),
}


@dataclass
class XcfLayer:
    index: int
    name: str
    width: int
    height: int
    layer_type: int
    offsets: tuple[int, int]
    visible: bool
    skip_reason: str | None  # why the layer is left as it is, or None for a raster layer we restore
    bpp: int = 0
    tile_pointer_positions: list[int] = field(default_factory=list)  # where each tile's pointer is stored
    tile_offsets: list[int] = field(default_factory=list)


@dataclass
class XcfImage:
    path: Path
    data: bytes
    version: int
    width: int
    height: int
    base_type: int
    dtype: np.dtype
    linear: bool
    compression: int
    layers: list[XcfLayer]
    parasites: dict[str, bytes]

    @property
    def pointer_size(self) -> int:
        return 8 if self.version >= 11 else 4


class _Reader:
    def __init__(self, data: bytes, path: Path, pointer_size: int = 4) -> None:
        self.data, self.path, self.pointer_size = data, path, pointer_size

    def fail(self, what: str) -> ImageFileError:
        return ImageFileError(f"{self.path}: {what}")

    def u32(self, at: int) -> int:
        if at + 4 > len(self.data):
            raise self.fail(f"XCF file is truncated (needs byte {at + 4}, has {len(self.data)})")
        return struct.unpack_from(">I", self.data, at)[0]

    def i32(self, at: int) -> int:
        return struct.unpack_from(">i", self.data, at)[0] if at + 4 <= len(self.data) else self.u32(at)

    def pointer(self, at: int) -> int:
        if self.pointer_size == 4:
            return self.u32(at)
        if at + 8 > len(self.data):
            raise self.fail("XCF file is truncated")
        return struct.unpack_from(">Q", self.data, at)[0]

    def string(self, at: int) -> tuple[str, int]:
        length = self.u32(at)
        raw = self.data[at + 4 : at + 4 + length]
        return raw.rstrip(b"\0").decode("utf-8", "replace"), at + 4 + length

    def properties(self, at: int) -> tuple[dict[int, bytes], int]:
        found: dict[int, bytes] = {}
        while True:
            kind, length = self.u32(at), self.u32(at + 4)
            payload = self.data[at + 8 : at + 8 + length]
            if len(payload) != length:
                raise self.fail("XCF file is truncated inside a property list")
            at += 8 + length
            if kind == PROP_END:
                return found, at
            found[kind] = payload


def _parasites(payload: bytes) -> dict[str, bytes]:
    found, at = {}, 0
    while at + 4 <= len(payload):
        length = struct.unpack_from(">I", payload, at)[0]
        name = payload[at + 4 : at + 4 + length].rstrip(b"\0").decode("utf-8", "replace")
        at += 4 + length
        if at + 8 > len(payload):
            break
        _flags, size = struct.unpack_from(">II", payload, at)
        found[name] = payload[at + 8 : at + 8 + size]
        at += 8 + size
    return found


def read_xcf(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> XcfImage:
    """Parse an XCF file's structure (not its pixels); clear errors for what cannot be handled.

    ``max_pixels`` (default: Pillow's decompression-bomb limit) bounds the image and every
    layer; all layers together may hold four times as many.
    """
    path = Path(path)
    check_regular_file(path)  # a FIFO or a device would block or never end
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageFileError(f"{path}: {error.strerror or error}") from error
    if not data.startswith(b"gimp xcf ") or len(data) < 30:
        raise ImageFileError(f"{path}: not an XCF file")
    tag = data[9:13]
    version = 0 if tag == b"file" else int(tag[1:]) if tag[:1] == b"v" and tag[1:].isdigit() else -1
    if version < 0:
        raise ImageFileError(f"{path}: unknown XCF version tag {tag!r}")
    reader = _Reader(data, path)
    width, height, base_type = reader.u32(14), reader.u32(18), reader.u32(22)
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    _check_pixels(path, "the image", width, height, limit)
    at = 26
    if version >= 4:
        code = reader.u32(at)
        at += 4
        if version < 7:
            raise ImageFileError(f"{path}: XCF version {version} (a GIMP 2.9 development format) is not supported; "
                                 "open and save it once in GIMP 2.10 or 3")
    else:
        code = 150
    if code not in PRECISIONS:
        raise ImageFileError(f"{path}: unknown XCF precision {code}")
    if base_type == 2:
        raise ImageFileError(f"{path}: indexed XCF images are not supported; convert the image to RGB in GIMP first")
    dtype, linear = PRECISIONS[code]
    properties, at = reader.properties(at)
    compression = properties.get(PROP_COMPRESSION, b"\0")[0]
    if compression not in (COMPRESSION_NONE, COMPRESSION_RLE, COMPRESSION_ZLIB):
        raise ImageFileError(f"{path}: unknown XCF tile compression {compression}")
    image = XcfImage(path, data, version, width, height, base_type, np.dtype(dtype), linear, compression, [],
                     _parasites(properties.get(PROP_PARASITES, b"")))
    reader.pointer_size = image.pointer_size
    index, total = 0, 0
    while (offset := reader.pointer(at)) != 0:
        layer = _read_layer(reader, offset, index, image, limit)
        total += layer.width * layer.height
        if limit and total > LAYERS_PIXEL_FACTOR * limit:
            raise ImageFileError(f"{path}: the layers hold {total} pixels in all, more than "
                                 f"{LAYERS_PIXEL_FACTOR * limit} (possible decompression bomb)")
        image.layers.append(layer)
        at += reader.pointer_size
        index += 1
    return image


#: All layers of an XCF together may hold this many times the one-image pixel limit.
LAYERS_PIXEL_FACTOR = 4


def _check_pixels(path: Path, what: str, width: int, height: int, limit: int) -> None:
    if limit and width * height > limit:
        raise ImageFileError(f"{path}: {what} declares {width}x{height} = {width * height} pixels, more than the "
                             f"limit of {limit} (possible decompression bomb)")


def _read_layer(reader: _Reader, at: int, index: int, image: XcfImage, limit: int) -> XcfLayer:
    width, height, layer_type = reader.u32(at), reader.u32(at + 4), reader.u32(at + 8)
    name, at = reader.string(at + 12)
    _check_pixels(reader.path, f"layer {name!r}", width, height, limit)
    properties, at = reader.properties(at)
    offsets = (0, 0)
    if PROP_OFFSETS in properties:
        offsets = struct.unpack(">ii", properties[PROP_OFFSETS][:8])
    visible = struct.unpack(">I", properties[PROP_VISIBLE][:4])[0] != 0 if PROP_VISIBLE in properties else True
    skip = None
    if PROP_GROUP_ITEM in properties:
        skip = "layer group (GIMP recomputes its pixels from the layers inside)"
    elif PROP_TEXT_LAYER_FLAGS in properties or b"gimp-text-layer" in properties.get(PROP_PARASITES, b""):
        skip = "text layer (GIMP renders it from its text)"
    elif layer_type not in LAYER_TYPES:
        skip = "indexed layer"
    layer = XcfLayer(index, name, width, height, layer_type, tuple(offsets), visible, skip)
    if skip:
        return layer
    hierarchy = reader.pointer(at)
    layer.bpp = reader.u32(hierarchy + 8)
    channels = LAYER_TYPES[layer_type][0]
    if layer.bpp != channels * image.dtype.itemsize:
        raise reader.fail(f"layer {name!r}: {layer.bpp} bytes per pixel do not fit {channels} channels "
                          f"of {image.dtype.itemsize} bytes")
    level = reader.pointer(hierarchy + 12)
    count = -(-width // TILE) * -(-height // TILE)
    at = level + 8
    for _ in range(count):
        pointer = reader.pointer(at)
        if pointer == 0:
            raise reader.fail(f"layer {name!r}: fewer tiles than its size needs")
        if pointer >= len(reader.data):
            raise reader.fail(f"layer {name!r}: a tile pointer ({pointer}) points past the end of the file")
        layer.tile_pointer_positions.append(at)
        layer.tile_offsets.append(pointer)
        at += reader.pointer_size
    return layer


def _tile_rects(width: int, height: int):
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            yield top, left, min(TILE, height - top), min(TILE, width - left)


def _decode_rle(data: bytes, at: int, pixels: int, bpp: int, path: Path) -> bytes:
    """XCF RLE: each byte plane of the tile in turn, as repeat runs and literal runs."""
    planes = np.empty((bpp, pixels), dtype=np.uint8)
    for plane in range(bpp):
        decoded = bytearray()
        while len(decoded) < pixels:
            if at >= len(data):
                raise ImageFileError(f"{path}: XCF tile data is truncated")
            op = data[at]
            at += 1
            long_run = op in (127, 128)
            if long_run:
                count = (data[at] << 8) | data[at + 1]
                at += 2
            if op >= 128:  # literal bytes
                count = count if long_run else 256 - op
                decoded += data[at : at + count]
                at += count
            else:  # one byte repeated
                count = count if long_run else op + 1
                decoded += data[at : at + 1] * count
                at += 1
        if len(decoded) != pixels:
            raise ImageFileError(f"{path}: corrupt RLE data in an XCF tile")
        planes[plane] = np.frombuffer(bytes(decoded), dtype=np.uint8)
    return planes.T.tobytes()


def _encode_rle(raw: bytes, bpp: int) -> bytes:
    """Each byte plane as literal runs of at most 65535 bytes: simple, and valid for any data."""
    out = bytearray()
    for plane in range(bpp):
        values = raw[plane::bpp]
        for start in range(0, len(values), 65535):
            chunk = values[start : start + 65535]
            out += bytes([128, len(chunk) >> 8, len(chunk) & 0xFF]) + chunk
    return bytes(out)


def read_layer_pixels(image: XcfImage, layer: XcfLayer) -> np.ndarray:
    """The layer's pixels as stored (HxWxC in the file's component type, native byte order)."""
    channels = LAYER_TYPES[layer.layer_type][0]
    pixels = np.empty((layer.height, layer.width, channels), dtype=image.dtype.newbyteorder("="))
    for (top, left, h, w), offset in zip(_tile_rects(layer.width, layer.height), layer.tile_offsets):
        size = h * w * layer.bpp
        if image.compression == COMPRESSION_NONE:
            raw = image.data[offset : offset + size]
        elif image.compression == COMPRESSION_RLE:
            raw = _decode_rle(image.data, offset, h * w, layer.bpp, image.path)
        else:
            try:
                raw = _inflate_tile(image.data, offset, size)
            except zlib.error as error:
                raise ImageFileError(f"{image.path}: corrupt zlib data in an XCF tile ({error})") from error
        if len(raw) != size:
            raise ImageFileError(f"{image.path}: XCF tile of layer {layer.name!r} is truncated")
        pixels[top : top + h, left : left + w] = np.frombuffer(raw, dtype=image.dtype).reshape(h, w, channels)
    return pixels


def _inflate_tile(data: bytes, offset: int, size: int) -> bytes:
    """One zlib tile of ``size`` bytes, its stream read to the end so that its checksum is verified."""
    stream = zlib.decompressobj()
    raw = stream.decompress(memoryview(data)[offset:], size)
    if not stream.eof:
        extra = stream.decompress(stream.unconsumed_tail, 1)  # reads the trailer (adler32) or finds more data
        if extra or not stream.eof:
            raise zlib.error("the tile's stream does not end where its size says")
    return raw


def _encode_tile(raw: bytes, compression: int, bpp: int) -> bytes:
    if compression == COMPRESSION_RLE:
        return _encode_rle(raw, bpp)
    if compression == COMPRESSION_ZLIB:
        return zlib.compress(raw, 6)
    return raw


def to_working(pixels: np.ndarray, image: XcfImage, has_alpha: bool) -> np.ndarray:
    """Stored components as float32 the network understands: [0, 1], perceptual (sRGB-encoded) colour."""
    values = pixels.astype(np.float32)
    if image.dtype.kind == "u":
        values /= float(np.iinfo(image.dtype).max)
    if image.linear:
        colour = values[..., :-1] if has_alpha else values
        colour[...] = _linear_to_srgb(colour)
    return values


def from_working(values: np.ndarray, image: XcfImage, has_alpha: bool) -> np.ndarray:
    values = values.astype(np.float32, copy=True)
    if image.linear:
        colour = values[..., :-1] if has_alpha else values
        colour[...] = _srgb_to_linear(colour)
    if image.dtype.kind == "u":
        top = float(np.iinfo(image.dtype).max)
        return np.rint(np.clip(values, 0.0, 1.0) * top).astype(image.dtype.newbyteorder("="))
    return values.astype(image.dtype.newbyteorder("="))


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, None)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, np.power((np.clip(x, 0.0, None) + 0.055) / 1.055, 2.4)).astype(np.float32)


LayerRestorer = Callable[[XcfLayer, np.ndarray], np.ndarray]


def restore_xcf(
    source: str | os.PathLike[str], target: str | os.PathLike[str], restore: LayerRestorer, *, overwrite: bool = True,
) -> list[dict]:
    """Write ``target``: ``source`` with every raster layer's pixels passed through ``restore``.

    ``restore`` gets float32 HxWxC working pixels (alpha last, untouched by contract) and returns
    the same shape.  Returns one record per layer saying what was done.
    """
    image = read_xcf(source)
    appended = bytearray()
    patches: list[tuple[int, int]] = []  # (pointer position, new tile offset)
    records = []
    for layer in image.layers:
        record = {"layer": layer.name, "size": [layer.width, layer.height], "offsets": list(layer.offsets)}
        if layer.skip_reason:
            record["skipped"] = layer.skip_reason
            records.append(record)
            continue
        has_alpha = LAYER_TYPES[layer.layer_type][1]
        working = to_working(read_layer_pixels(image, layer), image, has_alpha)
        restored = restore(layer, working)
        if restored.shape != working.shape:
            raise ValueError(f"layer {layer.name!r}: restoration changed the shape {working.shape} -> {restored.shape}")
        stored = from_working(restored, image, has_alpha).astype(image.dtype)  # back to big-endian
        for (top, left, h, w), position in zip(_tile_rects(layer.width, layer.height), layer.tile_pointer_positions):
            raw = np.ascontiguousarray(stored[top : top + h, left : left + w]).tobytes()
            patches.append((position, len(image.data) + len(appended)))
            appended += _encode_tile(raw, image.compression, layer.bpp)
        records.append(record)
    output = bytearray(image.data) + appended + XCF_MARKER
    if image.pointer_size == 4 and len(output) >= 1 << 32:
        raise ImageFileError(f"{source}: restored XCF would exceed 4 GiB, the limit of XCF version {image.version}")
    pointer_format = ">Q" if image.pointer_size == 8 else ">I"
    for position, offset in patches:
        struct.pack_into(pointer_format, output, position, offset)
    try:
        with atomic_target(target, replace=overwrite) as temporary:
            write_complete(Path(temporary), bytes(output))
    except FileExistsError:
        raise ImageFileError(f"{target}: output exists (use --overwrite to replace it)") from None
    return records
