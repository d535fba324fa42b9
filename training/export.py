"""Turning a training run into shipped weights: fp16 safetensors plus a card.

The card records what a user (or an auditor) needs to trust the file: the
config that trained it, the data, the steps and time, the validation numbers
at that point, and the sha256 the loader checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fbcnn_plugins.core.configs import get_config
from fbcnn_plugins.core.weights import save_weights
from fbcnn_plugins.models import HERE as BUNDLED_DIR

from .trainer import CHECKPOINT, exported_weights, load_checkpoint, read_log, stage_record


def export_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint to export")
    return export_state(load_checkpoint(checkpoint), run_dir, out)


def export_state(
    state: dict[str, Any], run_dir: str | Path, out: str | Path | None = None, *,
    dtype: torch.dtype = torch.float16, extra: dict[str, Any] | None = None,
) -> Path:
    """Export a run's state (a checkpoint read back, or ``Trainer.state()`` of a run still going):
    the weights it stands for, in ``dtype``, and a card with the run's record and last validation."""
    run_dir = Path(run_dir)
    config = get_config(state["network_config"])
    network = config.build(1 if state["gray"] else 3)
    network.load_state_dict(exported_weights(state))  # the moving average when the run kept one
    name = state["config_name"]
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
    path = Path(out) if out else BUNDLED_DIR / f"{name}.safetensors"
    return save_weights(network, path, config, name=name, dtype=dtype, extra=card_extra)
