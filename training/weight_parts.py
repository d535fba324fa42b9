"""Weights in parts small enough for a transfer that returns files of limited size.

A GPU window returns at most 8 files of 16 MiB.  The fp16 ``base`` network alone is 18.7 MB, so a
weights file leaves the machine cut into byte ranges (``NAME.sSTEP.partN``), and its card goes with
them, listing each part's size and sha256 next to the whole file's.  Joining them here gives back
the exact file the run wrote, which the card's sha256 then vouches for as for any bundled model.

Parts are named by the step they hold, and the card is written after its parts: a run killed while
it writes a newer set still leaves the previous card and the parts it names.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import safetensors.torch

from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.core.model_card import WeightsError, card_path_for, read_card, sha256_of
from fbcnn_plugins.core.weights import build_from_state_dict, load_weights, write_text_atomic

MIB = 1 << 20
#: The largest file a GPU call returns is 16 MiB; a little less leaves room for nothing to go wrong.
DEFAULT_PART_BYTES = 16 * MIB - 64 * 1024


def split_weights(weights: Path, out_dir: Path, *, tag: str, part_bytes: int = DEFAULT_PART_BYTES) -> Path:
    """Write ``weights`` (a .safetensors with its card) into ``out_dir`` as parts plus a card naming them.

    Returns the card written there; older parts of the same name that the new card does not name
    are removed once it is in place.
    """
    if part_bytes < 1:
        raise ValueError(f"part size must be positive, got {part_bytes}")
    card = read_card(weights)
    name = weights.stem
    data = weights.read_bytes()
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, start in enumerate(range(0, len(data), part_bytes)):
        chunk = data[start : start + part_bytes]
        part = out_dir / f"{name}.{tag}.part{index}"
        with atomic_target(part) as tmp:
            tmp.write_bytes(chunk)
        parts.append({"file": part.name, "bytes": len(chunk), "sha256": sha256_of(part)})
    card["parts"] = parts
    card_file = out_dir / f"{name}.json"
    write_text_atomic(card_file, json.dumps(card, indent=2) + "\n")
    named = {p["file"] for p in parts}
    for stale in out_dir.glob(f"{name}.*.part*"):
        if stale.name not in named and not stale.name.startswith("."):
            stale.unlink()
    return card_file


def verified_parts(card_file: Path) -> tuple[dict[str, Any], bytes]:
    """The card and the joined bytes of the parts it names, each part and the whole checked by sha256."""
    card = read_card(card_file)
    parts = card.get("parts")
    if not isinstance(parts, list) or not parts:
        raise WeightsError(f"{card_file}: this card names no parts")
    chunks = []
    for part in parts:
        path = card_file.parent / part["file"]
        if not path.is_file():
            raise WeightsError(f"{path}: part named by {card_file.name} is missing")
        actual = sha256_of(path)
        if actual != part["sha256"]:
            raise WeightsError(f"{path}: sha256 {actual} does not match {card_file.name}'s {part['sha256']}; part damaged or from another run")
        chunks.append(path.read_bytes())
    data = b"".join(chunks)
    whole = hashlib.sha256(data).hexdigest()
    if whole != card.get("sha256"):
        raise WeightsError(f"{card_file}: joined parts have sha256 {whole}, the card says {card.get('sha256')}")
    return card, data


def join_weights(card_file: Path, into: Path) -> Path:
    """Join the parts a card names into ``into``/NAME.safetensors with its card; nothing is written unless all checks pass.

    The joined weights are built into the network (finite values, the network's shapes) before
    anything is written, and loaded once more from where they were written (sha256 against the card).
    """
    card, data = verified_parts(card_file)
    del card["parts"]
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # safetensors raises several types for a damaged header
        raise WeightsError(f"{card_file}: joined parts are not a safetensors file ({error})") from None
    build_from_state_dict(tensors, name=card_file.stem, card=card)  # finite weights of an FBCNN network, or an error
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{card_file.stem}.safetensors"
    with atomic_target(target) as tmp:
        tmp.write_bytes(data)
    write_text_atomic(card_path_for(target), json.dumps(card, indent=2) + "\n")
    load_weights(target)
    return target
