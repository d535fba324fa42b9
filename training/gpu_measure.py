"""What a GPU window measures: the device's bf16 matrix rate, the data pipeline's rate per core,
the training rate against that ceiling, the machine, and inference of the bundled model on CUDA.

Kept apart from the window's control flow (training/gpu_run.py) because the same numbers are worth
having from any run that wants to know how much of a machine it used.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .data import PatchBatches

#: Forward plus backward of a convolutional network: about three times the forward's operations.
TRAINING_FLOPS_PER_FORWARD = 3.0


def measure_matmul_tflops(device: torch.device, size: int | None = None, repeats: int = 10) -> float:
    """bf16 matrix-product rate of this device (the ceiling the training rate is compared with)."""
    size = size or (8192 if device.type == "cuda" else 512)
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def measure_data_rate(images: list, config: TrainConfig, seconds: float) -> dict[str, float]:
    """Training patches one process makes per CPU second (OpenCV and PyTorch held to one thread: one core)."""
    import cv2

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        dataset = PatchBatches(
            images, patch_size=config.patch_size, batch_size=min(config.batch_size, 32), degradation=config.degradation,
            seed=config.seed, total_steps=10**6, label_control=config.label_control,
            color_augmentation=config.color_augmentation, downscale=config.downscale,
        )
        started, cpu_started, batches = time.perf_counter(), time.process_time(), 0
        while batches < 1 or time.perf_counter() - started < seconds:
            dataset[batches]
            batches += 1
        patches = batches * dataset.batch_size
        # Per CPU second of this process, so that other work on a shared machine does not count against it.
        rate = patches / max(1e-9, time.process_time() - cpu_started)
        wall = patches / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    return {"patches_per_s_per_core": rate, "mp_per_s_per_core": rate * config.patch_size**2 / 1e6,
            "patches_per_s_wall": wall, "probe_patches": patches, "patch_size": config.patch_size}


def machine_summary(device: torch.device) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "cpu_cores": os.cpu_count(), "cpu": _cpu_model(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        summary.update({"gpu": properties.name, "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
                        "cuda": torch.version.cuda, "multiprocessors": properties.multi_processor_count})
    return summary


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(records: list[dict[str, Any]], patch_size: int, steps: int, patches: int, seconds: float) -> dict[str, Any]:
    """Training rate: over the whole run, and steady (the median window after the first two, which hold start-up)."""
    windows = [r["patches_per_s"] for r in records if r.get("kind") == "train"]
    steady = statistics.median(windows[2:]) if len(windows) > 2 else (windows[-1] if windows else 0.0)
    overall = patches / seconds if seconds else 0.0
    pixels = patch_size**2 / 1e6
    return {"steps": steps, "patches": patches, "train_seconds": round(seconds, 1),
            "patches_per_s": overall, "mp_per_s": overall * pixels,
            "steady_patches_per_s": steady, "steady_mp_per_s": steady * pixels}


def inference_benchmarks(seconds_left: float, log: Any = print) -> dict[str, Any]:
    """The bundled colour model on CUDA: a 12 MP photo through ``fbcnn bench`` and 1080p frames
    through the VapourSynth filter's engine (``Restorer.forward`` on whole frames, as the filter
    calls it with ``batch_size``)."""
    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.core.restorer import Restorer

    report: dict[str, Any] = {}
    command = [sys.executable, "-m", "fbcnn_plugins.cli.main", "bench", "--device", "cuda", "--size", "4000", "3000",
               "--precision", "fp16", "bf16", "--repeats", "3", "--json"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(30.0, seconds_left / 2))
        report["photo_12mp"] = json.loads(done.stdout) if done.returncode in (0, 1) and done.stdout.strip() else {
            "error": done.stderr[-2000:]}
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as error:
        report["photo_12mp"] = {"error": str(error)}
    report["photo_12mp_command"] = "fbcnn bench --device cuda --size 4000 3000 --precision fp16 bf16 --repeats 3"
    frames = []
    model = load_model(None, gray=False)
    for precision in ("fp16", "bf16"):
        restorer = Restorer(model, device="cuda", precision=precision)
        _, network = restorer.prepared_network(False)
        for batch in (1, 4, 8):
            tensors = torch.rand(batch, 3, 1080, 1920).pin_memory()
            restorer.forward(network, restorer.to_device(tensors), 30).float().cpu()  # cuDNN picks its kernels
            started, rounds = time.perf_counter(), 0
            while rounds < 3 or time.perf_counter() - started < 2.0:
                restorer.forward(network, restorer.to_device(tensors), 30).float().cpu()
                rounds += 1
            seconds = (time.perf_counter() - started) / rounds
            frames.append({"precision": precision, "batch_size": batch, "fps": batch / seconds,
                           "mp_per_s": batch * 1920 * 1080 / seconds / 1e6})
            log(f"1080p frames, {precision}, batch {batch}: {frames[-1]['fps']:.1f} fps, {frames[-1]['mp_per_s']:.1f} MP/s")
    report["frames_1080p"] = frames
    report["model"] = model.name
    return report


def rates_against_ceiling(report: dict[str, Any]) -> None:
    """Add the training FLOP rate (steady) and its share of the measured bf16 matrix rate to a report."""
    training = report["training"]
    tflops = training["steady_mp_per_s"] * 1e6 * report["flops_per_pixel"] * TRAINING_FLOPS_PER_FORWARD / 1e12
    report["train_tflops"] = tflops
    report["percent_of_matmul_bf16"] = 100.0 * tflops / report["matmul_bf16_tflops"]
