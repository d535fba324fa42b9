"""Drawn content (screenshots, UI, line art) that was never compressed, told by its exact edges.

The network reads flat colours and sharp text as heavy damage (a clean screenshot can predict
QF 30), and even at QF 100 it softens text enough to cost several dB.  But such an image
carries a signature no JPEG decoder leaves: next to a strong edge, neighbouring pixels are
*exactly* equal, because the panel, the glyph and the line were drawn in flat colours.  A
JPEG, even at QF 95, rings around every strong edge, so exact equality there is rare
(and a resize of a JPEG smears the ringing, it does not remove it).

:func:`exact_edge_share` measures it on the 8x8 blocks that hold a strong edge: for each, the
share of horizontally and of vertically adjacent pixel pairs that are exactly equal, the
smaller of the two (a block whose structure runs along one axis has equal pairs along that
axis even in a JPEG), and the median over the blocks.  On 256-px crops: a clean generated
screenshot 0.71, the same screenshot resized 0.29-0.30, as JPEG at QF 98 / 95 / 90 0.16 /
0.05 / 0.02; over 1,044 crops (32-256 px) of the training photos and digital art, at most 0.15
for photos and 0.41 for flat-colour digital art, which is never-compressed drawn content too.

A JPEG save takes that signature away around the edges, but not inside flat areas: an 8x8 block
of one colour is coded by its DC term alone and decodes to one colour again, the same one as
its neighbours in the same panel.  :func:`flat_block_share` measures that: the share of the
image's 8x8 blocks (on the JPEG grid) that are exactly one colour, not clipped black or white,
and the same colour as a neighbouring block.  Smooth skies compressed hard are flat in that
sense too, so it is one witness among others (``auto``'s drawn-save rule also asks the network,
see :class:`~fbcnn_plugins.core.qf_choice.DrawnSaveRule`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A block holds a strong edge when some channel spans at least this many levels in it.
STRONG_EDGE = 48
#: From this share of exactly equal neighbours around strong edges, the image counts as drawn.
DRAWN_SHARE = 0.2
#: ... when at least this many blocks hold strong edges (fewer say nothing either way).
MIN_EDGE_BLOCKS = 3
BLOCK = 8


@dataclass(frozen=True)
class EdgeEvidence:
    """How exactly flat an image is around its strong edges."""

    share: float  # median over edge blocks of the smaller of the horizontal / vertical equal-pair shares
    edge_blocks: int

    @property
    def drawn(self) -> bool:
        return self.edge_blocks >= MIN_EDGE_BLOCKS and self.share >= DRAWN_SHARE


def exact_edge_share(image: np.ndarray) -> EdgeEvidence:
    """The exact-edge evidence of an 8-bit image (H, W) or (H, W, C)."""
    planes = image if image.ndim == 3 else image[:, :, None]
    height, width = (planes.shape[0] // BLOCK) * BLOCK, (planes.shape[1] // BLOCK) * BLOCK
    if height == 0 or width == 0:
        return EdgeEvidence(0.0, 0)
    channels = planes.shape[2]
    blocks = planes[:height, :width].reshape(height // BLOCK, BLOCK, width // BLOCK, BLOCK, channels)
    blocks = blocks.transpose(0, 2, 1, 3, 4).reshape(-1, BLOCK, BLOCK, channels)
    span = (blocks.max(axis=(1, 2)).astype(np.int16) - blocks.min(axis=(1, 2))).max(axis=-1)
    edges = blocks[span >= STRONG_EDGE]
    if len(edges) == 0:
        return EdgeEvidence(0.0, 0)
    across = (edges[:, :, 1:] == edges[:, :, :-1]).all(axis=-1).mean(axis=(1, 2))
    down = (edges[:, 1:, :] == edges[:, :-1, :]).all(axis=-1).mean(axis=(1, 2))
    return EdgeEvidence(float(np.median(np.minimum(across, down))), int(len(edges)))


def flat_block_share(image: np.ndarray) -> float:
    """Share of the 8x8 blocks (grid from the top left) that are exactly one colour, neither black nor
    white, and equal to a neighbouring block: the flat panels of drawn content, also after a JPEG save."""
    planes = image if image.ndim == 3 else image[:, :, None]
    rows, cols = planes.shape[0] // BLOCK, planes.shape[1] // BLOCK
    if rows == 0 or cols == 0:
        return 0.0
    blocks = planes[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK, -1).transpose(0, 2, 4, 1, 3)
    blocks = blocks.reshape(rows, cols, planes.shape[2], BLOCK * BLOCK)
    value = blocks[..., 0]
    flat = (blocks == value[..., None]).all(axis=(-1, -2))
    flat &= ~((value == 0) | (value == 255)).all(axis=-1)  # clipped shadows and highlights are flat in photos too
    same_across = flat[:, 1:] & flat[:, :-1] & (value[:, 1:] == value[:, :-1]).all(axis=-1)
    same_down = flat[1:, :] & flat[:-1, :] & (value[1:, :] == value[:-1, :]).all(axis=-1)
    paired = np.zeros_like(flat)
    paired[:, 1:] |= same_across
    paired[:, :-1] |= same_across
    paired[1:, :] |= same_down
    paired[:-1, :] |= same_down
    return float(paired.mean())
