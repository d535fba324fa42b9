"""One QF per scene or run of frames: pure rules, real frames through libjpeg, and a real MPEG-2 clip."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from skimage import data

from fbcnn_plugins.core.qf_temporal import (
    detect_scene_starts, hold_qf, scene_window, segment_of, smooth_qfs, thumbnail,
)
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.training.chains import jpeg

from conftest import clip_from_arrays

#: An MPEG-like group of pictures: I B B P B B P B B P B B (I and P kept better than B here).
GOP = [30, 55, 55, 34, 55, 55, 34, 55, 55, 34, 55, 55]


def test_hold_methods():
    values = [10, 20, 30, 40, 90]
    assert hold_qf(values, "min") == 10 and hold_qf(values, "median") == 30
    assert hold_qf(values, "mean") == 38 and hold_qf(values, "low") == 20
    with pytest.raises(ValueError, match="one of"):
        hold_qf(values, "max")


def test_runs_are_cut_at_scene_changes_and_at_window_edges():
    starts = {0, 5}
    cut = lambda k: k in starts  # noqa: E731
    assert segment_of(2, 20, 8, cut) == range(0, 5)
    assert segment_of(6, 20, 8, cut) == range(5, 8)  # the run 0..7, from the scene change at 5 on
    assert segment_of(9, 20, 8, cut) == range(8, 16)
    assert segment_of(19, 20, 8, cut) == range(16, 20)
    assert scene_window(6, 20, 3, cut) == range(5, 10) and scene_window(2, 20, 3, cut) == range(0, 5)
    assert scene_window(0, 1, 0, cut) == range(0, 1)
    held = smooth_qfs(GOP * 2, 12, scene_starts=[k in (0, 12) for k in range(24)], method="min")
    assert held == [30.0] * 24
    with pytest.raises(ValueError):
        smooth_qfs([1, 2], 4, scene_starts=[True])


def pan(image: np.ndarray, frames: int, side: int, step: int = 2) -> list[np.ndarray]:
    """A slow camera pan: the same scene, shifted a little each frame."""
    return [np.ascontiguousarray(image[40 : 40 + side, 40 + k * step : 40 + k * step + side]) for k in range(frames)]


def luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def test_scene_changes_found_on_real_frames():
    frames = pan(data.astronaut(), 6, 96) + pan(data.coffee(), 6, 96)
    starts = detect_scene_starts([luma(f) for f in frames], peak=255.0)
    assert starts == [True] + [False] * 5 + [True] + [False] * 5
    assert thumbnail(luma(frames[0]), 255.0).shape == (32, 32)


@pytest.fixture(scope="module")
def restorer(bundled_color_model) -> Restorer:
    return Restorer(bundled_color_model, device="cpu")


def test_held_qf_no_longer_follows_the_gop(restorer):
    """Two shots, each JPEG-compressed frame by frame with an I/B/P quality pattern."""
    clean = pan(data.astronaut(), 12, 128) + pan(data.chelsea(), 12, 128)
    frames = [jpeg(frame, quality) for frame, quality in zip(clean, GOP * 2)]
    predicted = [restorer.predict_qf(frame) for frame in frames]
    starts = detect_scene_starts([luma(f) for f in frames], peak=255.0)
    assert [k for k, s in enumerate(starts) if s] == [0, 12]
    # Per frame, the prediction follows the GOP: B frames clearly above I/P frames of the same shot.
    for shot in (slice(0, 12), slice(12, 24)):
        raw = np.array(predicted[shot])
        kinds = np.array(GOP)
        assert raw[kinds == 55].mean() - raw[kinds < 55].mean() > 8, raw
    held = smooth_qfs(predicted, 12, scene_starts=starts)
    for shot in (slice(0, 12), slice(12, 24)):
        assert len(set(held[shot])) == 1  # one strength per shot
        assert held[shot][0] <= np.median(predicted[shot])  # leaning to the more damaged frames


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")


@pytest.fixture(scope="module")
def mpeg2_frames(tmp_path_factory) -> list[np.ndarray]:
    """A real MPEG-2 encode (GOP 12, two B frames, B frames quantised 2.5x coarser, I frames finer) of
    two panning shots, decoded frame by frame."""
    folder = tmp_path_factory.mktemp("mpeg2")
    clean = pan(data.astronaut(), 12, 128) + pan(data.chelsea(), 12, 128)
    raw = folder / "clip.rgb"
    raw.write_bytes(b"".join(f.tobytes() for f in clean))
    clip = folder / "clip.m2v"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "128x128", "-r", "25",
                    "-i", str(raw), "-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-sc_threshold", "1000000000",
                    "-qscale:v", "8", "-b_qfactor", "2.5", "-b_qoffset", "0", "-i_qfactor", "0.6", str(clip)], check=True)
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             check=True, capture_output=True).stdout
    frames = list(np.frombuffer(decoded, dtype=np.uint8).reshape(-1, 128, 128, 3))
    assert len(frames) == 24
    return frames


@needs_ffmpeg
def test_mpeg2_clip_gets_one_strength_per_scene(mpeg2_frames, restorer):
    frames = mpeg2_frames
    predicted = [restorer.predict_qf(frame) for frame in frames]
    starts = detect_scene_starts([luma(f) for f in frames], peak=255.0)
    assert [k for k, s in enumerate(starts) if s] == [0, 12]
    held = smooth_qfs(predicted, 12, scene_starts=starts)
    for shot in (slice(0, 12), slice(12, 24)):
        assert np.ptp(predicted[shot]) > 10, predicted  # per frame, the strength follows the GOP ...
        assert len(set(held[shot])) == 1  # ... held, it is one per shot


@needs_ffmpeg
def test_vapoursynth_filter_holds_the_qf_through_the_gop(mpeg2_frames, restorer):
    """The real VapourSynth filter on the MPEG-2 clip, scene changes found by the filter itself."""
    pytest.importorskip("vapoursynth")
    from fbcnn_plugins.vapoursynth import fbcnn

    clip = clip_from_arrays(mpeg2_frames)
    held = fbcnn(clip, model="fbcnn-color-small", device="cpu", qf_smoothing=6, qf_smoothing_method="low",
                 scene_detection=True)
    got = [held.get_frame(n).props["FBCNN_QF_Predicted"] for n in range(len(mpeg2_frames))]
    # The filter's per-frame estimate is the model's strength head (it has one).
    raw = [restorer.predict_qf_and_strength(frame)[1] for frame in mpeg2_frames]
    for shot in (range(0, 12), range(12, 24)):
        steps_raw = np.abs(np.diff([raw[k] for k in shot])).mean()
        steps_held = np.abs(np.diff([got[k] for k in shot])).mean()
        assert steps_held < steps_raw / 4, (raw, got)  # the GOP's frame-to-frame jumps are gone
    # Each frame's window stops at the cut between the shots: frame 11 sees frames 5..11 only.
    assert got[11] == pytest.approx(hold_qf(raw[5:12], "low"), abs=0.5)
    assert got[12] == pytest.approx(hold_qf(raw[12:19], "low"), abs=0.5)
