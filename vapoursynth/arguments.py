"""Checks of the filter's arguments that need no frame, run when the filter is built.

A script with a wrong argument must fail when it is loaded (``vspipe --info``
included) with a ``vs.Error`` that names the argument, never at frame 0 or
halfway through an encode; and an argument that does not apply to the clip
(``matrix`` on an RGB clip) is an error too, not silently ignored.
"""

from __future__ import annotations

import os
from typing import Sequence

import vapoursynth as vs

YUV_MODES = ("rgb", "luma")


def check_positive_int(name: str, value: object, func: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise vs.Error(f"{func}: {name} must be a positive integer, got {value!r}")
    return value


def check_options(
    func: str, *, model: object, device: object, precision: object, tile: object, overlap: object,
    num_streams: object, batch_size: object, qf_smoothing: object, self_ensemble: object,
) -> None:
    """Types and ranges of the options that do not depend on the clip."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise vs.Error(f"{func}: model must be a model name or a weights path, got {model!r}")
    if not isinstance(device, str):
        raise vs.Error(f"{func}: device must be a string such as 'cpu' or 'cuda', got {device!r}")
    if precision is not None and not isinstance(precision, str):
        raise vs.Error(f"{func}: precision must be 'fp32', 'fp16' or 'bf16', got {precision!r}")
    if tile is not None:
        if isinstance(tile, bool) or not isinstance(tile, int) or tile <= 0 or tile % 8:
            raise vs.Error(f"{func}: tile must be a positive multiple of 8 (or None for the default), got {tile!r}")
    if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, int)):
        raise vs.Error(f"{func}: overlap must be an integer multiple of 8 (or None for the default), got {overlap!r}")
    check_positive_int("num_streams", num_streams, func)
    check_positive_int("batch_size", batch_size, func)
    if isinstance(qf_smoothing, bool) or not isinstance(qf_smoothing, int) or qf_smoothing < 0:
        raise vs.Error(f"{func}: qf_smoothing must be a non-negative integer, got {qf_smoothing!r}")
    if not isinstance(self_ensemble, bool):
        raise vs.Error(f"{func}: self_ensemble must be True or False, got {self_ensemble!r}")


def check_yuv_mode(fmt: vs.VideoFormat, yuv_mode: object, matrix: object, func: str) -> str | None:
    """The YUV mode for a YUV clip (default ``"rgb"``); None for RGB/GRAY, where yuv_mode/matrix are errors."""
    if fmt.color_family != vs.YUV:
        for name, value in (("yuv_mode", yuv_mode), ("matrix", matrix)):
            if value is not None:
                raise vs.Error(f"{func}: {name} applies to YUV clips only; the clip is {fmt.color_family.name} ({fmt.name})")
        return None
    mode = "rgb" if yuv_mode is None else yuv_mode
    if mode not in YUV_MODES:
        raise vs.Error(f"{func}: yuv_mode must be one of {', '.join(map(repr, YUV_MODES))}, got {yuv_mode!r}")
    if mode == "luma" and matrix is not None:
        raise vs.Error(f"{func}: matrix applies to yuv_mode='rgb' only; yuv_mode='luma' never leaves YUV")
    return mode


def check_planes(planes: object, fmt: vs.VideoFormat, yuv_mode: str | None, func: str) -> list[int]:
    """``planes`` in the vsjetpack convention (None = all, an int, or a list) as a sorted list of plane numbers.

    Planes left out are copied from the source untouched.  In ``yuv_mode="luma"`` only Y is
    restored, so only ``planes=0`` makes sense there.
    """
    default = [0] if yuv_mode == "luma" else list(range(fmt.num_planes))
    if planes is None:
        return default
    values: Sequence[object] = [planes] if isinstance(planes, int) and not isinstance(planes, bool) else planes  # type: ignore[assignment]
    if not isinstance(values, (list, tuple)) or not values:
        raise vs.Error(f"{func}: planes must be a plane number or a non-empty list of them, got {planes!r}")
    chosen = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < fmt.num_planes:
            raise vs.Error(f"{func}: planes must hold plane numbers 0..{fmt.num_planes - 1} of {fmt.name}, got {planes!r}")
        if value in chosen:
            raise vs.Error(f"{func}: plane {value} is listed twice in planes={planes!r}")
        chosen.append(value)
    if yuv_mode == "luma" and chosen != [0]:
        raise vs.Error(f"{func}: yuv_mode='luma' restores Y only; use planes=0 there, or yuv_mode='rgb' for chroma planes")
    return sorted(chosen)
