"""The QF and strength heads after pooling, in numpy: a few small matrix products in fp32.

Both heads map the QF branch's pooled features (N, C) to q = 1 - QF/100 through
Linear-ReLU-Linear-ReLU-Linear-Sigmoid.  They run apart from the convolutional graphs because
their input is pooled over several tiles of an image first.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class DenseHead:
    """Three linear layers with ReLUs between them and a sigmoid at the end, from state-dict tensors."""

    def __init__(self, tensors: Mapping[str, np.ndarray], prefix: str, first: int) -> None:
        try:
            self.layers = [
                (np.asarray(tensors[f"{prefix}.{i}.weight"], np.float32), np.asarray(tensors[f"{prefix}.{i}.bias"], np.float32))
                for i in (first, first + 2, first + 4)
            ]
        except KeyError as missing:
            raise ValueError(f"not an FBCNN state dict: tensor {missing} is missing") from None

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        for index, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            x = np.maximum(x, 0.0) if index < 2 else 1.0 / (1.0 + np.exp(-x))
        return x.astype(np.float32)


def qf_head(tensors: Mapping[str, np.ndarray], blocks: int) -> DenseHead:
    """``qf_pred``'s layers after its residual blocks, the pooling and the flatten."""
    return DenseHead(tensors, "qf_pred", blocks + 2)


def strength_head(tensors: Mapping[str, np.ndarray]) -> DenseHead | None:
    """The strength head, where the weights have one (``strength_pred.*``).

    It began as a copy of the QF head, a slice of ``qf_pred``, and keeps that slice's layer numbers.
    """
    numbers = sorted(int(key.split(".")[1]) for key in tensors if key.startswith("strength_pred.") and key.endswith(".weight"))
    return DenseHead(tensors, "strength_pred", numbers[0]) if numbers else None
