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
from .device import resolve_device, resolve_precision
from .ensemble import self_ensemble
from .pixels import merge_image, split_image
from .qf_estimation import dominant_quality
from .quality import QFEstimate, clamp_qf, parse_qf, qf_to_scalar, scalar_to_qf
from .tiling import DEFAULT_TILE, check_tiling, default_overlap, quality_tiles, run_tiled
from .weights import LoadedModel

ProgressCallback = Callable[[int, int], None]

#: At most this many tiles are read to predict the QF of a large image.
MAX_QF_TILES = 16
#: QF tiles are never smaller than this, whatever tile the restoration uses: on small tiles the
#: zero-padded borders weigh enough in the pooled features to raise the estimate (about +2 QF
#: at 64 px), and a user who lowers the tile to save memory should get the same QF.  The QF
#: branch runs only the encoder, so a 256-px tile costs little memory even for large configs.
QF_MIN_TILE = 256


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
    ) -> None:
        overlap = default_overlap(tile) if overlap is None else overlap
        check_tiling(tile, overlap)
        #: Average the 8 flips/rotations of every tile: a little more quality for 8x the time.
        self.self_ensemble = self_ensemble
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
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
            # Channels-last is faster on every backend we measured: on this 2-core AVX2 CPU 1.4x for
            # fp32 and 3x for bf16 (whose default layout falls back to a slow path).
            network = copy.deepcopy(loaded.network).to(self.device, self.dtype).eval()
            network = network.to(memory_format=torch.channels_last)
            self._ready[gray] = (loaded, network)
        return self._ready[gray]

    # -- QF ------------------------------------------------------------------
    @torch.inference_mode()
    def predict_quality(self, image: torch.Tensor, network: torch.nn.Module) -> float:
        """The network's QF for a whole CPU image (1,C,H,W), pooled over up to MAX_QF_TILES tiles."""
        _, _, height, width = image.shape
        feature_sum, count = None, 0
        for t in quality_tiles(height, width, max(self.tile, QF_MIN_TILE), MAX_QF_TILES):
            part = self.to_device(image[:, :, t.top : t.bottom, t.left : t.right])
            tile_sum, tile_count = network.quality_feature_sum(part)
            feature_sum = tile_sum.float() if feature_sum is None else feature_sum + tile_sum.float()
            count += tile_count
        assert feature_sum is not None
        mean = (feature_sum / count).to(self.dtype)
        return scalar_to_qf(float(network.quality_from_features(mean).float().cpu()))

    def predict_qf(self, image: np.ndarray) -> float:
        """The network's QF estimate for a numpy image in any supported layout and dtype."""
        split = split_image(image)
        loaded, network = self.prepared_network(split.is_gray)
        color = split.color
        if split.is_gray and not loaded.is_gray:
            color = np.repeat(color, 3, axis=2)
        return self.predict_quality(torch.from_numpy(color).permute(2, 0, 1)[None], network)

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
        if isinstance(wanted, int):
            estimate = QFEstimate(wanted, "given")
        else:
            predicted = self.predict_quality(image, network)
            estimate = QFEstimate(clamp_qf(predicted), "predicted", predicted)

        def process(tile: torch.Tensor) -> torch.Tensor:
            return self.forward(network, self.to_device(tile), estimate.value)

        restored = run_tiled(process, image, tile=self.tile, overlap=self.overlap, progress=progress)
        return restored, estimate

    @torch.inference_mode()
    def forward(self, network: torch.nn.Module, batch: torch.Tensor, qf: int) -> torch.Tensor:
        """One device batch (N,C,H,W) through the network at ``qf``, with the self-ensemble when set.

        The one place a restoration pass is defined, so that callers that batch on their own
        (the VapourSynth filter batches whole frames) restore exactly as the tiled path does.
        """
        control = torch.full((batch.shape[0], 1), qf_to_scalar(qf), device=self.device, dtype=self.dtype)

        def run(x: torch.Tensor) -> torch.Tensor:
            return network(x.contiguous(memory_format=torch.channels_last), control)[0]

        return self_ensemble(run, batch) if self.self_ensemble else run(batch)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A CPU tensor on the device, in the compute precision and channels-last layout."""
        tensor = tensor.to(self.device, self.dtype, non_blocking=True)
        return tensor.contiguous(memory_format=torch.channels_last)


def dominant_estimate(color: np.ndarray) -> QFEstimate:
    """FBCNN-D on float [0, 1] channels (as split from any input dtype), rounded to 8 bits like a JPEG decoder."""
    eight_bit = np.clip(np.rint(color * 255.0), 0, 255).astype(np.uint8)
    found = dominant_quality(eight_bit)
    if found.quality is None:
        raise ValueError("no JPEG compression signature found in the pixels; use qf='auto' or a number")
    return QFEstimate(found.quality, "dominant", shift=found.shift, double_compressed=found.double_compressed)
