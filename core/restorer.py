"""The one entry point every front end uses to restore pixels.

``Restorer.restore(image, qf)`` takes a numpy image in the caller's layout and
sample format and returns the same layout and format, plus the QF it used.
It picks the bundled colour or gray model by image type unless told
otherwise, estimates the QF once per image (tile by tile on large images),
and runs the network tile by tile so memory stays bounded.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .catalog import load_model
from .device import DeviceError, resolve_device, resolve_precision
from .ensemble import self_ensemble
from .pixels import merge_image, split_image
from .qf_estimation import dominant_quality
from .quality import QFEstimate, clamp_qf, parse_qf, qf_to_scalar, scalar_to_qf
from .tiling import DEFAULT_TILE, Tile, check_tiling, default_overlap, iter_tiles, quality_tiles, run_tiled
from .network import EncodedTile
from .weights import LoadedModel

ProgressCallback = Callable[[int, int], None]

#: At most this many tiles are read to predict the QF of a large image.
MAX_QF_TILES = 16
#: QF tiles are never smaller than this, whatever tile the restoration uses: on small tiles the
#: zero-padded borders weigh enough in the pooled features to raise the estimate (about +2 QF
#: at 64 px), and a user who lowers the tile to save memory should get the same QF.  The QF
#: branch runs only the encoder, so a 256-px tile costs little memory even for large configs.
QF_MIN_TILE = 256
#: Restoration tiles whose encoder features also predict the QF (spread evenly over the image).
#: Their features wait in memory until the QF is known, so this also bounds the extra memory.
QF_SAMPLE_TILES = 4
#: Engines that run the network: PyTorch everywhere, OpenVINO on x86 CPUs (the openvino extra).
BACKENDS = ("auto", "pytorch", "openvino")


@dataclass
class RestoreResult:
    image: np.ndarray
    qf: QFEstimate


class Restorer:
    """Runs FBCNN on images of any size on the CPU or a GPU.

    ``model`` may be ``None`` (the installed default colour or gray model,
    chosen per image), a registered model name, a weights path, or an already
    loaded model.  ``self_ensemble`` averages the 8 flips/rotations of each tile (8x the
    time, for about a tenth of a dB at strong compression).  Gray images given to a colour model are replicated to three
    channels and the restored channels averaged back, which is what the
    colour model was trained to handle for gray photos.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | LoadedModel | None = None,
        *,
        device: str | torch.device = "auto",
        precision: str | None = None,
        tile: int = DEFAULT_TILE,
        overlap: int | None = None,
        self_ensemble: bool = False,
        backend: str = "auto",
    ) -> None:
        overlap = default_overlap(tile) if overlap is None else overlap
        check_tiling(tile, overlap)
        #: Average the 8 flips/rotations of every tile: a little more quality for 8x the time.
        self.self_ensemble = self_ensemble
        self.device = resolve_device(device)
        #: The compute precision: by default the fastest one the hardware computes natively.
        self.dtype = resolve_precision(precision, self.device)
        self.backend = resolve_backend(backend, self.device, self.dtype)
        #: What tensors are handed to the network in: OpenVINO takes float32 and computes in self.dtype.
        self.io_dtype = torch.float32 if self.backend == "openvino" else self.dtype
        self.tile = tile
        self.overlap = overlap
        # A named model is loaded now, so a wrong name or file fails before any image is read.
        self._model_choice = model if model is None or isinstance(model, LoadedModel) else load_model(model)
        self._ready: dict[bool, tuple[LoadedModel, torch.nn.Module]] = {}

    # -- models --------------------------------------------------------------
    def model_for(self, gray: bool) -> LoadedModel:
        return self.prepared_network(gray)[0]

    def prepared_network(self, gray: bool) -> tuple[LoadedModel, torch.nn.Module]:
        """The model for gray or colour images and its copy on this restorer's device and precision."""
        if gray not in self._ready:
            choice = self._model_choice
            loaded = choice if isinstance(choice, LoadedModel) else load_model(choice, gray=gray)
            if not gray and loaded.is_gray:
                raise ValueError(f"model {loaded.name!r} is a gray model and cannot restore a color image")
            if self.backend == "openvino":
                from .openvino_backend import OpenVINONetwork

                network = OpenVINONetwork(loaded.network, self.dtype)
            else:
                # Channels-last is faster on every backend we measured: on this 2-core AVX2 CPU 1.4x for
                # fp32 and 3x for bf16 (whose default layout falls back to a slow path).
                network = copy.deepcopy(loaded.network).to(self.device, self.dtype).eval()
                network = network.to(memory_format=torch.channels_last)
            self._ready[gray] = (loaded, network)
        return self._ready[gray]

    # -- QF ------------------------------------------------------------------
    @torch.inference_mode()
    def pooled_quality_features(self, image: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        """The QF branch's features of a whole CPU image (1,C,H,W), pooled over up to MAX_QF_TILES tiles."""
        _, _, height, width = image.shape
        feature_sum, count = None, 0
        for t in quality_tiles(height, width, max(self.tile, QF_MIN_TILE), MAX_QF_TILES):
            part = self.to_device(image[:, :, t.top : t.bottom, t.left : t.right])
            tile_sum, tile_count = network.quality_feature_sum(part)
            feature_sum = tile_sum.float() if feature_sum is None else feature_sum + tile_sum.float()
            count += tile_count
        assert feature_sum is not None
        return (feature_sum / count).to(self.io_dtype)

    @torch.inference_mode()
    def predict_quality(self, image: torch.Tensor, network: torch.nn.Module) -> float:
        """The network's QF for a whole CPU image (1,C,H,W), pooled over up to MAX_QF_TILES tiles."""
        mean = self.pooled_quality_features(image, network)
        return scalar_to_qf(float(network.quality_from_features(mean).float().cpu()))

    def predict_strength(self, image: torch.Tensor, network: torch.nn.Module) -> float:
        """The control that should restore a whole CPU image (1,C,H,W) best, as a QF.

        The strength head's estimate where the model has one (it was fitted to the strengths that
        measured best on the damage the model is for: JPEG chains for the photo model, codec
        frames for the video model); the QF head's for models without one.
        """
        with torch.inference_mode():
            quality, strength = head_estimates(self.pooled_quality_features(image, network), network)
        return quality if strength is None else strength

    def predict_qf(self, image: np.ndarray) -> float:
        """The network's QF estimate for a numpy image in any supported layout and dtype."""
        return self.predict_qf_and_strength(image)[0]

    def predict_qf_and_strength(self, image: np.ndarray) -> tuple[float, float | None]:
        """The QF estimate and, from the same features, the strength that should restore the image best.

        The strength comes from the model's strength head (the bundled colour model has one); it is
        None for models without it.  The model is loaded outside inference mode, so the cached
        network stays usable for training.
        """
        split = split_image(image)
        loaded, network = self.prepared_network(split.is_gray)
        color = split.color
        if split.is_gray and not loaded.is_gray:
            color = np.repeat(color, 3, axis=2)
        with torch.inference_mode():
            mean = self.pooled_quality_features(torch.from_numpy(color).permute(2, 0, 1)[None], network)
            return head_estimates(mean, network)

    # -- restoration -------------------------------------------------------------
    def restore(
        self,
        image: np.ndarray,
        qf: int | str | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> RestoreResult:
        """Restore ``image``; ``qf`` is None/"auto"/"predicted" (network's estimate) or an int 1..100."""
        wanted = parse_qf(qf)
        split = split_image(image)
        estimate = None
        if wanted == "dominant":
            estimate = dominant_estimate(split.color)
            wanted = estimate.value
        elif wanted == "header":
            raise ValueError("qf='header' needs a JPEG file; read it with header_quality() and pass the number")
        loaded, _ = self.prepared_network(split.is_gray)
        color = split.color
        replicate = split.is_gray and not loaded.is_gray
        if replicate:
            color = np.repeat(color, 3, axis=2)
        # A channels-first view, not a copy: tiles are copied one at a time on their way to the device.
        tensor = torch.from_numpy(color).permute(2, 0, 1)[None]
        restored, used = self.restore_tensor(tensor, wanted, gray=split.is_gray, progress=progress)
        estimate = estimate or used
        out = restored[0].numpy().transpose(1, 2, 0)
        if replicate:
            out = out.mean(axis=2, keepdims=True)
        return RestoreResult(merge_image(out, split), estimate)

    def restore_tensor(
        self,
        image: torch.Tensor,
        qf: int | str | None = None,
        *,
        gray: bool | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[torch.Tensor, QFEstimate]:
        """Restore a float CPU tensor (1,C,H,W) whose C matches the model; returns a float32 CPU tensor."""
        wanted = parse_qf(qf)
        if wanted in ("dominant", "header"):
            raise ValueError(f"qf={wanted!r} is estimated from pixels or files; use restore() or pass a number")
        gray = image.shape[1] == 1 if gray is None else gray
        loaded, network = self.prepared_network(gray)
        if image.shape[1] != loaded.in_channels:
            raise ValueError(f"model {loaded.name!r} takes {loaded.in_channels} channels, the image has {image.shape[1]}")
        tiles = list(iter_tiles(image.shape[2], image.shape[3], self.tile, self.overlap))
        encoded: dict[int, EncodedTile] = {}
        if not isinstance(wanted, int) and len(tiles) == 1 and hasattr(network, "restore_predicted") \
                and not self.self_ensemble:
            # One tile, on an engine with a one-pass graph for it: predict and restore together.
            restored, predicted, used = network.restore_predicted(self.to_device(image))
            if progress:
                progress(1, 1)
            return restored.float().cpu(), QFEstimate(used, "predicted", predicted)
        if isinstance(wanted, int):
            estimate = QFEstimate(wanted, "given")
        elif self.self_ensemble or not tiles_predict_well(tiles, image.shape[2], image.shape[3]):
            predicted = self.predict_quality(image, network)
            estimate = QFEstimate(clamp_qf(predicted), "predicted", predicted)
        else:
            # The QF from a few restoration tiles.  PyTorch keeps their encoder features and decodes
            # them once the QF is known: predicting costs the QF branch alone, no second encoder pass.
            if getattr(network, "separate_quality_pass", False):
                # OpenVINO, where splitting a tile's pass costs more than a QF-only pass over it.
                predicted = self.quality_of([self.quality_sum(image, network, t) for t in sample_tiles(tiles)], network)
            else:
                encoded = self.encode_sample(image, network, tiles)
                predicted = self.quality_of(list(encoded.values()), network)
            estimate = QFEstimate(clamp_qf(predicted), "predicted", predicted)
        order = iter(enumerate(tiles))

        def process(tile: torch.Tensor) -> torch.Tensor:
            index, where = next(order)  # run_tiled visits iter_tiles' tiles in order
            assert tile.shape[-2:] == (where.bottom - where.top, where.right - where.left)
            if index in encoded:
                return self.decode(network, encoded.pop(index), estimate.value)
            return self.forward(network, self.to_device(tile), estimate.value)

        restored = run_tiled(process, image, tile=self.tile, overlap=self.overlap, progress=progress)
        return restored, estimate

    @torch.inference_mode()
    def encode_sample(self, image: torch.Tensor, network: torch.nn.Module, tiles: list[Tile]) -> dict[int, EncodedTile]:
        """Encoder features of a few of ``tiles`` (at most QF_SAMPLE_TILES, each in the middle of an
        equal share of the tiles, so they spread over the image), by tile index."""
        return {i: network.encode_tile(self.to_device(image[:, :, t.top : t.bottom, t.left : t.right]))
                for i, t in ((i, tiles[i]) for i in sample_indices(len(tiles)))}

    @torch.inference_mode()
    def quality_sum(self, image: torch.Tensor, network: torch.nn.Module, tile: Tile) -> EncodedTile:
        """A tile's pooled QF features alone, shaped like an encoded tile's (no features kept)."""
        part = self.to_device(image[:, :, tile.top : tile.bottom, tile.left : tile.right])
        feature_sum, count = network.quality_feature_sum(part)
        return EncodedTile((), feature_sum.float(), count, tile.bottom - tile.top, tile.right - tile.left)

    @torch.inference_mode()
    def quality_of(self, encoded: list[EncodedTile], network: torch.nn.Module) -> float:
        """The QF predicted from the pooled QF features of encoded tiles (the image's first entry)."""
        feature_sum = sum(e.quality_sum[:1].float() for e in encoded)
        count = sum(e.quality_count for e in encoded)
        mean = (feature_sum / count).to(self.io_dtype)
        return scalar_to_qf(float(network.quality_from_features(mean).float().cpu()))

    @torch.inference_mode()
    def decode(self, network: torch.nn.Module, encoded: EncodedTile, qf: int) -> torch.Tensor:
        """The restoration of an encoded tile at ``qf``: equal to :meth:`forward` on the same tile."""
        return network.decode_tile(encoded, self.control(1, qf))

    def control(self, count: int, qf: int) -> torch.Tensor:
        """The decoder's quality input for ``count`` images at ``qf``."""
        return torch.full((count, 1), qf_to_scalar(qf), device=self.device, dtype=self.io_dtype)

    @torch.inference_mode()
    def forward(self, network: torch.nn.Module, batch: torch.Tensor, qf: int) -> torch.Tensor:
        """One device batch (N,C,H,W) through the network at ``qf``, with the self-ensemble when set.

        The one place a restoration pass is defined, so that callers that batch on their own
        (the VapourSynth filter batches whole frames) restore exactly as the tiled path does.
        """
        control = self.control(batch.shape[0], qf)

        def run(x: torch.Tensor) -> torch.Tensor:
            return network.restore(x.contiguous(memory_format=torch.channels_last), control)

        return self_ensemble(run, batch) if self.self_ensemble else run(batch)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A CPU tensor on the device, in the compute precision and channels-last layout."""
        tensor = tensor.to(self.device, self.io_dtype, non_blocking=True)
        return tensor.contiguous(memory_format=torch.channels_last)


def head_estimates(mean: torch.Tensor, network: torch.nn.Module) -> tuple[float, float | None]:
    """The QF head's estimate and the strength head's (None without one) from pooled encoder features."""
    quality = scalar_to_qf(float(network.quality_from_features(mean).float().cpu()))
    if not getattr(network, "has_strength_head", False):
        return quality, None
    return quality, scalar_to_qf(float(network.strength_from_features(mean).float().cpu()))


def sample_indices(count: int) -> list[int]:
    """Up to QF_SAMPLE_TILES of ``count`` tile indices, each in the middle of an equal share."""
    wanted = min(count, QF_SAMPLE_TILES)
    return sorted({int((k + 0.5) * count / wanted) for k in range(wanted)})


def sample_tiles(tiles: list[Tile]) -> list[Tile]:
    return [tiles[i] for i in sample_indices(len(tiles))]


def tiles_predict_well(tiles: list[Tile], height: int, width: int) -> bool:
    """Whether restoration tiles are large enough to predict the QF from (see QF_MIN_TILE)."""
    return all(t.bottom - t.top >= min(QF_MIN_TILE, height) and t.right - t.left >= min(QF_MIN_TILE, width)
               for t in tiles)


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """``auto``: OpenVINO for fp32/bf16 on x86 CPUs where the extra is installed (faster there), else PyTorch.

    The environment variable FBCNN_BACKEND, when set, replaces ``auto`` for every front end at
    once (a GIMP or VapourSynth user who wants PyTorch everywhere, or a test run).
    """
    from .openvino_backend import openvino_suits_this_machine, openvino_unavailable

    name = backend.strip().lower()
    if name == "auto":
        name = os.environ.get("FBCNN_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise DeviceError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    usable = device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
    if name == "auto":
        return "openvino" if usable and openvino_suits_this_machine() else "pytorch"
    if name == "openvino":
        if device.type != "cpu":
            raise DeviceError(f"the OpenVINO backend runs on the CPU; device {device} needs backend 'pytorch'")
        problem = openvino_unavailable()
        if problem:
            raise DeviceError(f"backend 'openvino': {problem}")
    return name


def dominant_estimate(color: np.ndarray) -> QFEstimate:
    """FBCNN-D on float [0, 1] channels (as split from any input dtype), rounded to 8 bits like a JPEG decoder."""
    eight_bit = np.clip(np.rint(color * 255.0), 0, 255).astype(np.uint8)
    found = dominant_quality(eight_bit)
    if found.quality is None:
        raise ValueError("no JPEG compression signature found in the pixels; use qf='auto' or a number")
    return QFEstimate(found.quality, "dominant", shift=found.shift, double_compressed=found.double_compressed)
