"""Exported ONNX graphs shared by the ONNX and vs-mlrt tests: an export takes tens of seconds, so each is made once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

_EXPORTS: dict[tuple[str, bool], Path] = {}
_FOLDER: list[tempfile.TemporaryDirectory] = []


def exported_onnx(weights: str | Path, *, fp16: bool = False) -> Path:
    """``fbcnn export-onnx WEIGHTS -o ...`` through the real CLI, once per weights file and precision."""
    pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'fbcnn-plugins[onnx]')")
    from fbcnn_plugins.cli.main import main

    key = (str(weights), fp16)
    if key not in _EXPORTS:
        if not _FOLDER:
            _FOLDER.append(tempfile.TemporaryDirectory(prefix="fbcnn-onnx-"))
        out = Path(_FOLDER[0].name) / f"{Path(weights).stem}-{'fp16' if fp16 else 'fp32'}.onnx"
        status = main(["export-onnx", str(weights), "-o", str(out), *(["--fp16"] if fp16 else [])])
        assert status == 0 and out.is_file()
        _EXPORTS[key] = out
    return _EXPORTS[key]
