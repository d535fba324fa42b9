"""Codec damage for training and benchmarking: real ffmpeg encoders, real BestSource decoding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

pytest.importorskip("torch", reason="training needs PyTorch (pip install 'fbcnn-plugins[torch]')")

from fbcnn_plugins.core.jpeg import jpeg_roundtrip
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.training.config import load_train_config
from fbcnn_plugins.training.data import PatchBatches, VideoDamage, matching_jpeg_quality
from fbcnn_plugins.training.video_clips import CodecUnavailable, Encoding, camera_frames, check_tools, decode, encode
from fbcnn_plugins.training.video_pairs import build, load_pairs

REPO = Path(__file__).resolve().parents[1]


def _codecs_missing() -> str | None:
    try:
        check_tools()
    except CodecUnavailable as error:
        return str(error)
    return None


needs_codecs = pytest.mark.skipif(_codecs_missing() is not None, reason=f"{_codecs_missing()} (.ci/run installs ffmpeg)")


def test_camera_frames_move_like_a_camera():
    photo = skdata.astronaut()
    frames = camera_frames(photo, np.random.default_rng(3), frames=6, width=160, height=96)
    assert frames.shape == (6, 96, 160, 3) and frames.dtype == np.uint8
    steps = [np.mean(np.abs(frames[t + 1].astype(int) - frames[t].astype(int))) for t in range(5)]
    assert min(steps) > 1.0  # every frame moved
    # The same seed draws the same path; another seed another one.
    assert np.array_equal(frames, camera_frames(photo, np.random.default_rng(3), frames=6, width=160, height=96))
    assert not np.array_equal(frames, camera_frames(photo, np.random.default_rng(4), frames=6, width=160, height=96))


def test_a_sprite_moves_on_its_own():
    photo = skdata.coffee()
    sprite = skdata.chelsea()[100:164, 150:230]
    plain = camera_frames(photo, np.random.default_rng(1), frames=4, width=192, height=128)
    with_sprite = camera_frames(photo, np.random.default_rng(1), frames=4, width=192, height=128, sprite=sprite)
    changed = [np.any(a != b, axis=-1) for a, b in zip(plain, with_sprite)]
    assert any(c.any() for c in changed)
    # Where the sprite shows differs from frame to frame: it is not stuck to the camera.
    shown = [c for c in changed if c.any()]
    assert len(shown) < 2 or not all(np.array_equal(shown[0], c) for c in shown[1:])


@needs_codecs
@pytest.mark.parametrize("encoding, types", [
    (Encoding("h264", 30), set("IPB")), (Encoding("hevc", 32), set("IPB")),
    (Encoding("mpeg2", 10), set("IPB")), (Encoding("mjpeg", 10), {"I"}),
])
def test_each_codec_encodes_and_decodes_its_frame_types(tmp_path, encoding, types):
    frames = camera_frames(skdata.astronaut(), np.random.default_rng(0), frames=16, width=192, height=128)
    rgb, luma, kinds = decode(encode(frames, encoding, tmp_path / "clip.mkv"))
    assert rgb.shape == frames.shape and luma.shape == frames.shape[:3]
    assert set(kinds) == types, "".join(kinds)
    quality = np.mean([psnr(a, b) for a, b in zip(rgb, frames)])
    assert 22 < quality < 45


@needs_codecs
def test_higher_crf_damages_more(tmp_path):
    frames = camera_frames(skdata.coffee(), np.random.default_rng(1), frames=8, width=192, height=128)
    light, _, _ = decode(encode(frames, Encoding("h264", 22), tmp_path / "light.mkv"))
    heavy, _, _ = decode(encode(frames, Encoding("h264", 42), tmp_path / "heavy.mkv"))
    assert np.mean([psnr(a, b) for a, b in zip(light, frames)]) > np.mean([psnr(a, b) for a, b in zip(heavy, frames)]) + 3


def test_an_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="codec must be one of"):
        Encoding("vp9", 30)


@pytest.mark.parametrize("quality", [15, 40, 75])
def test_matching_jpeg_quality_finds_the_jpeg_it_was_given(quality):
    clean = np.ascontiguousarray(skdata.astronaut()[100:196, 180:276])
    found = matching_jpeg_quality(clean, jpeg_roundtrip(clean, quality))
    assert abs(found - quality) <= 3


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory):
    if _codecs_missing():
        pytest.skip(_codecs_missing())
    photos = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skdata, name)()).save(photos / f"{name}.png")
    out = tmp_path_factory.mktemp("pairs")
    made = build(out, [photos], clips=3, frames=4, width=160, height=112, seed=5)
    assert made == 3
    return out


def test_pairs_are_built_resumed_and_loaded(pairs_folder):
    # A second build with more clips keeps the three and makes only the fourth.
    first = {p.name: p.stat().st_mtime_ns for p in pairs_folder.glob("clip*.npz")}
    photos = [p for p in pairs_folder.parent.iterdir() if p.name.startswith("photos")][0]
    assert build(pairs_folder, [photos], clips=4, frames=4, width=160, height=112, seed=5) == 1
    assert all((pairs_folder / name).stat().st_mtime_ns == mtime for name, mtime in first.items())
    pairs = load_pairs(pairs_folder)
    assert len(pairs) == 4
    for pair in pairs:
        assert pair.clean.shape == pair.decoded.shape == (4, 112, 160, 3)
        assert pair.clean_y.shape == pair.decoded_y.shape == (4, 112, 160)
        assert len(pair.picture_types) == 4 and pair.picture_types[0] == "I"
        assert 15 < np.mean([psnr(a, b) for a, b in zip(pair.decoded, pair.clean)]) < 50


def test_video_batches_cut_aligned_patches_with_damage_matched_labels(pairs_folder):
    pairs = load_pairs(pairs_folder)
    photo = skdata.astronaut()
    for gray in (False, True):
        images = [photo[:, :, 0].copy() if gray else photo]
        batches = PatchBatches(images, patch_size=48, batch_size=8, degradation=load_train_config(
            REPO / "training/configs/color-small-video.toml").degradation, seed=1, total_steps=4,
            video=VideoDamage(pairs_dir=str(pairs_folder), ratio=1.0), video_pairs=pairs)
        batch = batches[0]
        assert batch["degraded"].shape == (8, 1 if gray else 3, 48, 48)
        assert not batch["double"].any()  # codec patches teach the QF head too
        assert ((batch["qf"] >= 5) & (batch["qf"] <= 100)).all()
        # The clean patch is the decoded one's source: far closer than an unrelated crop.
        clean, degraded = batch["clean"].float(), batch["degraded"].float()
        aligned = (clean - degraded).abs().mean()
        shuffled = (clean - degraded.roll(1, dims=0)).abs().mean()
        assert aligned < shuffled / 2
        assert np.array_equal(batch["clean"].numpy(), batches[0]["clean"].numpy())  # a pure function of the step


def test_video_config_needs_its_pairs(tmp_path):
    with pytest.raises(ValueError, match="needs pairs_dir"):
        VideoDamage(ratio=0.5)
    config = load_train_config(REPO / "training/configs/color-small-video.toml")
    assert config.video.active and config.video.pairs_dir == "runs/video-pairs"
    with pytest.raises(ValueError, match="no video pairs"):
        PatchBatches([skdata.astronaut()], patch_size=48, batch_size=2, degradation=config.degradation, seed=0,
                     total_steps=1, video=config.video)


@needs_codecs
def test_pair_builder_command_says_what_is_missing(tmp_path):
    result = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.training.video_pairs", "--out", str(tmp_path / "p"),
                             "--train-dir", str(tmp_path / "nothing"), "--clips", "1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "nothing" in result.stderr and "Traceback" not in result.stderr


def test_the_video_strength_head_is_fitted_on_decoded_crops(pairs_folder, tmp_path):
    from fbcnn_plugins.core.catalog import find_model
    from fbcnn_plugins.core.weights import load_weights
    from fbcnn_plugins.training import video_strength

    source = find_model("fbcnn-color-video-small").path
    out = tmp_path / "video.safetensors"
    assert video_strength.main(["--pairs", str(pairs_folder), "--model", str(source), "--out", str(out),
                                "--count", "10", "--steps", "30", "--threads", "1"]) == 0
    fitted, original = load_weights(out), load_weights(source)
    record = fitted.card["strength_head"]
    assert record["crops"] == 10 and record["added_to_sha256"] == original.card["sha256"]
    assert "video_strength" in record["command"]
    # Only the strength head changed: restoration and the QF head are the model's own.
    before, after = original.network.state_dict(), fitted.network.state_dict()
    changed = {k for k in before if not k.startswith("strength_pred.") and not (before[k] == after[k]).all()}
    assert not changed
