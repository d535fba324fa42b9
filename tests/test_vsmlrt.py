"""The exported graph in vs-mlrt's ONNX Runtime plugin (``core.ort.Model``) matches our own filter."""

from __future__ import annotations

import numpy as np
import pytest
import vapoursynth as vs

from fbcnn_plugins.vapoursynth import fbcnn

from conftest import natural_image, pillow_jpeg
from onnx_helpers import exported_onnx
from test_vapoursynth import clip_from_arrays, frame_array

core = vs.core
needs_ort = pytest.mark.skipif(
    not hasattr(core, "ort"), reason="vs-mlrt's ONNX Runtime plugin is not installed (pip install 'fbcnn-plugins[vsmlrt]')"
)
needs_ov = pytest.mark.skipif(
    not hasattr(core, "ov"), reason="vs-mlrt's OpenVINO plugin is not installed (pip install vapoursynth-mlrt-ov)"
)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-20)))


@pytest.fixture(scope="module")
def rgbs_clip() -> vs.VideoNode:
    """Two 128x96 JPEG-compressed photos as an RGBS clip, as vs-mlrt takes them."""
    frames = [pillow_jpeg(natural_image(96, 128, seed=s), 20).astype(np.float32) / 255 for s in range(2)]
    return clip_from_arrays(frames, vs.RGBS)


def _qf_plane(clip: vs.VideoNode, qf: int) -> vs.VideoNode:
    """The constant plane that carries the QF, as vs-mlrt's DPIR carries its strength."""
    return core.std.BlankClip(clip, format=vs.GRAYS, color=qf / 100, keep=True)


@needs_ort
@pytest.mark.parametrize("qf", [20, 70])
def test_ort_plugin_matches_the_filter(tiny_color_model, rgbs_clip, qf):
    network = exported_onnx(tiny_color_model.source)
    theirs = core.ort.Model([rgbs_clip, _qf_plane(rgbs_clip, qf)], network_path=str(network), provider="CPU", verbosity=0)
    ours = fbcnn(rgbs_clip, qf=qf, model=str(tiny_color_model.source), device="cpu", precision="fp32")
    assert theirs.format.id == vs.RGBS and (theirs.width, theirs.height) == (128, 96)
    for n in range(rgbs_clip.num_frames):
        psnr = _psnr(frame_array(theirs, n), np.clip(frame_array(ours, n), 0, 1))
        assert psnr >= 50, (n, psnr)


@needs_ort
def test_the_documented_yuv_recipe_gives_what_the_filter_gives(tiny_color_model):
    # A centre-sited, full-range YUV clip (MJPEG-like) whose chroma overshoots RGB's [0, 1].
    frames = [pillow_jpeg(natural_image(96, 128, seed=s), 20) for s in range(2)]
    yuv = core.resize.Bicubic(clip_from_arrays(frames, vs.RGB24), format=vs.YUV420P8, matrix_s="170m",
                              range_s="full", chromaloc_s="center")
    rgb = core.resize.Bicubic(yuv, format=vs.RGBS)
    assert frame_array(rgb, 0).min() < 0 or frame_array(rgb, 0).max() > 1
    out = core.ort.Model([rgb, _qf_plane(rgb, 25)], network_path=str(exported_onnx(tiny_color_model.source)),
                         provider="CPU", verbosity=0)
    props = yuv.get_frame(0).props
    theirs = core.resize.Bicubic(out, format=yuv.format.id, matrix=props["_Matrix"], range=props["_Range"],
                                 chromaloc=props["_ChromaLocation"])
    ours = fbcnn(yuv, qf=25, model=str(tiny_color_model.source), device="cpu", precision="fp32")
    for n in range(2):
        for p in range(3):
            diff = np.abs(np.asarray(theirs.get_frame(n)[p]).astype(int) - np.asarray(ours.get_frame(n)[p]))
            assert diff.max() <= 1, (n, p, diff.max())


@needs_ort
def test_ort_plugin_runs_the_gray_graph_and_the_fp16_graph(tiny_color_model, tiny_gray_model, rgbs_clip):
    gray = core.std.ShufflePlanes(rgbs_clip, 1, vs.GRAY)
    theirs = core.ort.Model([gray, _qf_plane(gray, 30)], network_path=str(exported_onnx(tiny_gray_model.source)),
                            provider="CPU", verbosity=0)
    ours = fbcnn(gray, qf=30, model=str(tiny_gray_model.source), device="cpu", precision="fp32")
    assert theirs.format.id == vs.GRAYS
    assert _psnr(frame_array(theirs, 1), np.clip(frame_array(ours, 1), 0, 1)) >= 50
    half = core.ort.Model([rgbs_clip, _qf_plane(rgbs_clip, 30)], network_path=str(exported_onnx(tiny_color_model.source, fp16=True)),
                          provider="CPU", verbosity=0)
    full = fbcnn(rgbs_clip, qf=30, model=str(tiny_color_model.source), device="cpu", precision="fp32")
    assert _psnr(frame_array(half, 0), np.clip(frame_array(full, 0), 0, 1)) >= 40


@needs_ort
def test_ort_plugin_tiles_the_graph(tiny_color_model, rgbs_clip):
    # vs-mlrt's tiling (tilesize/overlap, as its wrapper sets them) on a graph with dynamic sizes.
    tiled = core.ort.Model([rgbs_clip, _qf_plane(rgbs_clip, 30)], network_path=str(exported_onnx(tiny_color_model.source)),
                           tilesize=[64, 48], overlap=[8, 8], provider="CPU", verbosity=0)
    whole = core.ort.Model([rgbs_clip, _qf_plane(rgbs_clip, 30)], network_path=str(exported_onnx(tiny_color_model.source)),
                           provider="CPU", verbosity=0)
    assert (tiled.width, tiled.height) == (128, 96)
    psnr = _psnr(frame_array(tiled, 0), frame_array(whole, 0))
    print(f"tiled against whole frame: {psnr:.1f} dB")
    assert 30 < psnr < 200  # close to the whole frame, but really tiled (the tile borders differ a little)


@needs_ov
def test_openvino_plugin_matches_the_filter(tiny_color_model, rgbs_clip):
    network = exported_onnx(tiny_color_model.source)
    theirs = core.ov.Model([rgbs_clip, _qf_plane(rgbs_clip, 40)], network_path=str(network), device="CPU")
    ours = fbcnn(rgbs_clip, qf=40, model=str(tiny_color_model.source), device="cpu", precision="fp32")
    psnr = _psnr(frame_array(theirs, 1), np.clip(frame_array(ours, 1), 0, 1))
    print(f"core.ov.Model against the filter: {psnr:.1f} dB")
    assert psnr >= 45  # OpenVINO may compute in bf16 on CPUs that have it
