"""Training run settings, read from a TOML file under ``training/configs/``.

One file fixes a whole run (network, data, degradations, optimiser, schedule,
validation, export), so that ``fbcnn train --config FILE`` plus the seed in it
reproduces the shipped weights.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import ColorAugmentation, DegradationConfig, Downscale, QualityDistribution, VideoDamage


@dataclass
class TrainConfig:
    name: str
    network: str
    gray: bool
    train_dirs: list[str]
    val_dirs: list[str]
    patch_size: int = 64
    batch_size: int = 16
    steps: int = 100_000
    lr: float = 2e-4
    lr_min: float = 1e-6
    schedule: str = "cosine"  # or "step"
    step_every: int = 40_000
    step_gamma: float = 0.5
    warmup_steps: int = 500
    qf_loss_weight: float = 0.1
    #: Share of samples whose true QF (the smaller one for double JPEG) drives the decoder instead
    #: of the predicted QF, from ``label_control_from_step`` on; while it is on, the prediction is
    #: detached where it drives the decoder, so the QF head learns from its own loss only.
    label_control: float = 0.0
    label_control_from_step: int = 0
    grad_clip: float = 0.0
    seed: int = 0
    #: Where the steps run: auto (CUDA, then MPS, then CPU), cpu, cuda[:N]; and fp32, bf16 autocast,
    #: or auto (bf16 on CUDA and on CPUs that compute bf16 in hardware, fp32 elsewhere).
    device: str = "auto"
    precision: str = "auto"
    workers: int = 1
    threads: int = 0
    checkpoint_every: int = 500
    val_every: int = 2000
    val_qfs: list[int] = field(default_factory=lambda: [10, 40])
    val_crop: int = 256
    val_images: int = 12
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    color_augmentation: ColorAugmentation = field(default_factory=ColorAugmentation)
    #: ([data.downscale]) Shrinking of the clean source before patches are cut; off by default.
    downscale: Downscale = field(default_factory=Downscale)
    #: ([data.video]) Patches of real codec output mixed into the batches; off by default.
    video: VideoDamage = field(default_factory=VideoDamage)
    #: ([optim]) Decay of an exponential moving average of the weights, kept beside them and
    #: validated and exported instead of them; 0 (the default) keeps none.
    ema_decay: float = 0.0
    source: str = ""
    #: Start from these weights instead of the seed's random ones (a second stage of training):
    #: a run's ``last.pt`` or exported ``.safetensors``; relative to where ``fbcnn train`` runs.
    init_from: str = ""
    #: ([run]) Where checkpoints and the log go unless ``--run-dir`` says otherwise (default
    #: ``runs/NAME``); a later stage that exports under the same name needs its own.
    run_dir: str = ""


def _distribution(raw: Any, default: QualityDistribution) -> QualityDistribution:
    if raw is None:
        return default
    return QualityDistribution([(float(w), int(lo), int(hi)) for w, lo, hi in raw])


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    with path.open("rb") as stream:
        raw = tomllib.load(stream)
    model, data, optim, run, val = (raw.get(k, {}) for k in ("model", "data", "optim", "run", "validation"))
    jpeg = data.get("jpeg", {})
    try:
        degradation = DegradationConfig(
            single=_distribution(jpeg.get("single_qf"), QualityDistribution()),
            double_ratio=float(jpeg.get("double_ratio", 0.0)),
            double_first=_distribution(jpeg.get("double_qf1"), QualityDistribution()),
            double_second=_distribution(jpeg.get("double_qf2"), QualityDistribution()),
            max_shift=int(jpeg.get("max_shift", 7)),
            chain_ratio=float(jpeg.get("chain_ratio", 0.0)),
            chain_first=_distribution(jpeg.get("chain_qf1"), QualityDistribution()),
            chain_second=_distribution(jpeg.get("chain_qf2"), QualityDistribution([(1.0, 80, 95)])),
            chain_scale=tuple(float(v) for v in jpeg.get("chain_scale", (0.75, 1.5))),
        )
        shrink = data.get("downscale", {})
        downscale = Downscale(
            probability=float(shrink.get("probability", 0.0)),
            range=tuple(float(v) for v in shrink.get("range", (0.5, 1.0))),
        )
        clips = data.get("video", {})
        video = VideoDamage(pairs_dir=str(clips.get("pairs_dir", "")), ratio=float(clips.get("ratio", 0.0)))
        ema_decay = float(optim.get("ema_decay", 0.0))
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in 0..1 (0: off), got {ema_decay}")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    color = data.get("color", {})
    try:
        color_augmentation = ColorAugmentation(
            channel_shuffle=float(color.get("channel_shuffle", 0.0)),
            saturation_probability=float(color.get("saturation_probability", 0.0)),
            saturation_range=tuple(float(v) for v in color.get("saturation_range", (1.0, 1.0))),
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: [data.color]: {error}") from None
    if model.get("gray", False) and color_augmentation.active:
        raise ValueError(f"{path}: [data.color] augmentation is for colour models; this config trains a gray one")
    # Fields set from their own sections above are not taken again from the flat ones.
    explicit = {"name", "network", "gray", "init_from", "degradation", "color_augmentation", "downscale", "video", "ema_decay", "source"}
    known = set(TrainConfig.__dataclass_fields__) - explicit
    settings: dict[str, Any] = {}
    for section in (data, optim, run, val):
        settings.update({k: v for k, v in section.items() if k in known})
    return TrainConfig(
        name=raw.get("name", path.stem),
        network=model.get("config", "small"),
        gray=bool(model.get("gray", False)),
        init_from=str(model.get("init_from", "")),
        degradation=degradation,
        color_augmentation=color_augmentation,
        downscale=downscale,
        video=video,
        ema_decay=ema_decay,
        source=str(path),
        **settings,
    )
