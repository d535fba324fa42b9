"""FBCNN on Intel's OpenVINO runtime: the CPU engine of the base install, without PyTorch.

On the CPUs measured, OpenVINO's CPU plugin runs this network faster than PyTorch at the same
precision (docs/benchmarks.md): its graph compiler fuses the residual adds and activations into
the convolutions, which matters for a network whose early layers are thin and memory-bound.
The graphs are built from the weights' tensors when a model is loaded
(:mod:`.openvino_graph`), so nothing but the safetensors file is stored, and OpenVINO's own
compiled-model cache under the user's cache directory saves the compilation on later starts.
:class:`OpenVINONetwork` offers the engine methods the Restorer calls, on numpy arrays, so
tiling, QF prediction and blending stay the core's own.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import queue
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .heads import qf_head, strength_head
from .threads import num_threads

#: The network works on 3 stride-2 levels, so inputs are padded to this.
SIZE_MULTIPLE = 8
#: OpenVINO computes this network in fp32 or bf16 (bf16 where the CPU has native bf16 products).
PRECISIONS = ("fp32", "bf16")


@functools.lru_cache(maxsize=1)
def openvino_unavailable() -> str | None:
    """Why OpenVINO cannot run in this process, or None when it can.

    Installed is not enough: a process that has already loaded another OpenVINO runtime (a
    VapourSynth plugin bundling its own, such as vs-mlrt's) refuses the Python package's.
    """
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install openvino)"
    try:
        import openvino  # noqa: F401
    except Exception as error:  # ImportError, or the runtime's own version check
        return f"openvino cannot be loaded in this process: {str(error).strip().splitlines()[-1]}"
    return None


def openvino_installed() -> bool:
    return openvino_unavailable() is None


def openvino_suits_this_machine() -> bool:
    """True where OpenVINO is the faster CPU engine: x86-64 CPUs where the runtime loads."""
    return platform.machine().lower() in ("x86_64", "amd64") and openvino_installed()


def cache_root() -> Path:
    """Where compiled graphs live: $FBCNN_CACHE_DIR, else the platform's user cache directory."""
    if os.environ.get("FBCNN_CACHE_DIR"):
        return Path(os.environ["FBCNN_CACHE_DIR"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fbcnn-plugins"


def pad_to_multiple(x: np.ndarray) -> np.ndarray:
    """Pad (N, C, H, W) at the bottom and right to multiples of 8 by repeating the edge (as the network does)."""
    height, width = x.shape[-2:]
    pad_bottom, pad_right = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
    if pad_bottom or pad_right:
        x = np.pad(x, ((0, 0), (0, 0), (0, pad_bottom), (0, pad_right)), mode="edge")
    return np.ascontiguousarray(x, dtype=np.float32)


class OpenVINONetwork:
    """FBCNN compiled for the CPU by OpenVINO, with the engine methods the Restorer calls.

    Inputs and outputs are float32 numpy arrays (N, C, H, W); ``precision`` (fp32 or bf16) is
    the compute precision OpenVINO is told to use inside.  Infer requests come from a pool, one
    per concurrent call, so VapourSynth's parallel frame requests can share one instance.
    (Not thread-local storage: VapourSynth gives each callback a fresh Python thread state and
    deletes it afterwards, and an infer request freed with it crashes the interpreter.)
    """

    #: Encoding a tile apart from its decoder costs most of a pass more than the fused graph here
    #: (its features would leave the graph), more than encoding it a second time for the QF alone:
    #: the Restorer predicts from the QF graph and restores every tile in the fused one.
    separate_quality_pass = True

    def __init__(self, tensors: Mapping[str, np.ndarray], *, in_channels: int, blocks: int, global_residual: bool,
                 precision: str = "fp32", cache: Path | None = None) -> None:
        import openvino as ov

        from .openvino_graph import GRAPHS, build_graphs

        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO runs this network in fp32 or bf16, not {precision}")
        self.in_channels = in_channels
        self.precision = precision
        graphs = build_graphs(tensors, in_channels, blocks, global_residual)
        self._qf_head = qf_head(tensors, blocks)
        self._strength = strength_head(tensors)
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": str((cache or cache_root()) / "openvino" / f"compiled-ov{ov.__version__.split('-')[0]}"),
        }
        if num_threads() is not None:
            # --threads, one Ray worker per core, VapourSynth's thread count: the same budget as PyTorch's.
            config["INFERENCE_NUM_THREADS"] = num_threads()
        core = ov.Core()
        self._compiled = {graph: core.compile_model(graphs[graph], "CPU", config) for graph in GRAPHS}
        self._idle: dict[str, queue.SimpleQueue] = {graph: queue.SimpleQueue() for graph in GRAPHS}

    @classmethod
    def from_model(cls, loaded: Any, precision: str = "fp32", cache: Path | None = None) -> OpenVINONetwork:
        """The engine for a :class:`~fbcnn_plugins.core.weights.LoadedModel`."""
        return cls(loaded.tensors, in_channels=loaded.in_channels, blocks=loaded.config.blocks,
                   global_residual=loaded.config.global_residual, precision=precision, cache=cache)

    @contextlib.contextmanager
    def _request(self, graph: str) -> Iterator[Any]:
        try:
            request = self._idle[graph].get_nowait()
        except queue.Empty:
            request = self._compiled[graph].create_infer_request()
        try:
            yield request
        finally:
            self._idle[graph].put(request)

    def _infer(self, graph: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        with self._request(graph) as request:
            request.infer([np.ascontiguousarray(value, dtype=np.float32) for value in inputs])
            # Copies: the request reuses its output buffers on its next call.
            return [np.array(request.get_output_tensor(i).data, copy=True)
                    for i in range(len(self._compiled[graph].outputs))]

    # -- the methods the Restorer calls on an engine ------------------------------
    def restore(self, x: np.ndarray, control: np.ndarray) -> np.ndarray:
        """The restored image at the quality scalars ``control`` (N, 1), q = 1 - QF/100."""
        height, width = x.shape[-2:]
        (y,) = self._infer("restore", [pad_to_multiple(x), control])
        return y[..., :height, :width]

    def restore_predicted(self, x: np.ndarray) -> tuple[np.ndarray, float, int]:
        """Restore at the input's own predicted QF in one pass: (output, predicted QF, integer QF used).

        For an image that is one tile: the prediction and the restoration share the encoder
        inside one graph, so predicting costs only the QF branch.
        """
        height, width = x.shape[-2:]
        y, predicted, used = self._infer("blind", [pad_to_multiple(x)])
        return y[..., :height, :width], (1.0 - float(predicted[0, 0])) * 100.0, int(used[0, 0])

    def quality_feature_sum(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """The QF branch's features summed over positions (N, C), and the number of positions."""
        padded = pad_to_multiple(x)
        (quality_sum,) = self._infer("quality", [padded])
        return quality_sum, (padded.shape[-2] // 8) * (padded.shape[-1] // 8)

    def quality_from_features(self, mean_features: np.ndarray) -> np.ndarray:
        return self._qf_head(mean_features)

    @property
    def has_strength_head(self) -> bool:
        return self._strength is not None

    def strength_from_features(self, mean_features: np.ndarray) -> np.ndarray:
        assert self._strength is not None
        return self._strength(mean_features)
