"""The one entry point every front end uses to restore pixels.

``Restorer.restore(image, qf)`` takes a numpy image in the caller's layout and
sample format and returns the same layout and format, plus the QF it used.
It picks the bundled colour or gray model by image type unless told
otherwise, estimates the QF once per image (tile by tile on large images),
and runs the network tile by tile so memory stays bounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .catalog import load_model
from .device import Device, DeviceError, resolve_device, resolve_precision
from .encoded import EncodedTile
from .ensemble import self_ensemble
from .pixels import merge_image, split_image
from .qf_estimation import dominant_quality
from .quality import QFEstimate, clamp_qf, parse_qf, qf_to_scalar, scalar_to_qf
from .tiling import Tile, check_tiling, default_overlap, default_tile, iter_tiles, quality_tiles, run_tiled
from .weights import LoadedModel, WeightsError

#: An engine: the OpenVINO or the PyTorch network behind the same methods, on numpy arrays.
Engine = Any

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
#: Engines that run the network: OpenVINO on the CPU (the base install), PyTorch (the torch extra) everywhere.
BACKENDS = ("auto", "pytorch", "openvino")


@dataclass
class RestoreResult:
    image: np.ndarray
    qf: QFEstimate


class Restorer:
    """Runs FBCNN on images of any size on the CPU (OpenVINO) or a GPU (PyTorch, the torch extra).

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
        device: str | Device = "auto",
        precision: str | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        self_ensemble: bool = False,
        backend: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        tile = default_tile(self.device.type) if tile is None else tile
        overlap = default_overlap(tile) if overlap is None else overlap
        check_tiling(tile, overlap)
        #: Average the 8 flips/rotations of every tile: a little more quality for 8x the time.
        self.self_ensemble = self_ensemble
        #: The compute precision (fp32, bf16, fp16): by default the fastest one the hardware computes natively.
        self.precision = resolve_precision(precision, self.device)
        self.backend = resolve_backend(backend, self.device, self.precision)
        self.tile = tile
        self.overlap = overlap
        # A named model is loaded now, so a wrong name or file fails before any image is read.
        self._model_choice = model if model is None or isinstance(model, LoadedModel) else load_model(model)
        self._ready: dict[bool, tuple[LoadedModel, Engine]] = {}

    # -- models --------------------------------------------------------------
    def model_for(self, gray: bool) -> LoadedModel:
        return self.prepared_network(gray)[0]

    def prepared_network(self, gray: bool) -> tuple[LoadedModel, Engine]:
        """The model for gray or colour images and its engine on this restorer's device and precision."""
        if gray not in self._ready:
            choice = self._model_choice
            loaded = choice if isinstance(choice, LoadedModel) else load_model(choice, gray=gray)
            if not gray and loaded.is_gray:
                raise ValueError(f"model {loaded.name!r} is a gray model and cannot restore a color image")
            if self.backend == "openvino":
                from .openvino_backend import OpenVINONetwork

                try:
                    network = OpenVINONetwork.from_model(loaded, self.precision)
                except ValueError as error:
                    raise WeightsError(f"{loaded.source or loaded.name}: {error}") from None
            else:
                from .torch_engine import TorchNetwork

                network = TorchNetwork(loaded, self.device, self.precision)
            self._ready[gray] = (loaded, network)
        return self._ready[gray]

    # -- QF ------------------------------------------------------------------
    def pooled_quality_features(self, image: np.ndarray, network: Engine) -> np.ndarray:
        """The QF branch's features of a whole image (1,C,H,W), pooled over up to MAX_QF_TILES tiles."""
        _, _, height, width = image.shape
        feature_sum, count = None, 0
        for t in quality_tiles(height, width, max(self.tile, QF_MIN_TILE), MAX_QF_TILES):
            tile_sum, tile_count = network.quality_feature_sum(image[:, :, t.top : t.bottom, t.left : t.right])
            tile_sum = np.asarray(tile_sum, dtype=np.float32)
            feature_sum = tile_sum if feature_sum is None else feature_sum + tile_sum
            count += tile_count
        assert feature_sum is not None
        return feature_sum / count

    def predict_quality(self, image: np.ndarray, network: Engine) -> float:
        """The network's QF for a whole image (1,C,H,W), pooled over up to MAX_QF_TILES tiles."""
        return head_estimates(self.pooled_quality_features(np.asarray(image, dtype=np.float32), network), network)[0]

    def predict_strength(self, image: np.ndarray, network: Engine) -> float:
        """The control that should restore a whole image (1,C,H,W) best, as a QF.

        The strength head's estimate where the model has one (it was fitted to the strengths that
        measured best on the damage the model is for: JPEG chains for the photo model, codec
        frames for the video model); the QF head's for models without one.
        """
        quality, strength = head_estimates(self.pooled_quality_features(np.asarray(image, dtype=np.float32), network), network)
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
        return head_estimates(self.pooled_quality_features(color.transpose(2, 0, 1)[None], network), network)

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
        # A channels-first view, not a copy: tiles are copied one at a time on their way to the engine.
        restored, used = self.restore_tensor(color.transpose(2, 0, 1)[None], wanted, gray=split.is_gray, progress=progress)
        estimate = estimate or used
        out = restored[0].transpose(1, 2, 0)
        if replicate:
            out = out.mean(axis=2, keepdims=True)
        return RestoreResult(merge_image(out, split), estimate)

    def restore_tensor(
        self,
        image: np.ndarray,
        qf: int | str | None = None,
        *,
        gray: bool | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, QFEstimate]:
        """Restore a float array (1,C,H,W) in [0, 1] whose C matches the model; returns a float32 array."""
        image = np.asarray(image, dtype=np.float32)
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
            restored, predicted, used = network.restore_predicted(image)
            if progress:
                progress(1, 1)
            return np.asarray(restored, dtype=np.float32), QFEstimate(used, "predicted", predicted)
        if isinstance(wanted, int):
            estimate = QFEstimate(wanted, "given")
        elif self.self_ensemble or not tiles_predict_well(tiles, image.shape[2], image.shape[3]):
            predicted = self.predict_quality(image, network)
            estimate = QFEstimate(clamp_qf(predicted), "predicted", predicted)
        else:
            # The QF from a few restoration tiles.  PyTorch keeps their encoder features and decodes
            # them once the QF is known: predicting costs the QF branch alone, no second encoder pass.
            if network.separate_quality_pass:
                # OpenVINO, where splitting a tile's pass costs more than a QF-only pass over it.
                predicted = self.quality_of([self.quality_sum(image, network, t) for t in sample_tiles(tiles)], network)
            else:
                encoded = self.encode_sample(image, network, tiles)
                predicted = self.quality_of(list(encoded.values()), network)
            estimate = QFEstimate(clamp_qf(predicted), "predicted", predicted)
        order = iter(enumerate(tiles))

        def process(tile: np.ndarray) -> np.ndarray:
            index, where = next(order)  # run_tiled visits iter_tiles' tiles in order
            assert tile.shape[-2:] == (where.bottom - where.top, where.right - where.left)
            if index in encoded:
                return self.decode(network, encoded.pop(index), estimate.value)
            return self.forward(network, tile, estimate.value)

        restored = run_tiled(process, image, tile=self.tile, overlap=self.overlap, progress=progress)
        return restored, estimate

    def encode_sample(self, image: np.ndarray, network: Engine, tiles: list[Tile]) -> dict[int, EncodedTile]:
        """Encoder features of a few of ``tiles`` (at most QF_SAMPLE_TILES, each in the middle of an
        equal share of the tiles, so they spread over the image), by tile index."""
        return {i: network.encode_tile(image[:, :, t.top : t.bottom, t.left : t.right])
                for i, t in ((i, tiles[i]) for i in sample_indices(len(tiles)))}

    def quality_sum(self, image: np.ndarray, network: Engine, tile: Tile) -> EncodedTile:
        """A tile's pooled QF features alone, shaped like an encoded tile's (no features kept)."""
        feature_sum, count = network.quality_feature_sum(image[:, :, tile.top : tile.bottom, tile.left : tile.right])
        return EncodedTile((), np.asarray(feature_sum, np.float32), count, tile.bottom - tile.top, tile.right - tile.left)

    def quality_of(self, encoded: list[EncodedTile], network: Engine) -> float:
        """The QF predicted from the pooled QF features of encoded tiles (the image's first entry)."""
        feature_sum = sum(np.asarray(e.quality_sum[:1], np.float32) for e in encoded)
        count = sum(e.quality_count for e in encoded)
        return scalar_to_qf(float(network.quality_from_features(feature_sum / count).reshape(-1)[0]))

    def decode(self, network: Engine, encoded: EncodedTile, qf: int) -> np.ndarray:
        """The restoration of an encoded tile at ``qf``: equal to :meth:`forward` on the same tile."""
        return network.decode_tile(encoded, self.control(1, qf))

    @staticmethod
    def control(count: int, qf: int) -> np.ndarray:
        """The decoder's quality input for ``count`` images at ``qf``."""
        return np.full((count, 1), qf_to_scalar(qf), dtype=np.float32)

    def forward(self, network: Engine, batch: np.ndarray, qf: int) -> np.ndarray:
        """One batch (N,C,H,W) through the network at ``qf``, with the self-ensemble when set.

        The one place a restoration pass is defined, so that callers that batch on their own
        (the VapourSynth filter batches whole frames) restore exactly as the tiled path does.
        """
        control = self.control(batch.shape[0], qf)

        def run(x: np.ndarray) -> np.ndarray:
            return network.restore(x, control)

        return self_ensemble(run, batch) if self.self_ensemble else run(batch)


def head_estimates(mean: np.ndarray, network: Engine) -> tuple[float, float | None]:
    """The QF head's estimate and the strength head's (None without one) from pooled encoder features."""
    quality = scalar_to_qf(float(np.asarray(network.quality_from_features(mean)).reshape(-1)[0]))
    if not getattr(network, "has_strength_head", False):
        return quality, None
    return quality, scalar_to_qf(float(np.asarray(network.strength_from_features(mean)).reshape(-1)[0]))


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


def resolve_backend(backend: str, device: Device | str, precision: Any) -> str:
    """``auto``: OpenVINO for fp32/bf16 on the CPU, else PyTorch (GPUs and fp16; the torch extra).

    OpenVINO is the CPU engine of the base install; on x86 it is also the faster one.  Where it
    cannot load (a process holding another OpenVINO runtime) PyTorch takes over if installed.

    The environment variable FBCNN_BACKEND, when set, replaces ``auto`` for every front end at
    once (a GIMP or VapourSynth user who wants PyTorch everywhere, or a test run).
    """
    from .device import precision_name
    from .openvino_backend import openvino_installed, openvino_suits_this_machine, openvino_unavailable
    from .torch_extra import TORCH_EXTRA, torch_installed

    name = backend.strip().lower()
    if name == "auto":
        name = os.environ.get("FBCNN_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise DeviceError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")
    device = resolve_device(device)
    usable = device.type == "cpu" and precision_name(precision) in ("fp32", "bf16")
    if name == "auto":
        # On Arm CPUs PyTorch is the engine measured, where installed; the base install has only OpenVINO.
        openvino_fits = openvino_suits_this_machine() or (openvino_installed() and not torch_installed())
        name = "openvino" if usable and openvino_fits else "pytorch"
    if name == "pytorch" and not torch_installed():
        raise DeviceError(f"the PyTorch engine (device {device}, {precision_name(precision)}) needs PyTorch: {TORCH_EXTRA}")
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
