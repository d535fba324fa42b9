"""Speed and peak memory of restoration on this machine, one fresh process per measurement.

Peak memory is a high-water mark that a process can only raise, so a second
measurement in the same process would inherit the first one's peak; each
measurement therefore runs in a child interpreter and reports JSON.  Speed is
megapixels per second through ``Restorer.restore`` (tiling and conversions
included), the best of a few runs after one warm-up call on the same image, since
the first call at each tile shape pays for one-time allocations and kernel selection
(oneDNN's and OpenVINO's alike).  Pixel content does not
change the work a convolutional network does, so the input is random.

Used by ``fbcnn bench`` (the registered models) and ``benchmarks/bench_core.py``
(randomly initialised network configs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

class _StopAfterTiles(Exception):
    pass


def measure(
    *,
    model: str | None = None,
    config: str | None = None,
    gray: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    backend: str = "pytorch",
    qf: int | str = 30,
    width: int = 512,
    height: int = 512,
    tile: int | None = None,
    self_ensemble: bool = False,
    repeats: int = 3,
    threads: int = 0,
    stop_after_tiles: int = 0,
) -> dict[str, Any]:
    """One measurement in this process: a registered model or path (``model``), or a random ``config``.

    ``stop_after_tiles`` ends each run after that many tiles and scales the speed to
    the part done, for configs too slow to restore a whole large image on a CPU.
    """
    import numpy as np

    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.core.threads import set_num_threads

    if threads:
        set_num_threads(threads)
    channels = 1 if gray else 3
    if config is not None:
        from fbcnn_plugins.core.configs import create_network, get_config
        from fbcnn_plugins.core.weights import LoadedModel

        loaded: Any = LoadedModel.from_network(create_network(config, channels).eval(), f"random-{config}", get_config(config))
    else:
        loaded = model
    restorer = Restorer(loaded, device=device, precision=precision, backend=backend,
                        tile=tile or None, self_ensemble=self_ensemble)
    shape = (height, width) if gray else (height, width, 3)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    on_gpu = restorer.device.type == "cuda"
    tiles = {"done": 0, "total": 0}

    def progress(done: int, total: int) -> None:
        tiles.update(done=done, total=total)
        if stop_after_tiles and done >= stop_after_tiles:
            raise _StopAfterTiles

    if not stop_after_tiles:
        restorer.restore(image, qf=qf)
    if on_gpu:
        import torch

        torch.cuda.reset_peak_memory_stats(restorer.device.torch())
    times, completed = [], True
    for _ in range(repeats):
        _synchronize(restorer.device)
        started = time.perf_counter()
        try:
            restorer.restore(image, qf=qf, progress=progress)
        except _StopAfterTiles:
            completed = False
        _synchronize(restorer.device)
        times.append(time.perf_counter() - started)
    best = min(times)
    done = 1.0 if completed else tiles["done"] / max(1, tiles["total"])
    if on_gpu:
        peak, memory_kind = torch.cuda.max_memory_allocated(restorer.device.torch()) / 2**20, "GPU allocated"
    elif restorer.device.type == "mps":
        peak, memory_kind = peak_rss_mib(), "process RSS; Metal memory not counted"
    else:
        peak, memory_kind = peak_rss_mib(), "process RSS"
    return {
        "model": restorer.model_for(gray).name, "device": str(restorer.device),
        "precision": restorer.precision, "backend": restorer.backend, "qf": qf,
        "size": f"{width}x{height}", "tile": restorer.tile, "self_ensemble": self_ensemble,
        "seconds": best, "mp_per_s": width * height * done / 1e6 / best, "completed": completed,
        "tiles": f"{tiles['done']}/{tiles['total']}", "peak_memory_mib": peak, "memory_kind": memory_kind,
        "threads": threads_used(restorer.backend),
    }


def threads_used(backend: str) -> int:
    """The CPU threads the engine computes with: the budget set, else the engine's own default."""
    from fbcnn_plugins.core.threads import num_threads

    if num_threads() is not None:
        return num_threads()
    if backend == "pytorch":
        import torch

        return torch.get_num_threads()
    import openvino as ov

    return int(ov.Core().get_property("CPU", "INFERENCE_NUM_THREADS")) or (os.cpu_count() or 1)


def peak_rss_mib() -> float | None:
    """This process's peak resident memory (Linux reports KiB, macOS bytes; None where unknown, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure_in_child(**options: Any) -> dict[str, Any]:
    """``measure`` in a fresh interpreter, so its peak memory is its own; errors come back as RuntimeError."""
    # -P: the working directory (maybe a source checkout) must not shadow the installed package.
    done = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.cli.speed_probe", json.dumps(options)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"the measurement exited with status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _synchronize(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device.torch())


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
