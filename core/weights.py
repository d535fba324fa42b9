"""Reading and writing network weights, safely.

Our format is a ``.safetensors`` file plus a ``.json`` card beside it with the
config, colour mode, QF convention, training facts and the sha256 of the
tensors file; the card is what makes a file self-describing and lets us refuse
a corrupted or swapped file.  The authors' ``.pth`` model-zoo state dicts load
too, through ``torch.load(weights_only=True)`` so that no pickle code runs.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_target
from .configs import NetworkConfig, config_from_state_dict, get_config
from .model_card import CARD_FORMAT, WeightsError, card_path_for, read_card, sha256_of
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
    """A ready network and what is known about where it came from."""

    network: FBCNN
    name: str
    config: NetworkConfig
    in_channels: int
    source: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)
    #: True when a card's sha256 matched the file; False for files without a card (nothing was checked).
    verified: bool = False

    @property
    def is_gray(self) -> bool:
        return self.in_channels == 1


def save_weights(
    network: FBCNN,
    path: str | os.PathLike[str],
    config: NetworkConfig,
    *,
    name: str | None = None,
    dtype: torch.dtype = torch.float16,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path`` (.safetensors) and its card; both atomically, card last."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().to("cpu", dtype).contiguous() for key, value in network.state_dict().items()}
    with atomic_target(path) as tmp:
        # One metadata entry only: safetensors writes a map, and several entries come out in varying order.
        save_file(tensors, str(tmp), metadata={"format": CARD_FORMAT})
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "name": name or path.stem,
        "config": config.to_dict(),
        "in_channels": network.in_channels,
        "color": "gray" if network.in_channels == 1 else "rgb",
        "qf_convention": QF_CONVENTION,
        "dtype": str(dtype).removeprefix("torch."),
        "sha256": sha256_of(path),
    }
    card.update(dict(extra or {}))
    write_text_atomic(card_path_for(path), json.dumps(card, indent=2) + "\n")
    return path


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


def unwrap_state_dict(loaded: Any, path: Path | str = "<state dict>") -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the common {'params'|'state_dict'|'model': ...} wrappers."""
    if isinstance(loaded, Mapping):
        for key in ("params_ema", "params", "state_dict", "model"):
            if key in loaded and isinstance(loaded[key], Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path}: does not contain a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def build_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    name: str,
    source: Path | None = None,
    card: dict[str, Any] | None = None,
) -> LoadedModel:
    card = card or {}
    damaged = [key for key, value in state_dict.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if damaged:
        # Such a network answers every image with NaN, which becomes a black picture without a word.
        shown = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        raise WeightsError(f"{source or name}: weights contain NaN or infinite values ({shown}); the file is damaged")
    try:
        config, in_channels = config_from_state_dict(state_dict)
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
    network = config.build(in_channels)
    if any(key.startswith("strength_pred.") for key in state_dict):
        network.add_strength_head()
    reference = network.state_dict()
    converted = {key: value.to(reference[key].dtype) if key in reference else value for key, value in state_dict.items()}
    try:
        network.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"{source or name}: state dict does not fit the FBCNN network: {error}") from None
    network.eval()
    return LoadedModel(network=network, name=name, config=config, in_channels=in_channels, source=source, card=card)
