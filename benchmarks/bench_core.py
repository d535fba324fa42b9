"""Speed and memory of the core restorer per network config and precision (a benchmark, not a test).

Each measurement runs in a fresh child process, so its peak RSS is its own.
Speed is megapixels per second through ``Restorer.restore`` (tiling and
conversions included) on a photo-sized input, after one warm-up call.

    python benchmarks/bench_core.py                      # all configs, fp32 and bf16, 512x512
    python benchmarks/bench_core.py --configs small tiny --size 1024 768
    python benchmarks/bench_core.py --memory-24mp        # peak RSS on a 6000x4000 photo

``--memory-24mp`` restores a 24 MP image with the default tile size.  With
the 72 M-parameter paper config a full pass takes most of an hour on a
2-core CPU, so for that config the child stops after ``--tiles`` tiles: the
whole-image buffers are allocated before the first tile and every later tile
repeats the same allocations, and the in-place finish adds only the 8-bit
output (measured end to end with the compact configs, which run to the end).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CHILD = "--child"


class _StopAfterTiles(Exception):
    pass


def child(config: str, precision: str, width: int, height: int, repeats: int, stop_after: int, threads: int) -> dict:
    import numpy as np
    import torch

    from fbcnn_plugins.core.configs import create_network, get_config
    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.core.weights import LoadedModel

    if threads:
        torch.set_num_threads(threads)
    network = create_network(config, 3).eval()
    model = LoadedModel(network, f"random-{config}", get_config(config), 3)
    restorer = Restorer(model, device="cpu", precision=None if precision == "fp32" else precision)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tiles_done = {"n": 0, "total": 0}

    def progress(done: int, total: int) -> None:
        tiles_done.update(n=done, total=total)
        if stop_after and done >= stop_after:
            raise _StopAfterTiles

    if not stop_after:
        restorer.restore(image[:256, :256], qf=30)  # warm-up: one-time allocations and kernel selection
    times = []
    completed = True
    for _ in range(repeats):
        started = time.perf_counter()
        try:
            restorer.restore(image, qf=30, progress=progress)
        except _StopAfterTiles:
            completed = False
        times.append(time.perf_counter() - started)
    best = min(times)
    pixels = width * height if completed else width * height * tiles_done["n"] / max(1, tiles_done["total"])
    return {
        "config": config, "precision": precision, "size": f"{width}x{height}",
        "mp_per_s": pixels / 1e6 / best, "seconds": best, "completed": completed,
        "tiles": f"{tiles_done['n']}/{tiles_done['total']}",
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mib": baseline_kib / 1024, "threads": torch.get_num_threads(),
    }


def run_child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, CHILD, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        config, precision, width, height, repeats, stop_after, threads = sys.argv[2:9]
        print(json.dumps(child(config, precision, int(width), int(height), int(repeats), int(stop_after), int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["paper", "base", "small", "tiny"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--size", nargs=2, type=int, default=[512, 512], metavar=("W", "H"))
    parser.add_argument("--bf16-size", nargs=2, type=int, default=None, metavar=("W", "H"),
                        help="image size for bf16 runs (default: --size)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--memory-24mp", action="store_true", help="peak RSS on a 6000x4000 photo at fp32")
    parser.add_argument("--tiles", type=int, default=6, help="with --memory-24mp: tiles run for the paper config")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = []
    if args.memory_24mp:
        for config in args.configs:
            stop = args.tiles if config == "paper" else 0
            rows.append(run_child([config, "fp32", "6000", "4000", "1", str(stop), str(args.threads)]))
    else:
        for config in args.configs:
            for precision in args.precisions:
                width, height = args.bf16_size if precision == "bf16" and args.bf16_size else args.size
                repeats = 1 if config == "paper" else args.repeats
                rows.append(run_child([config, precision, str(width), str(height), str(repeats), "0", str(args.threads)]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'config':<7} {'prec':<5} {'size':<10} {'MP/s':>8} {'s/image':>8} {'peak RSS MiB':>13} {'tiles':>7}")
    for r in rows:
        note = "" if r["completed"] else "  (stopped early, see --help)"
        print(f"{r['config']:<7} {r['precision']:<5} {r['size']:<10} {r['mp_per_s']:>8.3g} {r['seconds']:>8.2f} "
              f"{r['peak_rss_mib']:>13.0f} {r['tiles']:>7}{note}")
    print(f"threads: {rows[0]['threads']}")


if __name__ == "__main__":
    main()
