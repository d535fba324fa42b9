"""One GPU window, fully used: train, validate, export in returnable parts, report.

    python -m fbcnn_plugins.training.gpu_run --data data-pack --out "$OUT"
    python -m fbcnn_plugins.training.gpu_run --probe-only --data data-pack      # the rates alone

A GPU window is a 10-minute command on a machine that receives the working tree (64 MiB) and
returns at most 8 files of 16 MiB.  In one command this trains the config's network for
``--budget`` seconds, starting from the last window's weights (``training/gpu_runs/NAME``, put
there by ``gpu_collect``) or from scratch; takes its stretch of one cosine schedule planned over
``planned_runs`` windows, so that N windows make one run N times as long; validates on every
validation crop of the data pack (and the bundled ``small`` model on the same crops); writes the
weights in fp16 (or bf16), cut into parts that fit the returned files, with their card; measures
the training rate against the bf16 matrix rate it measures on the same device; on CUDA times
inference of the bundled model (a 12 MP photo through ``fbcnn bench``, 1080p frames through the
VapourSynth filter's engine); and writes ``report.json``.  While training it rewrites the
weights and the report every ``export_every`` seconds, so a command stopped at its limit still
returns what it learned.

Throughput on a GPU comes from the config (large batches of 128 px patches, enough worker
processes) and from the trainer (channels-last, bf16 autocast, pinned uint8 batches);
``--compile`` adds ``torch.compile`` (``reduce-overhead`` uses CUDA graphs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fbcnn_plugins.core.configs import count_parameters, flops_per_pixel
from fbcnn_plugins.core.model_card import read_card
from fbcnn_plugins.core.weights import write_text_atomic

from .config import TrainConfig, load_train_config
from .data import GRID, list_images, load_training_image
from .export import export_state
from .gpu_measure import (
    inference_benchmarks, machine_summary, measure_data_rate, measure_matmul_tflops, rates_against_ceiling, throughput,
)
from .trainer import Trainer, ValidationSet, cosine_factor, read_log, stage_record
from .start_weights import is_start_weights, start_card, start_path
from .weight_parts import DEFAULT_PART_BYTES, split_weights

DEFAULT_CONFIG = Path("training/configs/color-base-gpu.toml")
#: Where gpu_collect puts each window's weights, and where the next window starts from.
HISTORY_DIR = Path("training/gpu_runs")
REPORT = "report.json"


@dataclass(frozen=True)
class WindowPlan:
    """This window's stretch of a cosine schedule planned over ``planned`` windows."""

    index: int
    planned: int
    budget_s: float
    lr: float
    lr_min: float
    warmup_steps: int
    seed: int

    def factor(self, step: int, fraction: float) -> float:
        """Multiplier of the base LR at a step of this window, ``fraction`` of its budget spent."""
        progress = (self.index + min(1.0, max(0.0, fraction))) / self.planned
        target = cosine_factor(progress, self.lr_min / self.lr)
        if step < self.warmup_steps:
            return target * (step + 1) / self.warmup_steps
        return target

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lr_start": self.lr * self.factor(10**9, 0.0),
                "lr_end": self.lr * self.factor(10**9, 1.0)}


def gpu_settings(config_path: Path) -> dict[str, Any]:
    """The config's [gpu] section (training/configs/color-base-gpu.toml says what each key does)."""
    with config_path.open("rb") as stream:
        section = tomllib.load(stream).get("gpu", {})
    return {"planned_runs": 3, "budget": 420.0, "export_every": 60.0, "rewarm_steps": 100,
            "final_val_qfs": [10, 40, 90], **section}


def plan_window(config: TrainConfig, init_card: dict[str, Any] | None, settings: dict[str, Any],
                budget: float, planned: int | None) -> WindowPlan:
    """Window k+1 follows the window k whose weights it starts from (their card says k and N)."""
    previous = ((init_card or {}).get("training") or {}).get("gpu_run")
    index = int(previous["index"]) + 1 if previous else 0
    planned = planned or (int(previous["planned"]) if previous else int(settings["planned_runs"]))
    if index >= planned:
        raise ValueError(f"the weights to start from are window {index} of {planned} planned: the schedule has run out; "
                         f"pass --planned-runs with more than {index} to stretch it")
    warmup = config.warmup_steps if index == 0 else int(settings["rewarm_steps"])
    return WindowPlan(index, planned, budget, config.lr, config.lr_min, warmup, config.seed + index)


def pack_folders(pack: Path) -> tuple[list[str], list[str]]:
    """The training and validation folders of a data pack (training/data_pack.py)."""
    train = sorted(str(p) for p in (pack / "train").iterdir() if p.is_dir()) if (pack / "train").is_dir() else []
    if not train:
        raise FileNotFoundError(f"{pack}: not a data pack (no train/FOLDER/ inside); build one with "
                                "python -m fbcnn_plugins.training.data_pack")
    val = [str(pack / "val")] if (pack / "val").is_dir() else []
    return train, val


class WindowTrainer(Trainer):
    """A trainer whose checkpoints are exports into the returned folder, every ``export_every`` seconds.

    The fp32 checkpoint with Adam's moments (over 100 MB for ``base``) cannot come back from a
    GPU window; the weights the next window starts from can.
    """

    def __init__(self, *args: Any, exporter: Any, export_every: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exporter = exporter
        self.export_every = export_every
        self.last_export = time.monotonic()

    def save(self) -> Path:
        if time.monotonic() - self.last_export >= self.export_every or self._stop_requested:
            self.exporter(final=False)
            self.last_export = time.monotonic()
        return self.run_dir / "last.pt"


def _validate(network: torch.nn.Module, config: TrainConfig, qfs: list[int], images: int) -> dict[str, Any]:
    final = dataclasses.replace(config, val_qfs=list(qfs), val_images=images)
    return ValidationSet(final).evaluate(network)


def _bundled_baseline(gray: bool, device: torch.device) -> torch.nn.Module | None:
    from fbcnn_plugins.core.catalog import load_model

    try:
        return load_model(None, gray=gray).network.float().to(device)
    except (FileNotFoundError, KeyError, ValueError):
        return None


def run_window(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    config = load_train_config(args.config)
    settings = gpu_settings(args.config)
    overrides: dict[str, Any] = {k: v for k, v in {
        "network": args.network, "batch_size": args.batch_size, "patch_size": args.patch_size,
        "workers": args.workers, "device": args.device, "precision": args.precision,
    }.items() if v is not None}
    if args.data:
        overrides["train_dirs"], val_dirs = pack_folders(args.data)
        overrides["val_dirs"] = val_dirs
        if not val_dirs:
            overrides["val_every"] = 0
    config = dataclasses.replace(config, **overrides)
    init = _initial_weights(args.init, config)
    init_card = start_card(init) if init and is_start_weights(init) else (
        read_card(init) if init and init.suffix == ".safetensors" else None)
    budget = float(args.budget if args.budget is not None else settings["budget"])
    plan = plan_window(config, init_card, settings, budget, args.planned_runs)
    config = dataclasses.replace(config, init_from=str(init) if init else "", seed=plan.seed)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fbcnn-gpu-run-"))
    trainer_box: dict[str, WindowTrainer] = {}
    report: dict[str, Any] = {"status": "starting", "command": getattr(args, "argv", None), "exports": 0, "config": str(args.config),
                              "name": config.name, "network": config.network, "gray": config.gray,
                              "plan": plan.to_dict(), "init_from": str(init) if init else None,
                              "init_sha256": (init_card or {}).get("sha256"), "started": time.time()}

    clock = time.monotonic()

    def phase(name: str) -> None:
        """Seconds each part of the window took: what the next window's budget has to leave room for."""
        nonlocal clock
        now = time.monotonic()
        report.setdefault("phase_seconds", {})[name] = round(now - clock, 1)
        clock = now

    def write_report() -> None:
        write_text_atomic(out / REPORT, json.dumps(report, indent=2) + "\n")

    def export(final: bool) -> None:
        trainer = trainer_box["trainer"]
        state = trainer.state()
        record = {**stage_record(state, trainer.run_dir), "gpu_run": plan.to_dict()}
        extra = {"training": record}
        if final and "validation_all" in report:
            extra["validation_all"] = report["validation_all"]
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
        weights = export_state(state, trainer.run_dir, work / "export" / f"{config.name}.safetensors", dtype=dtype,
                               extra=extra)
        card = split_weights(weights, out, tag=f"s{trainer.step:07d}", part_bytes=args.part_bytes)
        records = read_log(trainer.run_dir)
        report["training"] = throughput(records, config.patch_size, trainer.step, trainer.step * config.batch_size,
                                        trainer.elapsed)
        rates_against_ceiling(report)
        report["log"] = records
        report["weights"] = {"card": card.name, "step": trainer.step, "dtype": args.dtype}
        report["exports"] += 1
        write_report()

    device_name = (args.device or config.device)
    trainer = WindowTrainer(config, work / "run", log=log, exporter=export, export_every=float(
        args.export_every if args.export_every is not None else settings["export_every"]))
    trainer_box["trainer"] = trainer
    trainer.learning_rate_at = plan.factor
    device = trainer.device
    phase("start")
    report["machine"] = machine_summary(device)
    report["parameters"] = count_parameters(trainer.network)
    report["flops_per_pixel"] = flops_per_pixel(config.network, 1 if config.gray else 3)
    report["matmul_bf16_tflops"] = measure_matmul_tflops(device)
    images = [load_training_image(p, config.gray) for p in list_images(config.train_dirs)]
    images = [im for im in images if min(im.shape[:2]) >= config.patch_size + 3 * GRID]
    report["data"] = {"train_dirs": config.train_dirs, "images": len(images),
                      "megapixels": round(sum(im.shape[0] * im.shape[1] for im in images) / 1e6, 2),
                      "workers": config.workers, **measure_data_rate(images, config, args.probe_seconds)}
    del images
    phase("probes")
    log(f"{config.name} ({config.network}), window {plan.index + 1} of {plan.planned}, lr {plan.to_dict()['lr_start']:.2e} "
        f"-> {plan.to_dict()['lr_end']:.2e}, {budget:.0f} s on {report['machine'].get('gpu', device_name)}; "
        f"bf16 matmul {report['matmul_bf16_tflops']:.1f} TFLOP/s, data {report['data']['patches_per_s_per_core']:.0f} "
        f"patches/s per core")
    if args.probe_only:
        report["status"] = "probe"
        write_report()
        return report
    if args.compile != "off":
        trainer.network.compile(mode=None if args.compile == "default" else args.compile)
    report["compile"] = args.compile
    report["status"] = "training"
    write_report()
    trainer.train(time_budget=budget, validate=True, report_every=args.report_every)
    phase("training")
    stopped = trainer._stop_requested
    network = trainer.average.network if trainer.average else trainer.network
    if config.val_dirs and not stopped:
        qfs = [int(q) for q in (args.final_val_qfs or settings["final_val_qfs"])]
        count = len(list_images(config.val_dirs))
        report["validation_all"] = {"images": count, "crop": config.val_crop,
                                    "model": _validate(network, config, qfs, count)}
        baseline = _bundled_baseline(config.gray, device)
        if baseline is not None:
            bundled = _validate(baseline, config, qfs, count)
            report["validation_all"]["bundled_small"] = bundled
            report["validation_all"]["gain_over_bundled_db"] = {
                qf: report["validation_all"]["model"][qf]["psnr_out"] - bundled[qf]["psnr_out"] for qf in bundled}
    phase("validation")
    report["status"] = "stopped" if stopped else "trained"
    export(final=True)
    phase("export")
    if device.type == "cuda" and not stopped and not args.no_bench:
        try:
            report["inference"] = inference_benchmarks(args.bench_seconds, log)
        except Exception as error:  # the weights are out already; a failed benchmark must not hide them
            report["inference"] = {"error": f"{type(error).__name__}: {error}"}
        phase("inference")
    elif device.type != "cuda":
        report["inference"] = {"skipped": "no CUDA device"}
    report["status"] = "stopped" if stopped else "complete"
    report["finished"] = time.time()
    write_report()
    summary = report["training"]
    log(f"{summary['steps']} steps, {summary['patches_per_s']:.0f} patches/s ({summary['mp_per_s']:.1f} MP/s, "
        f"{report.get('percent_of_matmul_bf16', 0):.1f} % of the bf16 matmul rate); report in {out / REPORT}")
    return report


def bench_window(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    """A window spent on inference alone: the machine and the bundled model's rates, in report.json."""
    device = torch.device(args.device if args.device and args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"status": "benchmarking", "command": getattr(args, "argv", None), "started": time.time(),
                              "machine": machine_summary(device)}
    precisions = ("fp16", "bf16") if device.type == "cuda" else ("fp32", "bf16")
    report["inference"] = inference_benchmarks(args.bench_seconds, log, device=str(device), precisions=precisions)
    report["status"] = "benchmarked"
    report["finished"] = time.time()
    write_text_atomic(out / REPORT, json.dumps(report, indent=2) + "\n")
    return report


def _initial_weights(choice: str, config: TrainConfig) -> Path | None:
    if choice == "none":
        return None
    if choice == "auto":  # the last window's 8-bit starting point, else its fp16 weights
        for path in (start_path(HISTORY_DIR, config.name), HISTORY_DIR / f"{config.name}.safetensors"):
            if path.exists():
                return path
        return None
    path = Path(choice)
    if not path.exists():
        raise FileNotFoundError(f"{path}: weights to start from not found")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"training config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--data", type=Path, help="a data pack (training/data_pack.py) instead of the config's folders")
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-window",
                        help="folder for the returned files: weight parts, card, report.json (default: $OUT, else runs/gpu-window)")
    parser.add_argument("--work-dir", help="folder for the run's log and exports before they are split (default: a new temporary one)")
    parser.add_argument("--init", default="auto",
                        help=f"weights to start from: auto ({HISTORY_DIR}/NAME.safetensors when present), none, or a file")
    parser.add_argument("--budget", type=float, help="seconds of training (default: the config's [gpu] budget)")
    parser.add_argument("--planned-runs", type=int, help="windows the schedule spans (default: the last window's, else the config's)")
    parser.add_argument("--export-every", type=float, help="seconds between weights written while training")
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16", help="precision of the exported weights")
    parser.add_argument("--part-bytes", type=int, default=DEFAULT_PART_BYTES, help="largest part of the weights file")
    parser.add_argument("--network", help="override the config's network (tiny, small, base, paper)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--device", help="auto, cpu, cuda[:N]")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", choices=["off", "default", "max-autotune", "reduce-overhead"], default="off",
                        help="torch.compile the network (reduce-overhead: with CUDA graphs); off by default")
    parser.add_argument("--probe-seconds", type=float, default=3.0, help="seconds spent measuring the data pipeline's rate")
    parser.add_argument("--probe-only", action="store_true", help="measure the matmul and data rates, write the report, stop")
    parser.add_argument("--final-val-qfs", type=int, nargs="+", help="QFs of the closing validation (default: the config's)")
    parser.add_argument("--report-every", type=int, default=20, help="steps per logged training window")
    parser.add_argument("--no-bench", action="store_true", help="skip the CUDA inference benchmark")
    parser.add_argument("--bench-seconds", type=float, default=120.0, help="time allowed for the inference benchmark")
    parser.add_argument("--bench-only", action="store_true",
                        help="time the bundled model's inference alone (no training) and write the report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        report = bench_window(args) if args.bench_only else run_window(args)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"gpu_run: {error}", file=sys.stderr)
        return 2
    return 0 if report["status"] in ("complete", "probe", "benchmarked") else 1


if __name__ == "__main__":
    sys.exit(main())
