"""The JPEG quality GIMP remembers for an image it loaded from a JPEG file.

GIMP's JPEG loader attaches a "jpeg-settings" parasite to the image: colour
space, the IJG quality when the file used libjpeg's tables exactly (else 0
and the tables themselves), component count, table count, sampling factors,
then 64 big-endian 16-bit entries per stored table.  It travels with the
image (also through XCF files), unlike the file name, which GIMP does not
keep for images opened by scripts.
"""

from __future__ import annotations

from fbcnn_plugins.core.quality import QFEstimate


def header_from_jpeg_settings(data: bytes | list[int] | None) -> QFEstimate | None:
    """The header QF recorded in a "jpeg-settings" parasite, when it is an exact IJG quality."""
    if not data or len(data) < 4:
        return None
    raw = bytes(data)
    quality, components, tables = raw[1], raw[2], raw[3]
    if len(raw) < 4 + 2 * components + 128 * tables or quality > 100:
        return None
    chroma = chroma_of_sampling_factors(raw[4 : 4 + 2 * components])
    if tables == 0 and 1 <= quality <= 100:
        return QFEstimate(quality, "header", chroma=chroma)
    from fbcnn_plugins.core.qf_estimation import quality_from_tables

    start = 4 + 2 * components
    found = quality_from_tables({
        t: [int.from_bytes(raw[start + 128 * t + 2 * i : start + 128 * t + 2 * i + 2], "big") for i in range(64)]
        for t in range(min(tables, 2))
    })
    return QFEstimate(found.quality, "header", chroma=chroma) if found.exact else None


def chroma_of_sampling_factors(factors: bytes) -> str | None:
    """The chroma subsampling named by (horizontal, vertical) factor pairs of Y, Cb, Cr."""
    if len(factors) != 6:
        return None
    (luma_h, luma_v), cb, cr = (tuple(factors[i : i + 2]) for i in range(0, 6, 2))
    if cb != (1, 1) or cr != (1, 1):
        return None
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}.get((luma_h, luma_v))
