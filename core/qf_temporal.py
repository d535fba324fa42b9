"""One restoration strength per scene or run of frames, for video.

A video codec does not compress every frame alike: in an MPEG-2 or H.264 group of pictures
the I and P frames carry most of the bits and the B frames are quantised harder or softer
in turn, so the network's per-frame QF prediction moves with the GOP.  Restoring each frame
at its own prediction makes the strength, and with it the detail, pulse a few times a
second inside a shot that does not change: visible flicker.

:func:`segment_of` gives the frames that share frame ``n``'s strength: ``n``'s run of
``window`` frames (runs start at multiples of ``window``, so every frame of a run sees the
same run), cut at scene changes, which come from the clip's ``_SceneChangePrev`` /
``_SceneChangeNext`` properties or, without them, from :func:`is_scene_change` on small
thumbnails of the frames.  :func:`hold_qf` turns the run's predictions into one QF: by
default a robust low value (the 25th percentile), so the run is restored for its more
damaged frames without letting a single odd frame decide.  A run only ever reaches
``window - 1`` frames either side of ``n``, so a frame server can compute it from a bounded
window of neighbours, in any order.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

#: How a run's per-frame QFs become one: "low" is the 25th percentile.
HOLD_METHODS = ("low", "median", "mean", "min")
#: Mean absolute difference (0..1 scale) between two frames' thumbnails above which a new scene
#: starts; the same scale as VapourSynth's misc.SCDetect, whose default threshold is 0.1.
SCENE_CHANGE_THRESHOLD = 0.1
#: Side of the thumbnails compared for scene changes: coarse enough to ignore noise, grain and
#: compression artifacts, fine enough to see a new shot.
THUMBNAIL_SIDE = 32


def hold_qf(values: Sequence[float], method: str = "low") -> float:
    """One QF for a run of frames' QFs."""
    if method not in HOLD_METHODS:
        raise ValueError(f"QF smoothing method must be one of {', '.join(HOLD_METHODS)}, got {method!r}")
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no QF values to hold")
    if method == "low":
        return float(np.percentile(array, 25))
    if method == "median":
        return float(np.median(array))
    return float(array.mean() if method == "mean" else array.min())


def thumbnail(plane: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """A small, block-averaged copy of a frame's luma (or first) plane on a 0..1 scale."""
    plane = np.asarray(plane, dtype=np.float32) / float(peak)
    height, width = plane.shape[:2]
    rows = np.linspace(0, height, min(THUMBNAIL_SIDE, height) + 1).astype(int)
    cols = np.linspace(0, width, min(THUMBNAIL_SIDE, width) + 1).astype(int)
    # Sum over the block grid with cumulative sums: the mean of every (row band, column band) block.
    table = np.pad(plane.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[rows[1:]][:, cols[1:]] - table[rows[:-1]][:, cols[1:]] - table[rows[1:]][:, cols[:-1]] + table[rows[:-1]][:, cols[:-1]]
    areas = np.diff(rows)[:, None] * np.diff(cols)[None, :]
    return sums / areas


def is_scene_change(before: np.ndarray, after: np.ndarray, threshold: float = SCENE_CHANGE_THRESHOLD) -> bool:
    """Whether two consecutive frames' thumbnails (see :func:`thumbnail`) belong to different shots."""
    return float(np.mean(np.abs(before - after))) > threshold


def segment_of(n: int, num_frames: int, window: int, cut_before: Callable[[int], bool]) -> range:
    """The frames that share frame ``n``'s strength.

    ``cut_before(k)`` says whether a new scene starts at frame ``k`` (between ``k - 1`` and
    ``k``); it is only asked about frames inside ``n``'s run.
    """
    if window < 1:
        raise ValueError(f"the smoothing window must be at least 1 frame, got {window}")
    if not 0 <= n < num_frames:
        raise ValueError(f"frame {n} is outside a clip of {num_frames} frames")
    run_start = n - n % window
    run_end = min(run_start + window, num_frames)
    start = n
    while start > run_start and not cut_before(start):
        start -= 1
    end = n + 1
    while end < run_end and not cut_before(end):
        end += 1
    return range(start, end)


def scene_window(n: int, num_frames: int, reach: int, cut_before: Callable[[int], bool]) -> range:
    """The frames within ``reach`` of ``n`` on both sides that no scene change separates from it.

    The sliding form of :func:`segment_of`, for a filter that sees ``reach`` neighbours: with a
    robust :func:`hold_qf` over a window as long as the GOP, the held value barely moves from
    frame to frame even though the window slides.
    """
    if reach < 0:
        raise ValueError(f"the smoothing reach must not be negative, got {reach}")
    start = n
    while start > max(0, n - reach) and not cut_before(start):
        start -= 1
    end = n + 1
    while end < min(num_frames, n + reach + 1) and not cut_before(end):
        end += 1
    return range(start, end)


def smooth_qfs(
    qfs: Sequence[float],
    window: int,
    *,
    scene_starts: Sequence[bool] | None = None,
    method: str = "low",
) -> list[float]:
    """Every frame's QF replaced by its run's held QF (a whole clip at once).

    ``scene_starts[k]`` is True when a new scene starts at frame ``k``; without it only the
    runs of ``window`` frames cut the clip.
    """
    count = len(qfs)
    if scene_starts is not None and len(scene_starts) != count:
        raise ValueError(f"{len(scene_starts)} scene-change flags for {count} frames")
    cut = (lambda k: bool(scene_starts[k])) if scene_starts is not None else (lambda k: False)
    held: list[float] = []
    for n in range(count):
        segment = segment_of(n, count, window, cut)
        held.append(hold_qf([qfs[k] for k in segment], method))
    return held


def detect_scene_starts(planes: Sequence[np.ndarray], peak: float = 1.0,
                        threshold: float = SCENE_CHANGE_THRESHOLD) -> list[bool]:
    """Scene starts of a sequence of luma planes: frame 0, and every frame unlike the one before."""
    thumbs = [thumbnail(plane, peak) for plane in planes]
    return [True] + [is_scene_change(a, b, threshold) for a, b in zip(thumbs, thumbs[1:])]
