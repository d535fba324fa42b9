"""Weights bundled with fbcnn-plugins, exposed through the ``fbcnn_plugins.models`` entry points.

Each entry point resolves to a function returning the path of a weights file
(its ``.json`` card lies beside it); other packages can register their own in
the same group.  No gray model is registered until one is trained
(training/configs/gray-small.toml); gray images meanwhile go to the colour
model through channel replication.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def color_small() -> Path:
    return HERE / "fbcnn-color-small.safetensors"

