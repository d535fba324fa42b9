"""The VapourSynth filter on the real VapourSynth core: pixels equal the core's, props, errors, vspipe."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.vapoursynth import fbcnn

from conftest import REPO, natural_image, pillow_jpeg

core = vs.core


def clip_from_arrays(arrays: list[np.ndarray], fmt: int) -> vs.VideoNode:
    """A clip whose frame n holds arrays[n] (HxWxC planes in the format's sample type)."""
    height, width = arrays[0].shape[:2]
    blank = core.std.BlankClip(width=width, height=height, format=fmt, length=len(arrays))

    def fill(n, f):
        out = f.copy()
        for p in range(out.format.num_planes):
            np.copyto(np.asarray(out[p]), arrays[n][:, :, p] if arrays[n].ndim == 3 else arrays[n])
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def frame_array(clip: vs.VideoNode, n: int = 0) -> np.ndarray:
    frame = clip.get_frame(n)
    return np.dstack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])


@pytest.fixture(scope="module")
def jpeg_frames():
    return [pillow_jpeg(natural_image(48, 64, seed=s), 25) for s in range(3)]


@pytest.fixture()
def color_path(tiny_color_model):
    return str(tiny_color_model.source)


@pytest.fixture()
def gray_path(tiny_gray_model):
    return str(tiny_gray_model.source)


@pytest.mark.parametrize("fmt, dtype, scale", [(vs.RGBS, np.float32, None), (vs.RGB24, np.uint8, 255), (vs.RGB48, np.uint16, 65535)])
def test_rgb_output_equals_the_core(jpeg_frames, color_path, fmt, dtype, scale):
    arrays = [a.astype(np.float32) / 255 if scale is None else (a.astype(np.uint16) * 257 if scale == 65535 else a)
              for a in jpeg_frames]
    out = fbcnn(clip_from_arrays(arrays, fmt), model=color_path, device="cpu")
    restorer = Restorer(color_path, device="cpu")
    for n in range(len(arrays)):
        expected = restorer.restore(arrays[n])
        got = frame_array(out, n)
        assert got.dtype == dtype
        assert np.abs(got.astype(np.float64) - expected.image.astype(np.float64)).max() < 1e-5
        assert out.get_frame(n).props["FBCNN_QF"] == expected.qf.value
        assert out.get_frame(n).props["FBCNN_QF_Predicted"] == pytest.approx(expected.qf.predicted)


def test_grays_output_equals_the_core(jpeg_frames, gray_path):
    arrays = [a[:, :, 1].astype(np.float32) / 255 for a in jpeg_frames]
    out = fbcnn(clip_from_arrays(arrays, vs.GRAYS), qf=20, model=gray_path, device="cpu")
    expected = Restorer(gray_path, device="cpu").restore(arrays[1], qf=20).image
    assert np.abs(frame_array(out, 1)[:, :, 0] - expected).max() < 1e-5


@pytest.mark.parametrize("fmt, channels", [(vs.RGBH, 3), (vs.GRAYH, 1)])
def test_half_float_clips_round_trip_through_the_core(jpeg_frames, color_path, gray_path, fmt, channels):
    arrays = [(a if channels == 3 else a[:, :, 1]).astype(np.float16) / 255 for a in jpeg_frames]
    model = color_path if channels == 3 else gray_path
    out = fbcnn(clip_from_arrays(arrays, fmt), qf=20, model=model, device="cpu")
    got = frame_array(out, 0)
    expected = Restorer(model, device="cpu").restore(arrays[0].astype(np.float32), qf=20).image
    assert got.dtype == np.float16
    assert np.abs(got.astype(np.float32).reshape(expected.shape) - expected).max() < 2e-3


def test_yuv_luma_mode_restores_y_with_the_gray_model_and_keeps_chroma(jpeg_frames, gray_path):
    rgb = clip_from_arrays(jpeg_frames, vs.RGB24)
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P8, matrix_s="709")
    out = fbcnn(yuv, qf=30, model=gray_path, device="cpu", yuv_mode="luma")
    source, restored = yuv.get_frame(0), out.get_frame(0)
    expected = Restorer(gray_path, device="cpu").restore(np.asarray(source[0]), qf=30).image
    assert np.array_equal(np.asarray(restored[0]), expected)
    for p in (1, 2):
        assert np.array_equal(np.asarray(restored[p]), np.asarray(source[p]))
    assert restored.format.id == vs.YUV420P8 and restored.props["FBCNN_QF"] == 30


def test_yuv_rgb_mode_is_clamped_rgbs_restoration_converted_back(jpeg_frames, color_path):
    rgb = clip_from_arrays(jpeg_frames, vs.RGB24)
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P10, matrix_s="709")
    out = fbcnn(yuv, qf=30, model=color_path, device="cpu")
    rgbs = core.resize.Bicubic(yuv, format=vs.RGBS, matrix_in=1)
    clamped = np.clip(frame_array(rgbs, 0), 0, 1)
    assert frame_array(rgbs, 0).min() < 0 or frame_array(rgbs, 0).max() > 1  # 4:2:0 chroma overshoots: clamping matters
    restored_rgb = Restorer(color_path, device="cpu").restore(clamped, qf=30).image
    expected = core.resize.Bicubic(clip_from_arrays([restored_rgb], vs.RGBS), format=vs.YUV420P10, matrix=1)
    assert out.format.id == vs.YUV420P10
    for p in range(3):
        got, want = np.asarray(out.get_frame(0)[p]), np.asarray(expected.get_frame(0)[p])
        assert np.array_equal(got, want), p


def test_props_kept_and_qf_forms(jpeg_frames, color_path):
    clip = core.std.SetFrameProps(clip_from_arrays(jpeg_frames, vs.RGB24), Source="camera")
    fixed = fbcnn(clip, qf=40, model=color_path, device="cpu").get_frame(0)
    assert fixed.props["FBCNN_QF"] == 40 and "FBCNN_QF_Predicted" not in fixed.props
    assert fixed.props["Source"] == "camera"
    per_frame = fbcnn(clip, qf=[10, 20, 30], model=color_path, device="cpu")
    assert [per_frame.get_frame(n).props["FBCNN_QF"] for n in range(3)] == [10, 20, 30]
    function = fbcnn(clip, qf=lambda n: 15 + n, model=color_path, device="cpu")
    assert function.get_frame(2).props["FBCNN_QF"] == 17
    analysis = core.std.SetFrameProps(core.std.BlankClip(clip), FBCNN_QF=33)
    from_clip = fbcnn(clip, qf=analysis, model=color_path, device="cpu")
    assert from_clip.get_frame(1).props["FBCNN_QF"] == 33
    assert np.array_equal(frame_array(from_clip, 1), frame_array(fbcnn(clip, qf=33, model=color_path), 1))
    assert not np.array_equal(frame_array(per_frame, 0), frame_array(fbcnn(clip, qf=90, model=color_path), 0))


def test_batches_match_single_frames(jpeg_frames, color_path):
    clip = clip_from_arrays(jpeg_frames, vs.RGB24)
    single = fbcnn(clip, qf=25, model=color_path, device="cpu")
    batched = fbcnn(clip, qf=25, model=color_path, device="cpu", batch_size=2)
    for n in range(3):
        assert np.abs(frame_array(single, n).astype(int) - frame_array(batched, n).astype(int)).max() <= 1


def test_self_ensemble_equals_the_core_single_and_batched(jpeg_frames, color_path):
    clip = clip_from_arrays(jpeg_frames, vs.RGB24)
    plain = fbcnn(clip, qf=25, model=color_path, device="cpu")
    single = fbcnn(clip, qf=25, model=color_path, device="cpu", self_ensemble=True)
    batched = fbcnn(clip, qf=25, model=color_path, device="cpu", self_ensemble=True, batch_size=3)
    restorer = Restorer(color_path, device="cpu", self_ensemble=True)
    for n in range(3):
        expected = restorer.restore(jpeg_frames[n], qf=25).image.astype(int)
        assert np.abs(frame_array(single, n).astype(int) - expected).max() == 0
        assert np.abs(frame_array(batched, n).astype(int) - expected).max() <= 1
        assert not np.array_equal(frame_array(plain, n), frame_array(single, n))


def test_batches_of_large_frames_keep_tiling(jpeg_frames, color_path):
    # 48x64 frames with 32-pixel tiles: a batch must take the tiled path, exactly as single frames do.
    clip = clip_from_arrays(jpeg_frames, vs.RGBS)
    single = fbcnn(clip, qf=25, model=color_path, device="cpu", tile=32, overlap=8)
    batched = fbcnn(clip, qf=25, model=color_path, device="cpu", tile=32, overlap=8, batch_size=3)
    whole = fbcnn(clip, qf=25, model=color_path, device="cpu", batch_size=3)
    for n in range(3):
        assert np.array_equal(frame_array(single, n), frame_array(batched, n))
    assert not np.array_equal(frame_array(whole, 1), frame_array(batched, 1))


def test_qf_smoothing_reduces_flicker_and_stops_at_scene_cuts(color_path):
    frames = [pillow_jpeg(natural_image(48, 64, seed=s), 30) for s in range(8)]
    clip = clip_from_arrays(frames, vs.RGB24)
    raw = fbcnn(clip, model=color_path, device="cpu")
    smooth = fbcnn(clip, model=color_path, device="cpu", qf_smoothing=2)
    raw_qf = np.array([raw.get_frame(n).props["FBCNN_QF_Predicted"] for n in range(8)])
    smooth_qf = np.array([smooth.get_frame(n).props["FBCNN_QF_Predicted"] for n in range(8)])
    assert np.var(np.diff(smooth_qf)) < np.var(np.diff(raw_qf))
    assert smooth_qf[3] == pytest.approx(raw_qf[1:6].mean())
    cut = core.std.Splice([clip[:4], core.std.SetFrameProps(clip[4], _SceneChangePrev=1), clip[5:]])
    around_cut = fbcnn(cut, model=color_path, device="cpu", qf_smoothing=2)
    assert around_cut.get_frame(3).props["FBCNN_QF_Predicted"] == pytest.approx(raw_qf[1:4].mean())
    assert around_cut.get_frame(4).props["FBCNN_QF_Predicted"] == pytest.approx(raw_qf[4:7].mean())


def _bad_calls(color_path):
    rgb = core.std.BlankClip(width=32, height=32, format=vs.RGB24, length=2)
    yuv = core.std.BlankClip(width=32, height=32, format=vs.YUV420P8, length=2)
    variable = core.std.Splice([rgb, core.std.BlankClip(width=16, height=16, format=vs.GRAY8, length=1)], mismatch=True)
    gray32 = core.std.BlankClip(width=32, height=32, format=core.query_video_format(vs.GRAY, vs.INTEGER, 32, 0, 0).id)
    return [
        (lambda: fbcnn("not a clip"), "must be a video clip"),
        (lambda: fbcnn(variable), "variable-format"),
        (lambda: fbcnn(gray32), "unsupported integer depth"),
        (lambda: fbcnn(rgb, qf=0), "qf must be an integer 1..100"),
        (lambda: fbcnn(rgb, qf="high"), "qf must be None"),
        (lambda: fbcnn(rgb, qf=rgb[0]), "qf clip has 1 frames"),
        (lambda: fbcnn(rgb, qf=rgb).get_frame(0), "no FBCNN_QF property"),
        (lambda: fbcnn(rgb, qf=[10]), "1 values for a clip of 2 frames"),
        (lambda: fbcnn(rgb, qf=30, qf_smoothing=2), "cannot be combined"),
        (lambda: fbcnn(rgb, num_streams=0), "num_streams"),
        (lambda: fbcnn(rgb, batch_size="4"), "batch_size"),
        (lambda: fbcnn(rgb, self_ensemble="yes"), "self_ensemble must be True or False"),
        (lambda: fbcnn(yuv, yuv_mode="chroma"), "yuv_mode"),
        (lambda: fbcnn(yuv), "no _Matrix property"),
        (lambda: fbcnn(rgb, model="no-such-model"), "no-such-model"),
        (lambda: fbcnn(rgb, device="tpu"), "unknown device"),
        (lambda: fbcnn(rgb, tile=100), "multiple of 8"),
    ]


def test_every_bad_input_raises_vs_error(color_path):
    for call, message in _bad_calls(color_path):
        with pytest.raises(vs.Error, match=message):
            call()


def test_vspipe_runs_the_example_to_the_end(tmp_path):
    vspipe = Path(sys.executable).with_name("vspipe")
    script = REPO / "vapoursynth" / "examples" / "deblock.vpy"
    env = {**os.environ, "FBCNN_REPEAT": "2"}
    info = subprocess.run([str(vspipe), "--info", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert info.returncode == 0, info.stderr + "\n(run `vapoursynth config` once after installing, as the README says)"
    assert "Frames: 2" in info.stdout and "YUV420P8" in info.stdout
    out = tmp_path / "out.yuv"
    run = subprocess.run([str(vspipe), str(script), str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    width, height = 320, 240
    assert out.stat().st_size == 2 * width * height * 3 // 2
