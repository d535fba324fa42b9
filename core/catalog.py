"""The catalogue of installed models, gathered from the ``fbcnn_plugins.models`` entry points.

Any installed package can add weights by declaring an entry point in that
group whose target is a function returning the path of a weights file (ours
return ``.safetensors`` files with a ``.json`` card beside them).  Front ends
ask the catalogue for a model by name, by path, or for the default model of
an image type.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from importlib_metadata import entry_points

# Cards only at import time: listing the models must not pay for importing PyTorch.
from .model_card import WeightsError, read_card

if TYPE_CHECKING:
    from .weights import LoadedModel

ENTRY_POINT_GROUP = "fbcnn_plugins.models"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model, known before its weights are read."""

    name: str
    path: Path
    provider: str
    card: dict[str, Any]

    @property
    def in_channels(self) -> int | None:
        value = self.card.get("in_channels")
        return int(value) if value is not None else None

    @property
    def available(self) -> bool:
        return self.path.is_file()

    @property
    def footage(self) -> str:
        """What the model was trained for: ``"photo"`` (JPEG damage; cards without the key) or ``"video"``."""
        return str(self.card.get("footage", "photo"))


def registered_models() -> list[ModelEntry]:
    """Every model the installed packages declare, in entry-point order."""
    entries = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            path = Path(point.load()())
        except Exception as error:  # a broken third-party plug-in must not break the others
            entries.append(ModelEntry(point.name, Path(f"<error: {error}>"), _provider(point), {}))
            continue
        try:
            card = read_card(path) if path.with_suffix(".json").is_file() else {}
        except WeightsError:
            card = {}
        entries.append(ModelEntry(point.name, path, _provider(point), card))
    return entries


def _provider(point: Any) -> str:
    dist = getattr(point, "dist", None)
    return dist.name if dist is not None else point.value.split(":")[0]


def find_model(name: str) -> ModelEntry:
    for entry in registered_models():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in registered_models()) or "none"
    raise WeightsError(f"no model named {name!r} is registered (registered: {known})")


FOOTAGE = ("photo", "video")


def default_model_entry(gray: bool, *, footage: str = "photo") -> ModelEntry:
    """The default registered model for gray or colour images of ``footage`` (see ``choose_default``)."""
    return choose_default(registered_models(), gray, footage=footage)


def choose_default(entries: list[ModelEntry], gray: bool, *, footage: str = "photo") -> ModelEntry:
    """The first available model in ``entries`` for gray (1 channel) or colour (3 channel) images.

    ``footage="video"`` prefers the models trained on codec damage (MPEG-2, H.264, HEVC) as well
    as JPEG, which the VapourSynth filter restores with by default; without one installed, the
    photo models serve video too.  Photos never get a video model by default: it gives up a
    little of the photo model's JPEG strength for what codecs do.  Gray images fall back to a
    colour model when no gray model is installed; the restorer then replicates the gray
    channel into RGB.
    """
    if footage not in FOOTAGE:
        raise ValueError(f"footage must be one of {', '.join(FOOTAGE)}, got {footage!r}")
    available = [entry for entry in entries if entry.available]
    preferred = [entry for entry in available if entry.footage == footage]
    fallback = [entry for entry in available if entry.footage == "photo"]
    for wanted in (1, 3) if gray else (3,):
        for entry in (*preferred, *fallback):
            if entry.in_channels == wanted:
                return entry
    kind = "gray" if gray else "color"
    raise WeightsError(f"no {kind} model is installed; pass a weights file with --model")


def resolve_model_path(model: str | os.PathLike[str]) -> Path:
    """A registered name, or a path to a weights file, to the file to load."""
    candidate = Path(model)
    if candidate.suffix in {".safetensors", ".pth", ".pt", ".ckpt", ".json"} or candidate.exists():
        if not candidate.exists():
            raise WeightsError(f"{candidate}: weights file not found")
        return candidate
    entry = find_model(str(model))
    if not entry.available:
        raise WeightsError(f"model {entry.name!r} is registered but its weights are missing at {entry.path}")
    return entry.path


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> LoadedModel:
    from .weights import load_weights

    return load_weights(path)


def load_model(model: str | os.PathLike[str] | None = None, *, gray: bool = False) -> LoadedModel:
    """Load a model by name or path (cached per file version), or the default for the image type."""
    path = default_model_entry(gray).path if model is None else resolve_model_path(model)
    loaded = _load_cached(str(path.resolve()), path.stat().st_mtime_ns)
    if model is None or not Path(model).exists():
        name = default_model_entry(gray).name if model is None else str(model)
        loaded = dataclasses.replace(loaded, name=name)
    return loaded
