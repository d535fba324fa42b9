"""Turning a training run into shipped weights: fp16 safetensors plus a card.

The card records what a user (or an auditor) needs to trust the file: the
config that trained it, the data, the steps and time, the validation numbers
at that point, and the sha256 the loader checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from fbcnn_plugins.core.configs import get_config
from fbcnn_plugins.core.model_card import card_path_for, read_card
from fbcnn_plugins.core.weights import save_weights
from fbcnn_plugins.models import HERE as BUNDLED_DIR

from .trainer import CHECKPOINT, exported_weights, load_checkpoint, read_log, stage_record


#: Checkpoint entries an export needs.
REQUIRED_KEYS = ("config_name", "network_config", "gray", "step")
#: A model name from a checkpoint becomes a file name: letters, digits, ".", "_" and "-" only.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def export_run(run_dir: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Write a run's weights and card; ValueError (naming the file) for anything that is not a clean export.

    A checkpoint may come from someone else, so it picks no paths: its name must be a plain
    file name, and without ``out`` the weights go to the bundled-model folder.  Existing
    weights or a card are replaced only with ``overwrite``, and a file that is not a weights
    card is never replaced.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint to export")
    if not checkpoint.is_file():
        raise ValueError(f"{checkpoint}: not a regular file (a folder, FIFO or device)")
    try:
        state = load_checkpoint(checkpoint)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise ValueError(f"{checkpoint}: cannot be read as a training checkpoint ({error})") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{checkpoint}: not a complete training checkpoint (missing {', '.join(missing)})")
    return export_state(state, run_dir, out, overwrite=overwrite, source=checkpoint)


def export_state(
    state: dict[str, Any], run_dir: str | Path, out: str | Path | None = None, *,
    dtype: torch.dtype = torch.float16, extra: dict[str, Any] | None = None, overwrite: bool = True,
    source: Path | None = None,
) -> Path:
    """Export a run's state (a checkpoint read back, or ``Trainer.state()`` of a run still going):
    the weights it stands for, in ``dtype``, and a card with the run's record and last validation.

    The state's name must be a plain file name; ``overwrite`` (the default for a run exporting its
    own weights again) lets existing weights and their card be replaced, never another file.
    """
    run_dir = Path(run_dir)
    where = source or run_dir
    name = state["config_name"]
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{where}: model name {name!r} is not a plain file name (letters, digits, '.', '_', '-')")
    path = Path(out) if out else BUNDLED_DIR / f"{name}.safetensors"
    check_export_target(path, overwrite)
    try:
        config = get_config(state["network_config"])
        network = config.build(1 if state["gray"] else 3)
        network.load_state_dict(exported_weights(state))  # the moving average when the run kept one
    except (KeyError, RuntimeError, TypeError) as error:
        raise ValueError(f"{where}: the weights do not fit its network ({error})") from None
    validations = [r for r in read_log(run_dir) if r.get("kind") == "val" and r["step"] <= state["step"]]
    training = stage_record(state, run_dir)
    card_extra = {
        "training": training,
        "validation": validations[-1] if validations else None,
        "gray_input": "Y channel, MATLAB-style BT.601 (16..235)" if state["gray"] else None,
        # What the catalogue's defaults go by: a model that saw codec damage is the video filter's.
        "footage": "video" if training.get("video_ratio") else "photo",
    }
    card_extra.update(extra or {})
    return save_weights(network, path, config, name=name, dtype=dtype, extra=card_extra)


def check_export_target(path: Path, overwrite: bool) -> None:
    """The weights file and its card may be written at ``path``: a .safetensors name, nothing else replaced."""
    if path.suffix != ".safetensors":
        raise ValueError(f"--out {path}: name a .safetensors file (its card goes beside it as .json)")
    card = card_path_for(path)
    for existing in (path, card):
        if not existing.exists() and not existing.is_symlink():
            continue
        if not overwrite:
            raise ValueError(f"{existing}: exists (use --overwrite to replace the weights and their card)")
        if not existing.is_file():
            raise ValueError(f"{existing}: not a regular file; it is not replaced")
    if card.exists() and overwrite:
        try:
            read_card(card)
        except Exception:
            raise ValueError(f"{card}: not a weights card; it is not replaced (choose another --out)") from None
