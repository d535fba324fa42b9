"""FBCNN on PyTorch (the ``torch`` extra): CUDA and Apple GPUs, and the CPU where asked for.

:class:`TorchNetwork` offers the same engine methods as the OpenVINO engine, on numpy arrays;
each call moves its input to the device in the compute precision and channels-last layout
(faster on every backend measured: on a 2-core AVX2 CPU 1.4x for fp32 and 3x for bf16) and its
output back as float32.  Unlike OpenVINO it can keep a tile's encoder features on the device
(:meth:`encode_tile`), so predicting a QF from restoration tiles costs no second encoder pass.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .device import Device, torch_dtype
from .torch_extra import require_torch


class TorchNetwork:
    """A loaded model's PyTorch module on a device, in a precision, behind the engine methods."""

    separate_quality_pass = False

    def __init__(self, loaded: Any, device: Device, precision: str) -> None:
        self.torch = require_torch(f"the PyTorch engine (device {device}, precision {precision})")
        self.device = device.torch()
        self.dtype = torch_dtype(precision)
        network = copy.deepcopy(loaded.network).to(self.device, self.dtype).eval()
        #: The PyTorch module itself (tests hook its layers; the VapourSynth filter reads its device).
        self.network = network.to(memory_format=self.torch.channels_last)
        self.in_channels = loaded.in_channels

    def to_device(self, array: Any) -> Any:
        """A numpy array (or CPU tensor) on the device, in the compute precision and channels-last."""
        tensor = array if isinstance(array, self.torch.Tensor) else self.torch.from_numpy(np.ascontiguousarray(array))
        tensor = tensor.to(self.device, self.dtype, non_blocking=True)
        return tensor.contiguous(memory_format=self.torch.channels_last) if tensor.ndim == 4 else tensor

    @staticmethod
    def to_numpy(tensor: Any) -> np.ndarray:
        return tensor.float().cpu().numpy()

    def restore(self, x: np.ndarray, control: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.to_numpy(self.network.restore(self.to_device(x), self.to_device(control)))

    def quality_feature_sum(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        with self.torch.inference_mode():
            feature_sum, count = self.network.quality_feature_sum(self.to_device(x))
            return self.to_numpy(feature_sum), count

    def quality_from_features(self, mean_features: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.to_numpy(self.network.quality_from_features(self.to_device(mean_features)))

    @property
    def has_strength_head(self) -> bool:
        return self.network.has_strength_head

    def strength_from_features(self, mean_features: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.to_numpy(self.network.strength_from_features(self.to_device(mean_features)))

    def encode_tile(self, x: np.ndarray) -> Any:
        """Encoder features kept on the device (an EncodedTile) with the tile's pooled QF features."""
        with self.torch.inference_mode():
            encoded = self.network.encode_tile(self.to_device(x))
        encoded.quality_sum = self.to_numpy(encoded.quality_sum)
        return encoded

    def decode_tile(self, encoded: Any, control: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.to_numpy(self.network.decode_tile(encoded, self.to_device(control)))
