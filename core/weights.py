"""Reading and writing network weights, safely.

Our format is a ``.safetensors`` file plus a ``.json`` card beside it with the
config, colour mode, QF convention, training facts and the sha256 of the
tensors file; the card is what makes a file self-describing and lets us refuse
a corrupted or swapped file.  The authors' ``.pth`` model-zoo state dicts load
too, through ``torch.load(weights_only=True)`` so that no pickle code runs (the ``torch`` extra).

Loading keeps the tensors as float32 numpy arrays and needs no PyTorch: the OpenVINO engine
builds its graphs from them.  The PyTorch module is built from them on first use of
:attr:`LoadedModel.network` (training, export, the PyTorch engine).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from safetensors.numpy import load_file

from .atomic import atomic_target
from .configs import NetworkConfig, config_from_state_dict, get_config, state_dict_mismatch
from .model_card import CARD_FORMAT, WeightsError, card_path_for, read_card, sha256_of
from .torch_extra import require_torch

if TYPE_CHECKING:
    import torch

    from .network import FBCNN

__all__ = [
    "CARD_FORMAT", "QF_CONVENTION", "LoadedModel", "UnverifiedWeightsWarning", "WeightsError", "build_from_state_dict",
    "card_path_for", "load_weights", "read_card", "save_weights", "sha256_of", "unwrap_state_dict",
]

QF_CONVENTION = "q = 1 - QF/100"


class UnverifiedWeightsWarning(UserWarning):
    """A weights file was loaded without a card, so nothing checked that it is the file it claims to be."""


@dataclass
class LoadedModel:
    """A network's weights, its architecture and what is known about where they came from.

    ``tensors`` are the state dict as float32 numpy arrays (what the OpenVINO engine builds
    its graphs from); :attr:`network` is the PyTorch module, built from them when first asked for.
    """

    tensors: dict[str, np.ndarray]
    name: str
    config: NetworkConfig
    in_channels: int
    source: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)
    #: True when a card's sha256 matched the file; False for files without a card (nothing was checked).
    verified: bool = False
    _network: FBCNN | None = field(default=None, repr=False, compare=False)

    @property
    def is_gray(self) -> bool:
        return self.in_channels == 1

    @property
    def network(self) -> FBCNN:
        """The PyTorch module with these weights (needs the ``torch`` extra), in eval mode."""
        if self._network is None:
            self._network = _build_network(self.tensors, self.config, self.in_channels, self.source or self.name)
        return self._network

    @classmethod
    def from_network(cls, network: FBCNN, name: str, config: NetworkConfig, **facts: Any) -> LoadedModel:
        """Wrap a PyTorch module (a freshly built or trained one) as a loaded model."""
        tensors = {key: _as_numpy(value) for key, value in network.state_dict().items()}
        return cls(tensors, name, config, network.in_channels, _network=network, **facts)


def save_weights(
    network: FBCNN | Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    config: NetworkConfig,
    *,
    name: str | None = None,
    dtype: Any = "float16",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path`` (.safetensors) and its card; both atomically, card last.

    ``network`` is a PyTorch module or its state dict as numpy arrays (no PyTorch needed then);
    ``dtype`` (float16 or float32, a name or a torch dtype) is what the file stores.
    """
    from safetensors.numpy import save_file

    stored = np.dtype(str(dtype).removeprefix("torch."))
    if stored not in (np.float16, np.float32):
        raise ValueError(f"weights are stored as float16 or float32, not {dtype}")
    state = network.state_dict() if hasattr(network, "state_dict") else network
    tensors = {key: np.ascontiguousarray(_as_numpy(value).astype(stored)) for key, value in state.items()}
    in_channels = int(tensors["m_head.weight"].shape[1])
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        # One metadata entry only: safetensors writes a map, and several entries come out in varying order.
        save_file(tensors, str(tmp), metadata={"format": CARD_FORMAT})
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "name": name or path.stem,
        "config": config.to_dict(),
        "in_channels": in_channels,
        "color": "gray" if in_channels == 1 else "rgb",
        "qf_convention": QF_CONVENTION,
        "dtype": stored.name,
        "sha256": sha256_of(path),
    }
    card.update(dict(extra or {}))
    write_text_atomic(card_path_for(path), json.dumps(card, indent=2) + "\n")
    return path


def _as_numpy(value: Any) -> np.ndarray:
    """A float32 copy of a torch tensor (any device, any precision) or a numpy array."""
    if hasattr(value, "detach"):
        return value.detach().to("cpu").float().numpy()
    return np.asarray(value, dtype=np.float32)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text)


def load_weights(path: str | os.PathLike[str], *, verify: bool = True) -> LoadedModel:
    """Load any supported weights file: our .safetensors (+card), or an official .pth."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    _require_regular_file(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, verify=verify)
    if path.suffix in {".pth", ".pt", ".ckpt"}:
        return _load_torch_state_dict(path)
    raise WeightsError(f"{path}: unsupported weights format (expected .safetensors or .pth)")


def _require_regular_file(path: Path) -> None:
    """A FIFO or a device behind a weights name would block the reader or never end."""
    if path.exists() and not path.is_file():
        raise WeightsError(f"{path}: not a regular file (a folder, FIFO or device); give a weights file")


def _load_safetensors(path: Path, *, verify: bool) -> LoadedModel:
    card_file = card_path_for(path)
    if card_file.exists():
        _require_regular_file(card_file)
    card = read_card(card_file) if card_file.exists() else {}
    verified = False
    if verify and card:
        actual = sha256_of(path)
        if actual != card.get("sha256"):
            raise WeightsError(f"{path}: sha256 {actual} does not match the card's {card.get('sha256')}; file corrupt or replaced")
        verified = True
    elif not card:
        warn_unverified(path, f"no model card {card_file.name} beside it")
    try:
        state_dict = load_file(str(path))
    except Exception as error:  # safetensors raises several types for a damaged header
        raise WeightsError(f"{path}: cannot read safetensors file ({error})") from None
    name = card.get("name", path.stem)
    loaded = build_from_state_dict(state_dict, name=name, source=path, card=card)
    loaded.verified = verified
    return loaded


def _load_torch_state_dict(path: Path) -> LoadedModel:
    torch = require_torch(f"loading {path.name} (a PyTorch file; safetensors files load without it)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"{path}: cannot be loaded safely as a state dict ({error})") from None
    warn_unverified(path, "a .pth file has no model card")
    return build_from_state_dict(unwrap_state_dict(loaded, path), name=path.stem, source=path)


def warn_unverified(path: Path, why: str) -> None:
    """Say that nothing vouches for these weights: a swapped or damaged file would load all the same."""
    warnings.warn(
        f"{path}: unverified weights ({why}); its sha256 was not checked against anything",
        UnverifiedWeightsWarning, stacklevel=3,
    )


def unwrap_state_dict(loaded: Any, path: Path | str = "<state dict>") -> dict[str, np.ndarray]:
    """Accept a bare state dict or the common {'params'|'state_dict'|'model': ...} wrappers."""
    if isinstance(loaded, Mapping):
        for key in ("params_ema", "params", "state_dict", "model"):
            if key in loaded and isinstance(loaded[key], Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(hasattr(v, "detach") for v in loaded.values()):
        raise WeightsError(f"{path}: does not contain a state dict of tensors")
    return {key.removeprefix("module."): _as_numpy(value) for key, value in loaded.items()}


def build_from_state_dict(
    state_dict: Mapping[str, Any],
    *,
    name: str,
    source: Path | None = None,
    card: dict[str, Any] | None = None,
) -> LoadedModel:
    """Check a state dict (numpy arrays, or tensors) and describe its architecture; no PyTorch needed."""
    card = card or {}
    tensors = {key: _as_numpy(value) if hasattr(value, "detach") else np.asarray(value) for key, value in state_dict.items()}
    damaged = [key for key, value in tensors.items()
               if np.issubdtype(value.dtype, np.floating) and not bool(np.isfinite(value).all())]
    if damaged:
        # Such a network answers every image with NaN, which becomes a black picture without a word.
        shown = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        raise WeightsError(f"{source or name}: weights contain NaN or infinite values ({shown}); the file is damaged")
    tensors = {key: value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
               for key, value in tensors.items()}
    try:
        config, in_channels = config_from_state_dict(tensors)
    except ValueError as error:
        raise WeightsError(f"{source or name}: {error}") from None
    if "config" in card and isinstance(card["config"], dict):
        # Shapes cannot tell whether the network adds its input to its output; the card can.
        described = card["config"]
        try:
            named = get_config(described.get("name", ""))
            if named.channels == config.channels and named.blocks == config.blocks:
                config = named
        except KeyError:
            pass
        if "global_residual" in described:
            config = replace(config, global_residual=bool(described["global_residual"]))
    problem = state_dict_mismatch(tensors, config, in_channels)
    if problem:
        raise WeightsError(f"{source or name}: state dict does not fit the FBCNN network: {problem}")
    return LoadedModel(tensors, name=name, config=config, in_channels=in_channels, source=source, card=card)


def _build_network(tensors: Mapping[str, np.ndarray], config: NetworkConfig, in_channels: int, where: Any) -> FBCNN:
    torch = require_torch("the PyTorch network (training, export, the pytorch backend)")
    network = config.build(in_channels)
    if any(key.startswith("strength_pred.") for key in tensors):
        network.add_strength_head()
    try:
        network.load_state_dict({key: torch.from_numpy(np.array(value)) for key, value in tensors.items()}, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"{where}: state dict does not fit the FBCNN network: {error}") from None
    return network.eval()
