"""FBCNN on Intel's OpenVINO runtime, for x86 CPUs (the ``openvino`` extra).

On the CPUs measured, OpenVINO's CPU plugin runs this network faster than PyTorch at
the same precision (docs/benchmarks.md): its graph compiler fuses the residual adds and
activations into the convolutions, which matters for a network whose early layers are
thin and memory-bound.  :class:`OpenVINONetwork` offers the methods the Restorer calls
on the PyTorch network, so tiling, QF prediction and blending stay the core's own, and
the output matches the PyTorch path (above 50 dB PSNR between them; tested).

``openvino.convert_model`` traces the PyTorch module directly.  Tracing takes tens of
seconds on a small CPU, so the converted graphs are saved once per weights (keyed by the
sha256 of the tensors) under the user's cache directory, and OpenVINO's own compiled-model
cache sits beside them.  Shapes are dynamic in batch, height and width (multiples of 8),
so one conversion serves every tile and frame size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import queue
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .network import FBCNN, EncodedTile, pad_to_multiple

#: Graph variants: the restoration at a given QF; a whole image restored at its own rounded
#: predicted QF in one pass; the encoder and QF branch alone, giving the pooled features; and
#: the encoder with all its outputs and the decoder on them (these two share an encoder pass).
GRAPHS = ("restore", "blind", "quality", "encode", "decode")
#: Bumped when the graphs' inputs or outputs change, so older cached conversions are not read.
GRAPH_FORMAT = 3


@functools.lru_cache(maxsize=1)
def openvino_unavailable() -> str | None:
    """Why OpenVINO cannot run in this process, or None when it can.

    Installed is not enough: a process that has already loaded another OpenVINO runtime (a
    VapourSynth plugin bundling its own, such as vs-mlrt's) refuses the Python package's.
    """
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'fbcnn-plugins[openvino]')"
    try:
        import openvino  # noqa: F401
    except Exception as error:  # ImportError, or the runtime's own version check
        return f"openvino cannot be loaded in this process: {str(error).strip().splitlines()[-1]}"
    return None


def openvino_installed() -> bool:
    return openvino_unavailable() is None


def openvino_suits_this_machine() -> bool:
    """True where OpenVINO is the faster CPU engine: x86-64 CPUs where the extra loads."""
    return platform.machine().lower() in ("x86_64", "amd64") and openvino_installed()


def cache_root() -> Path:
    """Where converted graphs live: $FBCNN_CACHE_DIR, else the platform's user cache directory."""
    if os.environ.get("FBCNN_CACHE_DIR"):
        return Path(os.environ["FBCNN_CACHE_DIR"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fbcnn-plugins"


def weights_key(network: FBCNN) -> str:
    """sha256 over the architecture and every tensor, so any change of weights gets its own graphs."""
    digest = hashlib.sha256()
    architecture = (network.in_channels, network.out_channels, network.channels, network.blocks,
                    network.embed_dim, network.global_residual, GRAPH_FORMAT)
    digest.update(repr(architecture).encode())
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Restore(torch.nn.Module):
    def __init__(self, network: FBCNN) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        return self.network.decode(self.network.encode(x), control)


class _Blind(torch.nn.Module):
    """Restores at the network's own QF prediction, rounded to an integer QF as the Restorer does."""

    def __init__(self, network: FBCNN) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.network.encode(x)
        predicted = self.network.qf_pred(features[-1])
        # clamp_qf: round half to even (as Python's round and torch.round do), then 1..100.
        qf = torch.clamp(torch.round((1.0 - predicted) * 100.0), 1.0, 100.0)
        return self.network.decode(features, 1.0 - qf / 100.0), predicted, qf


class _Quality(torch.nn.Module):
    def __init__(self, network: FBCNN) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.network.qf_pred[: self.network.blocks](self.network.encode(x)[-1])
        return features.sum(dim=(2, 3))


class _Encode(torch.nn.Module):
    def __init__(self, network: FBCNN) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.network.encode(x)
        quality = self.network.qf_pred[: self.network.blocks](features[-1])
        return (*features, quality.sum(dim=(2, 3)))


class _Decode(torch.nn.Module):
    def __init__(self, network: FBCNN) -> None:
        super().__init__()
        self.network = network

    def forward(self, x, x1, x2, x3, x4, bottleneck, control):  # noqa: ANN001, ANN201 (traced)
        return self.network.decode((x, x1, x2, x3, x4, bottleneck), control)


def _convert(network: FBCNN, graph: str) -> Any:
    """Trace one graph variant with a small example and open its batch, height and width."""
    import openvino as ov

    channels = network.in_channels
    x = torch.rand(1, channels, 64, 64)
    control = torch.full((1, 1), 0.5)
    image = ov.PartialShape([-1, channels, -1, -1])
    scalar = ov.PartialShape([-1, 1])
    if graph == "restore":
        module, example, shapes = _Restore(network), (x, control), [image, scalar]
    elif graph == "blind":
        module, example, shapes = _Blind(network), (x,), [image]
    elif graph == "quality":
        module, example, shapes = _Quality(network), (x,), [image]
    elif graph == "encode":
        module, example, shapes = _Encode(network), (x,), [image]
    else:
        with torch.inference_mode():
            features = network.encode(x)
        module = _Decode(network)
        example = (*features, control)
        shapes = [ov.PartialShape([-1, f.shape[1], -1, -1]) for f in features] + [scalar]
    with warnings.catch_warnings():  # the tracer's deprecation notices say nothing to a user
        warnings.simplefilter("ignore")
        with torch.no_grad():
            return ov.convert_model(module, example_input=example, input=shapes)


def converted_graphs(network: FBCNN, cache: Path | None = None) -> dict[str, Path]:
    """The three graphs of ``network`` as OpenVINO IR files, converted on first use and cached."""
    import openvino as ov

    folder = (cache or cache_root()) / "openvino" / f"{weights_key(network)}-ov{ov.__version__.split('-')[0]}"
    paths = {graph: folder / f"{graph}.xml" for graph in GRAPHS}
    if all(path.exists() and path.with_suffix(".bin").exists() for path in paths.values()):
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        reference = _fp32_copy(network)
        for graph in GRAPHS:
            ov.save_model(_convert(reference, graph), staging / f"{graph}.xml", compress_to_fp16=False)
        try:
            staging.rename(folder)  # whole folders appear at once: a second process sees all or nothing
        except OSError:
            if not folder.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _fp32_copy(network: FBCNN) -> FBCNN:
    import copy

    return copy.deepcopy(network).to("cpu", torch.float32).eval()


def ov_tensor(array: np.ndarray) -> Any:
    import openvino as ov

    return ov.Tensor(np.ascontiguousarray(array, dtype=np.float32))


class OpenVINONetwork:
    """FBCNN compiled for the CPU by OpenVINO, with the PyTorch network's restoration methods.

    Inputs and outputs are float32 CPU tensors; ``precision`` (fp32 or bf16) is the
    compute precision OpenVINO is told to use inside.  Infer requests come from a pool, one
    per concurrent call, so VapourSynth's parallel frame requests can share one instance.
    (Not thread-local storage: VapourSynth gives each callback a fresh Python thread state and
    deletes it afterwards, and an infer request freed with it crashes the interpreter.)
    """

    def __init__(self, network: FBCNN, precision: torch.dtype = torch.float32, cache: Path | None = None) -> None:
        import openvino as ov

        if precision not in (torch.float32, torch.bfloat16):
            raise ValueError(f"OpenVINO runs this network in fp32 or bf16, not {precision}")
        self.in_channels = network.in_channels
        self.blocks = network.blocks
        self.precision = precision
        # The QF head after pooling is a few small matrix products: it stays in PyTorch, in fp32.
        fp32 = _fp32_copy(network)
        self._head = fp32.qf_pred[network.blocks + 2 :]
        self._strength = fp32.strength_pred if network.has_strength_head else None
        paths = converted_graphs(network, cache)
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == torch.bfloat16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            # The same thread budget as PyTorch's, so --threads and one Ray worker per core hold here too.
            "INFERENCE_NUM_THREADS": max(1, torch.get_num_threads()),
            "CACHE_DIR": str(paths["restore"].parent / "compiled"),
        }
        self._compiled = {graph: core.compile_model(core.read_model(path), "CPU", config) for graph, path in paths.items()}
        self._idle: dict[str, queue.SimpleQueue] = {graph: queue.SimpleQueue() for graph in GRAPHS}

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

    # -- the methods the Restorer calls on a network ------------------------------
    def restore(self, x: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        (y,) = self._infer("restore", [pad_to_multiple(x.float()).numpy(), control.float().numpy()])
        return torch.from_numpy(y)[..., :height, :width]

    def restore_predicted(self, x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """Restore at the input's own predicted QF in one pass: (output, predicted QF, integer QF used).

        For an image that is one tile: the prediction and the restoration share the encoder
        inside one graph, so predicting costs only the QF branch.
        """
        height, width = x.shape[-2:]
        y, predicted, used = self._infer("blind", [pad_to_multiple(x.float()).numpy()])
        return torch.from_numpy(y)[..., :height, :width], (1.0 - float(predicted[0, 0])) * 100.0, int(used[0, 0])

    def encode_tile(self, x: torch.Tensor) -> EncodedTile:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x.float())
        # A request of its own: its output tensors hold the features until decode_tile reads them in place.
        request = self._compiled["encode"].create_infer_request()
        request.infer([np.ascontiguousarray(padded.numpy())])
        outputs = [request.get_output_tensor(i) for i in range(len(self._compiled["encode"].outputs))]
        quality_sum = torch.from_numpy(np.array(outputs[-1].data, copy=True))
        count = (padded.shape[-2] // 8) * (padded.shape[-1] // 8)
        return EncodedTile((request, *outputs[:-1]), quality_sum, count, height, width)

    def decode_tile(self, encoded: EncodedTile, control: torch.Tensor) -> torch.Tensor:
        _, *features = encoded.features
        with self._request("decode") as request:
            for i, tensor in enumerate(features):
                request.set_input_tensor(i, tensor)
            request.set_input_tensor(len(features), ov_tensor(control.float().numpy()))
            request.infer()
            y = np.array(request.get_output_tensor(0).data, copy=True)
        return torch.from_numpy(y)[..., : encoded.height, : encoded.width]

    #: Encoding a tile apart from its decoder costs most of a pass more than the fused graph here
    #: (its features leave the graph), more than encoding it a second time for the QF alone: the
    #: Restorer then predicts from the QF graph and restores every tile in the fused one.
    separate_quality_pass = True

    def quality_feature_sum(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        padded = pad_to_multiple(x.float())
        (quality_sum,) = self._infer("quality", [padded.numpy()])
        return torch.from_numpy(quality_sum), (padded.shape[-2] // 8) * (padded.shape[-1] // 8)

    def quality_from_features(self, mean_features: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._head(mean_features.float())

    @property
    def has_strength_head(self) -> bool:
        return self._strength is not None

    def strength_from_features(self, mean_features: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._strength(mean_features.float())
