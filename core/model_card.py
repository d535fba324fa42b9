"""Model cards: the ``.json`` beside a weights file that says what the file is and how to check it.

Kept apart from :mod:`.weights` (and free of PyTorch) so that listing the
installed models reads only cards and stays instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CARD_FORMAT = "fbcnn-plugins-weights/1"


class WeightsError(ValueError):
    """A weights file is missing, corrupt, or not an FBCNN network."""


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path_for(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The card of a weights file (or the card file itself), checked to be one of ours."""
    path = Path(path)
    card_file = path if path.suffix == ".json" else card_path_for(path)
    try:
        card = json.loads(card_file.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{card_file}: model card not found") from None
    except json.JSONDecodeError as error:
        raise WeightsError(f"{card_file}: model card is not valid JSON ({error})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise WeightsError(f"{card_file}: unknown model card format {found!r}")
    return card
