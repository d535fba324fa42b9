"""The video model: which model the catalogue gives footage, and the filter restoring with it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from skimage import data as skdata

from fbcnn_plugins.core.catalog import choose_default, default_model_entry, registered_models
from fbcnn_plugins.core.jpeg import jpeg_roundtrip
from fbcnn_plugins.core.weights import load_weights
from fbcnn_plugins.vapoursynth import fbcnn

from conftest import clip_from_arrays


def _entry(name):
    return next(e for e in registered_models() if e.name == name)


def test_the_bundled_video_model_is_registered_and_marked_as_video():
    video = _entry("fbcnn-color-video-small")
    assert video.available and video.footage == "video" and video.in_channels == 3
    card = load_weights(video.path).card
    assert card["training"]["video_ratio"] > 0 and "H.264" in card["training"]["recipe"]


def test_photos_keep_the_photo_model_and_footage_gets_the_video_model():
    assert default_model_entry(False).name == "fbcnn-color-small"
    assert default_model_entry(True).name == "fbcnn-gray-small"
    assert default_model_entry(False, footage="video").name == "fbcnn-color-video-small"
    # Gray footage has no gray video model: the gray photo model serves it.
    assert default_model_entry(True, footage="video").name == "fbcnn-gray-small"


def test_without_a_video_model_footage_falls_back_to_the_photo_models():
    entries = [e for e in registered_models() if e.footage == "photo"]
    assert choose_default(entries, False, footage="video").name == "fbcnn-color-small"
    # A video model whose weights are missing is passed over too.
    missing = dataclasses.replace(_entry("fbcnn-color-video-small"), path=entries[0].path.with_name("gone.safetensors"))
    assert choose_default([missing, *entries], False, footage="video").name == "fbcnn-color-small"
    with pytest.raises(ValueError, match="footage must be one of"):
        choose_default(entries, False, footage="film")


def test_the_filter_restores_footage_with_the_video_model():
    frames = [jpeg_roundtrip(np.ascontiguousarray(skdata.astronaut()[100 + 4 * i : 196 + 4 * i, 120:248]), 30) for i in range(2)]
    clip = clip_from_arrays(frames, vs.RGB24)

    def planes(c):
        return np.stack([np.stack([np.asarray(f[p]) for p in range(3)]) for f in c.frames(close=True)])

    default = planes(fbcnn(clip, qf=30))
    assert np.array_equal(default, planes(fbcnn(clip, qf=30, model="fbcnn-color-video-small")))
    assert not np.array_equal(default, planes(fbcnn(clip, qf=30, model="fbcnn-color-small")))


def test_the_video_benchmark_scores_real_codec_output():
    """benchmarks/bench_video.py end to end on one scikit-image photo through x264 at CRF 38."""
    import importlib.util

    from fbcnn_plugins.training.video_clips import CodecUnavailable, Encoding, check_tools

    try:
        check_tools()
    except CodecUnavailable as error:
        pytest.skip(str(error))
    spec = importlib.util.spec_from_file_location("bench_video", Path(__file__).resolve().parents[1] / "benchmarks/bench_video.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_video"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    rows = bench.run([skdata.astronaut()], [Encoding("h264", 38)], frames=4, width=192, height=128, seed=1, log=lambda _: None)
    by_method = {r["method"]: r for r in rows}
    assert by_method["decoded"]["y_gain"] == 0.0
    default = by_method["fbcnn default"]
    assert default["y_gain"] > 0.1 and default["rgb_gain"] > 0.0
    assert default["flicker"] <= default["decoded_flicker"]
    assert by_method["fbcnn, fixed QF"]["setting"].startswith("qf=")
