"""Tiled inference with bounded memory on images of any size.

Tiles start on the 8x8 JPEG grid (so every tile sees whole coding blocks, as
the network did in training) and overlap by a multiple of 8; overlapping
outputs are blended with linear ramps so no seam shows.  The full image and
the blended result stay on the CPU; only one tile at a time visits the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

GRID = 8
DEFAULT_TILE = 512
#: A CUDA GPU's default: one 512 px tile at a time leaves it mostly idle (on an H200, 1080p frames ran
#: at 19 MP/s in 512 px tiles and 131 MP/s whole, docs/benchmarks.md); 2048 px tiles of a `small`
#: model need about 1.5 GiB of GPU memory.
GPU_DEFAULT_TILE = 2048
DEFAULT_OVERLAP = 32


def default_tile(device_type: str) -> int:
    """The tile size used when none is given: GPU_DEFAULT_TILE on CUDA, DEFAULT_TILE elsewhere
    (the CPU engines gain nothing from larger tiles, and MPS was not measured)."""
    return GPU_DEFAULT_TILE if device_type == "cuda" else DEFAULT_TILE


def default_overlap(tile: int) -> int:
    """DEFAULT_OVERLAP, or for small tiles the largest multiple of 8 under half the tile.

    A user who lowers the tile to save memory should not also have to work out an overlap
    that check_tiling accepts (64-px tiles get 24).
    """
    return max(0, min(DEFAULT_OVERLAP, (tile // 2 - 1) // GRID * GRID))


def check_tiling(tile: int, overlap: int) -> None:
    if tile <= 0 or tile % GRID:
        raise ValueError(f"tile size must be a positive multiple of {GRID}, got {tile}")
    if overlap < 0 or overlap % GRID:
        raise ValueError(f"tile overlap must be a non-negative multiple of {GRID}, got {overlap}")
    if overlap >= tile // 2:
        raise ValueError(f"tile overlap {overlap} must be less than half the tile size {tile}")


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans covering 0..length, neighbours sharing at least ``overlap`` pixels.

    As many spans as ``tile``-sized windows need, each only as long as needed: the slack is
    spread over all of them rather than sliding the last one back over its neighbour, which
    does up to a third less work (a 1024-px side takes three spans of 368 px, not three of 512)
    and never more.  Starts are multiples of 8; the last span may be up to 7 longer.
    """
    if length <= tile + GRID - 1:
        return [(0, length)]
    # The fewest spans of `tile` pixels (the last may take up to 7 more) that cover the side...
    count = max(2, -(-(length - overlap - (GRID - 1)) // (tile - overlap)))
    # ...each made only as long as that count needs.
    size = min(tile, -(-(length + (count - 1) * overlap) // (count * GRID)) * GRID)
    starts = [i * (size - overlap) for i in range(count - 1)]
    last = (length - size) // GRID * GRID
    if last > starts[-1]:
        starts.append(last)
    ends = [start + size for start in starts[:-1]] + [length]
    return list(zip(starts, ends))


@dataclass(frozen=True)
class Tile:
    top: int
    bottom: int
    left: int
    right: int


def iter_tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[Tile]:
    for top, bottom in tile_spans(height, tile, overlap):
        for left, right in tile_spans(width, tile, overlap):
            yield Tile(top, bottom, left, right)


def _ramp(length: int, ramp: int, rise: bool, fall: bool) -> np.ndarray:
    weights = np.ones(length, dtype=np.float32)
    if ramp:
        edge = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
        if rise:
            weights[:ramp] = np.minimum(weights[:ramp], edge)
        if fall:
            weights[-ramp:] = np.minimum(weights[-ramp:], edge[::-1])
    return weights


def blend_weights(tile: Tile, height: int, width: int, overlap: int) -> np.ndarray:
    rows = _ramp(tile.bottom - tile.top, overlap, tile.top > 0, tile.bottom < height)
    cols = _ramp(tile.right - tile.left, overlap, tile.left > 0, tile.right < width)
    return np.outer(rows, cols).astype(np.float32)


def run_tiled(
    process: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Apply ``process`` (array (1,C,h,w) -> same shape) tile by tile to an image (1,C,H,W); float32 out."""
    overlap = default_overlap(tile) if overlap is None else overlap
    check_tiling(tile, overlap)
    _, channels, height, width = image.shape
    tiles = list(iter_tiles(height, width, tile, overlap))
    if len(tiles) == 1:
        result = np.asarray(process(image), dtype=np.float32)
        if progress:
            progress(1, 1)
        return result
    total = np.zeros((1, channels, height, width), dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    for done, t in enumerate(tiles, start=1):
        restored = np.asarray(process(image[:, :, t.top : t.bottom, t.left : t.right]), dtype=np.float32)
        weights = blend_weights(t, height, width, overlap)
        total[:, :, t.top : t.bottom, t.left : t.right] += restored * weights
        weight_sum[t.top : t.bottom, t.left : t.right] += weights
        if progress:
            progress(done, len(tiles))
    total /= weight_sum
    return total


def quality_tiles(height: int, width: int, tile: int, limit: int) -> list[Tile]:
    """Non-overlapping tiles for QF prediction; at most ``limit`` of them, spread evenly over the image."""
    tiles = list(iter_tiles(height, width, tile, 0))
    if len(tiles) <= limit:
        return tiles
    picks = np.linspace(0, len(tiles) - 1, limit).round().astype(int)
    return [tiles[i] for i in sorted(set(picks.tolist()))]
