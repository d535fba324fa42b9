"""A GPU window's weights kept in 8 bits, as the next window's starting point.

The weights that continue a run travel with the tracked tree to the next GPU window, and every
byte they take is a byte of training data that stays behind (docs/training.md, "The byte
budget").  A starting point needs less precision than a shipped model: the next window starts
with fresh Adam moments and re-warms its learning rate anyway, so rounding each weight to one of
255 steps of its output channel's range costs it nothing it cannot make up in its first steps,
and halves the file (the `base` network: 18.7 MB in fp16, 9.4 MB here).

The file is a safetensors file: each weight of two or more dimensions as int8 (``NAME``) with
one fp32 scale per output channel (``NAME.scale``); the rest (biases, the small heads) in fp16.
Its metadata holds the full card of the fp16 weights it was made from (``card``), so the chain of
windows (``training.previous_stage``) keeps the sha256 of the weights each window returned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.core.model_card import WeightsError, read_card

#: What the ``format`` metadata says, so a shipped-weights loader never mistakes this file for one.
FORMAT = "fbcnn-plugins-start-int8/1"
SUFFIX = ".start.safetensors"
SCALE = ".scale"


def start_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{SUFFIX}"


def quantize(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (the first axis): the int8 values and each channel's scale."""
    values = weight.astype(np.float32)
    peak = np.abs(values.reshape(values.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shaped = scale.reshape((-1,) + (1,) * (values.ndim - 1))
    return np.clip(np.rint(values / shaped), -127, 127).astype(np.int8), scale


def write_start_weights(weights: Path, out: Path) -> Path:
    """Write the 8-bit starting point of the checked fp16/bf16 weights file ``weights`` (its card beside it)."""
    from safetensors.numpy import save_file
    from safetensors.torch import load_file

    card = read_card(weights.with_suffix(".json"))
    tensors: dict[str, np.ndarray] = {}
    for name, tensor in load_file(str(weights)).items():
        values = tensor.float().numpy()
        if values.ndim >= 2:
            tensors[name], tensors[name + SCALE] = quantize(values)
        else:
            tensors[name] = values.astype(np.float16)
    with atomic_target(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "card": json.dumps(card)})
    return out


def read_start_weights(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fp32 state dict (torch tensors) of an 8-bit starting point, and the card it was made from."""
    import torch
    from safetensors import safe_open

    card = start_card(path)
    with safe_open(str(path), "np") as handle:
        stored = {name: handle.get_tensor(name) for name in handle.keys()}
    state = {}
    for name, values in stored.items():
        if name.endswith(SCALE):
            continue
        if values.dtype == np.int8:
            scale = stored[name + SCALE].reshape((-1,) + (1,) * (values.ndim - 1))
            values = values.astype(np.float32) * scale
        state[name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return state, card


def start_card(path: Path) -> dict[str, Any]:
    """The card an 8-bit starting point was made from, read from its metadata alone."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path}: not an 8-bit starting point (format {metadata.get('format')!r})")
    return json.loads(metadata["card"])


def is_start_weights(path: Path) -> bool:
    return path.name.endswith(SUFFIX)
