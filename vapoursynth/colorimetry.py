"""YUV clips through RGB and back, each frame with its own colorimetry.

The network works on RGB, so a YUV clip is converted to RGBS, restored and
converted back.  The conversion back must put the chroma where it came from:
``core.resize`` drops ``_ChromaLocation`` on RGB frames and would site the new
chroma left (MPEG-2 style) by default, which resamples a centre-sited clip
(JPEG, MJPEG) and costs several dB of chroma on its own.  So both conversions
read the matrix, range and chroma location from each source frame, inside a
``FrameEval``: nothing is rendered when the graph is built (``vspipe --info``
stays free), and a clip whose colorimetry changes midway is still converted
exactly.  ``_Transfer`` and ``_Primaries`` need no handling: the matrix
conversion leaves them untouched and the frames carry them through.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import vapoursynth as vs

#: Names accepted for ``matrix=``: zimg's ``matrix_s`` names and the common "bt" spellings.
MATRIX_NAMES: dict[str, int] = {
    "709": 1, "bt709": 1,
    "fcc": 4,
    "470bg": 5, "bt470bg": 5, "601": 5, "bt601": 5,
    "170m": 6, "smpte170m": 6,
    "240m": 7, "smpte240m": 7,
    "ycgco": 8,
    "2020ncl": 9, "bt2020ncl": 9, "bt2020": 9,
    "2020cl": 10, "bt2020cl": 10,
    "chromancl": 12,
    "chromacl": 13,
    "ictcp": 14,
}
#: Matrix coefficients a YUV clip can be converted with (0 = RGB, 2 = unspecified, 3 = reserved).
YUV_MATRICES = frozenset(MATRIX_NAMES.values())
#: Matrices whose conversion depends on the transfer function (constant-luminance and ICtCp).
TRANSFER_DEPENDENT = frozenset({10, 13, 14})
CHROMA_LOCATIONS = range(6)  # left, center, top_left, top, bottom_left, bottom


def parse_matrix(matrix: object, func: str) -> int | None:
    """``matrix=`` as given by a user (None, an int or a name) -> a YUV matrix code, checked now."""
    if matrix is None:
        return None
    if isinstance(matrix, str):
        code = MATRIX_NAMES.get(matrix.strip().lower())
        if code is None:
            raise vs.Error(f"{func}: unknown matrix {matrix!r}; use one of {', '.join(sorted(MATRIX_NAMES))} or its number")
        return code
    if isinstance(matrix, int) and not isinstance(matrix, bool):
        if str(int(matrix)) in MATRIX_NAMES and int(matrix) not in YUV_MATRICES:  # 709, 601: a standard's number
            raise vs.Error(f"{func}: matrix={int(matrix)} is not a matrix code; use matrix='{int(matrix)}' or "
                           f"matrix={MATRIX_NAMES[str(int(matrix))]}")
        if int(matrix) not in YUV_MATRICES:
            raise vs.Error(
                f"{func}: matrix={int(matrix)} cannot convert YUV to RGB; use one of "
                f"{', '.join(map(str, sorted(YUV_MATRICES)))} (1 = BT.709, 5/6 = BT.601, 9 = BT.2020)"
            )
        return int(matrix)
    raise vs.Error(f"{func}: matrix must be an integer or a name such as '709', got {matrix!r}")


@dataclass(frozen=True)
class Colorimetry:
    """What converting one YUV frame to RGB and back needs to know."""

    matrix: int
    full_range: bool
    chroma_location: int

    @property
    def range_name(self) -> str:
        return "full" if self.full_range else "limited"


def frame_colorimetry(props: vs.FrameProps, matrix: int | None) -> Colorimetry:
    """The frame's colorimetry; ``matrix`` (the user's) overrides ``_Matrix``.  ValueError says what is missing."""
    if matrix is None:
        found = props.get("_Matrix")
        if found is None or int(found) == 2:
            raise ValueError("the frame has no _Matrix property (or it is 2, unspecified); pass matrix=, e.g. matrix=1 for BT.709")
        if int(found) not in YUV_MATRICES:
            raise ValueError(f"the frame's _Matrix={int(found)} cannot convert YUV to RGB; pass matrix=, e.g. matrix=1 for BT.709")
        matrix = int(found)
    if matrix in TRANSFER_DEPENDENT and int(props.get("_Transfer", 2)) in (0, 2, 3):
        raise ValueError(f"matrix {matrix} needs the transfer function, and the frame has no _Transfer property")
    location = int(props.get("_ChromaLocation", 0))
    if location not in CHROMA_LOCATIONS:
        raise ValueError(f"the frame's _ChromaLocation={location} is not a chroma location (0..5)")
    return Colorimetry(matrix, _is_full_range(props), location)


def _is_full_range(props: vs.FrameProps) -> bool:
    """Full or limited range from ``_Range`` (VapourSynth R74+) or the older ``_ColorRange``; YUV defaults to limited."""
    if "_Range" in props:
        return int(props["_Range"]) == int(vs.RANGE_FULL)
    if "_ColorRange" in props:  # the old property counts the other way round: 0 = full
        return int(props["_ColorRange"]) == 0
    return False


def through_rgb(
    clip: vs.VideoNode, restore_rgb: Callable[[vs.VideoNode], vs.VideoNode], matrix: int | None, func: str,
) -> vs.VideoNode:
    """YUV -> RGBS -> clamp to [0, 1] -> ``restore_rgb`` -> add the clamped-off part back -> the clip's own format.

    Upsampled chroma overshoots [0, 1] near saturated edges.  The network never saw such values
    in training, so it gets the clamped image; but the overshoot belongs to the chroma
    upsampling, not to the picture, and the conversion back needs it to rebuild the source's
    chroma: clamping alone costs about 0.5 dB of chroma on saturated photos.
    """
    core = vs.core  # the current environment's core, as in every filter of a script
    lock = threading.Lock()
    forward: dict[Colorimetry, vs.VideoNode] = {}
    backward: dict[Colorimetry, vs.VideoNode] = {}

    def colorimetry(n: int, f: vs.VideoFrame) -> Colorimetry:
        try:
            return frame_colorimetry(f.props, matrix)
        except ValueError as error:
            raise vs.Error(f"{func}: frame {n}: {error}") from None

    def to_rgb(n: int, f: vs.VideoFrame) -> vs.VideoNode:
        c = colorimetry(n, f)
        with lock:
            if c not in forward:
                forward[c] = core.resize.Bicubic(
                    clip, format=vs.RGBS, matrix_in=c.matrix, range_in_s=c.range_name, chromaloc_in=c.chroma_location,
                )
            return forward[c]

    rgb = core.std.FrameEval(core.std.BlankClip(clip, format=vs.RGBS, keep=True), to_rgb, prop_src=clip)
    restored = restore_rgb(core.std.Expr(rgb, "x 0 max 1 min"))
    restored = core.std.Expr([restored, rgb], "x 0 max 1 min y + y 0 max 1 min -")

    def to_yuv(n: int, f: vs.VideoFrame) -> vs.VideoNode:
        c = colorimetry(n, f)
        with lock:
            if c not in backward:
                backward[c] = core.resize.Bicubic(
                    restored, format=clip.format.id, matrix=c.matrix, range_s=c.range_name, chromaloc=c.chroma_location,
                )
            return backward[c]

    return core.std.FrameEval(clip, to_yuv, prop_src=clip)
