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

import numpy as np
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


def inference_benchmarks(seconds_left: float, log: Any = print, *, device: str = "cuda",
                         photo_size: tuple[int, int] = (4000, 3000), frame_size: tuple[int, int] = (1920, 1080),
                         precisions: tuple[str, ...] = ("fp16", "bf16"), batches: tuple[int, ...] = (1, 4, 8),
                         min_seconds: float = 2.0) -> dict[str, Any]:
    """The bundled colour model on ``device``: a 12 MP photo through ``fbcnn bench`` and 1080p frames
    as the VapourSynth filter's engine runs them.

    The filter restores a frame larger than its tile through the core's tiling, one frame at a
    time; with a tile that holds the whole frame it sends ``batch_size`` frames through the
    network at once.  Both are timed, at the device's default tile and at 512 (the CPU's), so the
    report says what the default costs and what each tile size buys.
    """
    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.core.device import resolve_device
    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.core.tiling import DEFAULT_TILE, default_tile

    report: dict[str, Any] = {}
    width, height = photo_size
    # The device's default tile, and the CPU's 512 beside it where the two differ.
    tiles = sorted({default_tile(resolve_device(device).type), DEFAULT_TILE})
    options = ["bench", "--device", device, "--size", str(width), str(height), "--precision", *precisions,
               "--tile", *map(str, tiles), "--repeats", "3"]
    # -P: the repository's own folders must not shadow the installed package (the command runs in its root).
    command = [sys.executable, "-P", "-m", "fbcnn_plugins.cli.main", *options, "--json"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(30.0, seconds_left / 2))
        report["photo"] = json.loads(done.stdout) if done.returncode in (0, 1) and done.stdout.strip() else {
            "error": done.stderr[-2000:]}
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as error:
        report["photo"] = {"error": str(error)}
    report["photo_command"] = "fbcnn " + " ".join(options)
    frame_width, frame_height = frame_size
    megapixels = frame_width * frame_height / 1e6
    model = load_model(None, gray=False)
    rng = np.random.default_rng(0)
    frames = rng.random((max(batches), 3, frame_height, frame_width), dtype=np.float32)

    def timed(run: Any, count: int) -> float:
        run()  # the first call loads the engine and lets cuDNN pick its kernels
        started, rounds = time.perf_counter(), 0
        while rounds < 3 or time.perf_counter() - started < min_seconds:
            run()
            rounds += 1
        return count * rounds / (time.perf_counter() - started)

    results = []
    for precision in precisions:
        for tile in tiles:
            tiled = Restorer(model, device=device, precision=precision, tile=tile)
            fps = timed(lambda: tiled.restore_tensor(frames[:1], 30, gray=False), 1)
            results.append({"precision": precision, "tile": tile, "batch_size": 1, "fps": fps, "mp_per_s": fps * megapixels})
            log(f"frames {frame_width}x{frame_height}, {precision}, tile {tile}: {fps:.1f} fps, {fps * megapixels:.1f} MP/s")
        whole = Restorer(model, device=device, precision=precision, tile=-(-max(frame_size) // 8) * 8)
        _, network = whole.prepared_network(False)
        for batch in batches:
            fps = timed(lambda: whole.forward(network, frames[:batch], 30), batch)
            results.append({"precision": precision, "tile": whole.tile, "batch_size": batch, "fps": fps,
                            "mp_per_s": fps * megapixels})
            log(f"frames {frame_width}x{frame_height}, {precision}, whole frames, batch {batch}: {fps:.1f} fps, "
                f"{fps * megapixels:.1f} MP/s")
    report["frames"] = results
    report["frame_size"] = list(frame_size)
    report["model"] = model.name
    return report


def rates_against_ceiling(report: dict[str, Any]) -> None:
    """Add the training FLOP rate (steady) and its share of the measured bf16 matrix rate to a report."""
    training = report["training"]
    tflops = training["steady_mp_per_s"] * 1e6 * report["flops_per_pixel"] * TRAINING_FLOPS_PER_FORWARD / 1e12
    report["train_tflops"] = tflops
    report["percent_of_matmul_bf16"] = 100.0 * tflops / report["matmul_bf16_tflops"]
