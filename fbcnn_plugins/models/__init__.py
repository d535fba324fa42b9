"""Weights bundled with fbcnn-plugins, exposed through the ``fbcnn_plugins.models`` entry points.

Each entry point resolves to a function returning the path of a weights file
(its ``.json`` card lies beside it); other packages can register their own in
the same group.  Gray images go to the gray model (trained on the Y channel);
the colour model also accepts them through channel replication.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def color_small() -> Path:
    return HERE / "fbcnn-color-small.safetensors"


def gray_small() -> Path:
    return HERE / "fbcnn-gray-small.safetensors"


def color_video_small() -> Path:
    """The colour model fine-tuned on MPEG-2, H.264, HEVC and JPEG damage: the VapourSynth filter's default."""
    return HERE / "fbcnn-color-video-small.safetensors"
