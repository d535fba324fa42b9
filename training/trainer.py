"""The training loop: resumable, logged, and cheap enough for a 2-core CPU.

A run lives in one folder: ``last.pt`` (model, optimiser, schedule, step, RNG
and elapsed time), ``log.jsonl`` (one line per report and per validation) and
``train.toml`` (the config it was started with).  Data for step ``s`` depends
only on (seed, s), so resuming from ``last.pt`` continues exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.core.configs import create_network
from fbcnn_plugins.core.device import cpu_has_native_bf16, resolve_device
from fbcnn_plugins.core.jpeg import jpeg_roundtrip
from fbcnn_plugins.core.metrics import psnr

from .config import TrainConfig
from .data import GRID, PatchBatches, list_images, load_training_image
from .start_weights import is_start_weights, read_start_weights
from .video_pairs import load_pairs

CHECKPOINT = "last.pt"
LOG = "log.jsonl"


def cosine_factor(progress: float, floor: float) -> float:
    """Cosine decay from 1 to ``floor`` as progress goes from 0 to 1."""
    progress = min(1.0, max(0.0, progress))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_factor(config: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the base LR at a step: linear warm-up, then cosine or step decay."""

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "step":
            return config.step_gamma ** (step // config.step_every)
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return cosine_factor(progress, config.lr_min / config.lr)

    return factor


def prepare_batch(
    batch: dict[str, torch.Tensor], device: torch.device = torch.device("cpu"), channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """Move a worker's batch to the device; pixels travel as uint8 (a quarter of the bytes) and become floats there."""
    prepared = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for key in ("clean", "degraded"):
        prepared[key] = prepared[key].float().div_(255.0).contiguous(memory_format=memory_format)
    return prepared


def training_loss(
    network: torch.nn.Module, batch: dict[str, torch.Tensor], qf_weight: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L1 on pixels plus weighted L1 on q = 1 - QF/100; double-JPEG samples get no QF loss (paper eq. 5).

    With the paper's recipe the predicted QF drives the decoder and the image loss flows back
    into the QF head.  On a small budget that lets the head settle on the median QF and the
    decoder ignore it (the QF control then does nothing); batches with ``use_label`` drive
    the decoder with true labels instead, so the control means what it says.
    """
    target = (1.0 - batch["qf"] / 100.0).unsqueeze(1)
    control = None
    if "use_label" in batch:
        use_label = batch["use_label"].unsqueeze(1)

        def control(predicted: torch.Tensor) -> torch.Tensor:
            return torch.where(use_label, target.to(predicted.dtype), predicted.detach())

    restored, predicted = network(batch["degraded"], control)
    image_loss = F.l1_loss(restored, batch["clean"])
    single = (~batch["double"]).float().unsqueeze(1)
    qf_loss = (torch.abs(predicted - target) * single).sum() / single.sum().clamp(min=1.0)
    loss = image_loss + qf_weight * qf_loss
    # Detached tensors, not floats: reading a value would wait for the GPU at every step.
    return loss, {"l1": image_loss.detach(), "qf_l1": qf_loss.detach()}


class ValidationSet:
    """Central crops of the validation images, JPEG-compressed once per QF."""

    def __init__(self, config: TrainConfig) -> None:
        files = list_images(config.val_dirs)[: config.val_images]
        crop = config.val_crop
        self.cases: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {qf: [] for qf in config.val_qfs}
        for path in files:
            image = load_training_image(path, config.gray)
            if min(image.shape[:2]) < 2 * GRID:
                raise ValueError(f"{path}: {image.shape[1]}x{image.shape[0]} is too small for a validation image "
                                 f"(at least {2 * GRID}x{2 * GRID})")
            top = max(0, (image.shape[0] - crop) // 2) // GRID * GRID
            left = max(0, (image.shape[1] - crop) // 2) // GRID * GRID
            clean = np.ascontiguousarray(image[top : top + crop, left : left + crop])
            for qf in config.val_qfs:
                self.cases[qf].append((clean, jpeg_roundtrip(clean, qf)))

    @torch.no_grad()
    def evaluate(self, network: torch.nn.Module) -> dict[str, dict[str, float]]:
        network.eval()
        device = next(network.parameters()).device
        report = {}
        for qf, pairs in self.cases.items():
            jpeg_psnrs, out_psnrs, given_psnrs, predicted = [], [], [], []
            for clean, degraded in pairs:
                x = _to_batch(degraded).to(device)
                restored, q = network(x)
                # The same image driven by its true QF: the decoder's quality apart from the QF head's.
                given, _ = network(x, torch.full_like(q, 1.0 - qf / 100.0))
                jpeg_psnrs.append(psnr(clean, degraded))
                out_psnrs.append(psnr(clean, _to_uint8(restored)))
                given_psnrs.append(psnr(clean, _to_uint8(given)))
                predicted.append(100.0 * (1.0 - float(q)))
            report[str(qf)] = {
                "psnr_jpeg": float(np.mean(jpeg_psnrs)),
                "psnr_out": float(np.mean(out_psnrs)),
                "gain": float(np.mean(out_psnrs) - np.mean(jpeg_psnrs)),
                "gain_given_qf": float(np.mean(given_psnrs) - np.mean(jpeg_psnrs)),
                "qf_predicted": float(np.mean(predicted)),
            }
        network.train()
        return report


def _to_batch(image: np.ndarray) -> torch.Tensor:
    array = image if image.ndim == 3 else image[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    array = tensor[0].float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


class WeightAverage:
    """An exponential moving average of a network's weights (what the run validates and exports).

    The average smooths the last steps' noise out of the weights at no cost per step worth
    mentioning.  Its decay ramps up as (1 + n) / (10 + n) over its first updates, so a short run
    is not dominated by the weights it started from.
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.network = copy.deepcopy(network).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged = list(self.network.state_dict().values())
        current = list(network.state_dict().values())
        torch._foreach_lerp_(averaged, current, 1.0 - decay)

    def state_dict(self) -> dict[str, Any]:
        return {"network": self.network.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.updates = int(state["updates"])


def exported_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint stands for: its moving average when the run kept one."""
    return state["ema"]["network"] if state.get("ema") else state["network"]


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    with atomic_target(path) as tmp:
        torch.save(state, tmp)


def _ignore_stop_signals(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: only the main process may react (save, then stop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _require_network_of(config: TrainConfig, path: Path, network_config: str, gray: bool) -> None:
    """Weights from another architecture or colour mode would fail later, or silently train the wrong thing."""
    if network_config != config.network or gray != config.gray:
        raise ValueError(f"{path}: weights are for {network_config} gray={gray}, not this config")


def stage_record(state: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What a weights card says of the run behind a checkpoint: the exported card's "training",
    and the record a later stage started from it keeps under "previous_stage"."""
    train_toml = run_dir / "train.toml"
    settings = tomllib.loads(train_toml.read_text()) if train_toml.exists() else {}
    name = state["config_name"]
    recipe = "FBCNN-A: single JPEG plus non-aligned double JPEG (libjpeg via OpenCV)"
    video = settings.get("data", {}).get("video", {})
    if float(video.get("ratio", 0.0)) > 0:
        recipe += (f"; {float(video['ratio']):.0%} of the patches from MPEG-2/H.264/HEVC/MJPEG clips "
                   "(training/video_pairs.py), labelled with the JPEG quality of equal damage")
    return {
        "recipe": recipe,
        "config_file": state.get("config_file") or f"training/configs/{name.removeprefix('fbcnn-')}.toml",
        "init_from": state.get("init_from") or None,
        "data": settings.get("data", {}).get("train_dirs", []),
        "steps": int(state["step"]),
        "train_seconds": round(float(state["elapsed"]), 1),
        "machine": state.get("machine", "2-thread CPU, fp32"),
        "seed": settings.get("run", {}).get("seed"),
        "ema_decay": state["ema"]["decay"] if state.get("ema") else None,
        "video_ratio": float(video.get("ratio", 0.0)) or None,
        "previous_stage": state.get("previous_stage"),
    }


def initial_weights(path: Path, config: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The fp32 state dict a second training stage starts from (a run checkpoint or exported weights),
    and what is known of the training that made them, so the final card tells the whole history."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: init_from weights not found")
    if is_start_weights(path):  # a GPU window's 8-bit starting point (training/start_weights.py)
        state, card = read_start_weights(path)
        _require_network_of(config, path, card["config"]["name"], card.get("in_channels") == 1)
        history = {**(card.get("training") or {}), "sha256": card.get("sha256")}
        return {key: value for key, value in state.items() if not key.startswith("strength_pred.")}, history
    if path.suffix == ".pt":
        state = load_checkpoint(path)
        _require_network_of(config, path, state["network_config"], state["gray"])
        return exported_weights(state), stage_record(state, path.parent)
    from fbcnn_plugins.core.weights import load_weights

    loaded = load_weights(path)
    _require_network_of(config, path, loaded.config.name, loaded.is_gray)
    history = {**(loaded.card.get("training") or {}), "sha256": loaded.card.get("sha256")}
    # A strength head reads the encoder's features as they were; training changes them, so it is left
    # behind (training/qf_head.py fits a new one on the exported weights).
    return {key: value.float() for key, value in loaded.network.state_dict().items()
            if not key.startswith("strength_pred.")}, history


class Trainer:
    """One training run.  ``device`` and ``precision`` override the config's [run] settings.

    On a GPU the network runs channels-last under bf16 autocast (when asked for), which is
    what makes the small configs worth training there: their thin layers are memory-bound.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        log: Callable[[str], None] = print,
        device: str | None = None,
        precision: str | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.log = log
        self.device = resolve_device(device or config.device).torch()
        self.precision = (precision or config.precision).lower()
        if self.precision == "auto":
            # bf16 autocast pays on GPUs and on CPUs that compute bf16 in hardware (AVX-512-BF16,
            # AMX: the small network trains 2.4x faster there); elsewhere it is emulated and slower.
            native = self.device.type == "cuda" or (self.device.type == "cpu" and cpu_has_native_bf16())
            self.precision = "bf16" if native else "fp32"
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"training precision must be auto, fp32 or bf16, not {self.precision!r}")
        self.channels_last = self.device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        torch.manual_seed(config.seed)  # the initial weights are part of what the seed reproduces
        self.network = create_network(config.network, 1 if config.gray else 3)
        if self.network.global_residual:
            # Start as the identity: the loss begins at the JPEG input's error and only has to go down.
            torch.nn.init.zeros_(self.network.m_tail.weight)
            torch.nn.init.zeros_(self.network.m_tail.bias)
        self.previous_stage: dict[str, Any] | None = None
        if config.init_from:
            weights, self.previous_stage = initial_weights(Path(config.init_from), config)
            self.network.load_state_dict(weights)
        self.network.to(self.device, memory_format=memory_format)
        self.average = WeightAverage(self.network, config.ema_decay) if config.ema_decay else None
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.lr, fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, learning_rate_factor(config))
        self.step = 0
        self.elapsed = 0.0
        self._stop_requested = False
        self._deadline: float | None = None
        self._lr_used = config.lr
        #: Overrides the learning-rate factor of a time-budgeted run, from (step, fraction of the budget
        #: spent), warm-up included: a run that is one of several planned ones takes its own stretch
        #: of a schedule that spans them all (training/gpu_run.py).
        self.learning_rate_at: Callable[[int, float], float] | None = None

    # -- checkpoints -------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            "config_name": self.config.name,
            "network_config": self.config.network,
            "gray": self.config.gray,
            "machine": self.machine(),
            "config_file": self.config.source,
            "init_from": self.config.init_from,
            "previous_stage": self.previous_stage,
            "ema": self.average.state_dict() if self.average else None,
        }

    def machine(self) -> str:
        """Where the steps ran, for the weights' card."""
        if self.device.type == "cuda":
            where = torch.cuda.get_device_name(self.device)
        else:
            where = f"{torch.get_num_threads()}-thread {self.device.type.upper()}"
        return f"{where}, {self.precision}"

    def save(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / CHECKPOINT
        _save_atomic(self.state(), path)
        return path

    def resume(self, path: Path | None = None) -> bool:
        path = path or self.run_dir / CHECKPOINT
        if not path.exists():
            return False
        state = load_checkpoint(path)
        _require_network_of(self.config, path, state["network_config"], state["gray"])
        self.network.load_state_dict(state["network"])  # copies into the parameters, wherever they live
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.previous_stage = state.get("previous_stage", self.previous_stage)
        if self.average:
            if state.get("ema"):
                self.average.load_state_dict(state["ema"])
            else:  # a run that starts averaging part-way: from the weights it has now
                self.average = WeightAverage(self.network, self.config.ema_decay)
        torch.set_rng_state(state["torch_rng"])
        return True

    # -- the loop ----------------------------------------------------------
    def _append_log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / LOG, "a") as stream:
            stream.write(json.dumps(record) + "\n")

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def train(
        self,
        *,
        max_steps: int | None = None,
        time_budget: float | None = None,
        validate: bool = True,
        report_every: int = 20,
    ) -> None:
        """Train up to ``config.steps`` (or ``max_steps`` more steps), checkpointing as it goes.

        With ``time_budget`` (seconds of wall time) the run instead ends when the budget is
        spent and the cosine schedule runs over time rather than steps: where GPU time comes in
        fixed slots the minutes are known and the step rate is not.
        """
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config.source and not (self.run_dir / "train.toml").exists():
            shutil.copyfile(config.source, self.run_dir / "train.toml")
        if config.threads:
            torch.set_num_threads(config.threads)
        if time_budget is not None:
            if time_budget <= 0:
                raise ValueError("the time budget must be positive")
            end = self.step + (max_steps if max_steps is not None else 10**9)
        else:
            end = config.steps if max_steps is None else min(config.steps, self.step + max_steps)
        if self.step >= end:
            return
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        images = [load_training_image(p, config.gray) for p in list_images(config.train_dirs)]
        images = [im for im in images if min(im.shape[:2]) >= config.patch_size + 3 * GRID]
        if not images:
            raise ValueError(f"no training image under {', '.join(config.train_dirs)} is at least "
                             f"{config.patch_size + 3 * GRID} pixels on each side (patch_size + 3 JPEG blocks)")
        dataset = PatchBatches(
            images, patch_size=config.patch_size, batch_size=config.batch_size,
            degradation=config.degradation, seed=config.seed, total_steps=end,
            label_control=config.label_control, label_control_from_step=config.label_control_from_step,
            color_augmentation=config.color_augmentation, downscale=config.downscale,
            video=config.video, video_pairs=load_pairs(config.video.pairs_dir) if config.video.active else (),
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=range(self.step, end), num_workers=config.workers,
            prefetch_factor=4 if config.workers else None, persistent_workers=False,
            worker_init_fn=_ignore_stop_signals, pin_memory=self.device.type == "cuda",
        )
        validation = ValidationSet(config) if validate and config.val_every else None
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        self.network.train()
        window_start, window_patches, losses = time.perf_counter(), 0, []
        budget_start = time.perf_counter()
        self._deadline = budget_start + time_budget if time_budget is not None else None
        floor = config.lr_min / config.lr
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        try:
            for batch in loader:
                started = time.perf_counter()
                if time_budget is not None and (self.learning_rate_at or self.step >= config.warmup_steps):
                    fraction = (started - budget_start) / time_budget
                    if self.learning_rate_at:
                        factor = self.learning_rate_at(self.step, fraction)
                    else:
                        factor = cosine_factor(fraction, floor)
                    for group in self.optimizer.param_groups:
                        group["lr"] = config.lr * factor
                batch = prepare_batch(batch, self.device, self.channels_last)
                with autocast:
                    loss, parts = training_loss(self.network, batch, config.qf_loss_weight)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.network.parameters(), config.grad_clip)
                self.optimizer.step()
                if self.average:
                    self.average.update(self.network)
                self._lr_used = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
                self.step += 1
                if self._deadline is not None and time.perf_counter() >= self._deadline:
                    end = self.step
                self.elapsed += time.perf_counter() - started
                window_patches += config.batch_size
                losses.append(torch.stack([loss.detach(), parts["l1"], parts["qf_l1"]]))
                if self.step % report_every == 0 or self.step == end:
                    self._report(window_start, window_patches, losses, end)
                    window_start, window_patches, losses = time.perf_counter(), 0, []
                if validation and self.step % config.val_every == 0:
                    self._validate(validation)
                if self.step % config.checkpoint_every == 0 or self.step == end or self._stop_requested:
                    self.save()
                if self._stop_requested:
                    self.log(f"stopped at step {self.step}; checkpoint saved")
                    break
                if self.step >= end:
                    break
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)

    def _report(self, window_start: float, patches: int, losses: list[torch.Tensor], end: int) -> None:
        mean = torch.stack(losses).float().mean(dim=0).cpu().numpy()
        seconds = max(1e-9, time.perf_counter() - window_start)
        rate = patches / seconds
        if self._deadline is not None:
            remaining = max(0.0, self._deadline - time.perf_counter())
        else:
            remaining = (end - self.step) * self.config.batch_size / max(rate, 1e-9)
        lr = self._lr_used
        record = {
            "kind": "train", "step": self.step, "loss": float(mean[0]), "l1": float(mean[1]),
            "qf_l1": float(mean[2]), "lr": lr, "patches_per_s": rate,
            "elapsed_s": self.elapsed, "time": time.time(),
        }
        self._append_log(record)
        self.log(
            f"step {self.step}{'' if self._deadline is not None else f'/{end}'}  loss {mean[0]:.5f}  l1 {mean[1]:.5f}  qf {mean[2]:.4f}  "
            f"{rate:.1f} patches/s  ETA {_format_seconds(remaining)}"
        )
        sys.stdout.flush()

    def _validate(self, validation: ValidationSet) -> None:
        report = validation.evaluate(self.average.network if self.average else self.network)
        self._append_log({"kind": "val", "step": self.step, "elapsed_s": self.elapsed, "val": report, "time": time.time()})
        summary = "  ".join(f"QF{qf}: {r['psnr_out']:.2f} dB ({r['gain']:+.2f})" for qf, r in report.items())
        self.log(f"validation at step {self.step}: {summary}")


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
