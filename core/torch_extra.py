"""PyTorch is an optional part: what needs it asks for it here, and says which extra brings it.

The base install restores with OpenVINO.  CUDA and Apple GPUs, the authors' ``.pth`` files,
training and the export commands need PyTorch (``pip install 'fbcnn-plugins[torch]'``); code on
those paths calls :func:`require_torch`, so the message is the same everywhere and the CLI can
turn it into exit status 2.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

#: What to install for the parts that need PyTorch.
TORCH_EXTRA = "pip install 'fbcnn-plugins[torch]'"


class TorchMissing(RuntimeError):
    """A feature that needs PyTorch was asked for where it is not installed."""


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def require_torch(feature: str) -> ModuleType:
    """PyTorch, imported; or TorchMissing naming ``feature`` and the extra to install."""
    if not torch_installed():
        raise TorchMissing(f"{feature} needs PyTorch, which this install does not have: {TORCH_EXTRA}")
    import torch

    return torch
