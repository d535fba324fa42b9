"""Speed and memory of the core restorer per network config and precision (a benchmark, not a test).

Each measurement runs in a fresh child process, so its peak RSS is its own.
Speed is megapixels per second through ``Restorer.restore`` (tiling and
conversions included) on a photo-sized input, after one warm-up call.

    python benchmarks/bench_core.py                      # all configs, fp32 and bf16, 512x512
    python benchmarks/bench_core.py --configs small tiny --size 1024 768
    python benchmarks/bench_core.py --configs small --backends pytorch openvino
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

from fbcnn_plugins.cli.speed_probe import measure_in_child


def measure_config(config: str, precision: str, width: int, height: int, repeats: int, stop_after: int, threads: int,
                   backend: str = "pytorch") -> dict:
    """A randomly initialised ``config`` (speed and memory do not depend on the weights), in its own process."""
    return measure_in_child(config=config, device="cpu", precision=precision, backend=backend, width=width,
                            height=height, repeats=repeats, threads=threads, stop_after_tiles=stop_after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["paper", "base", "small", "tiny"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--backends", nargs="+", default=["pytorch"], choices=["pytorch", "openvino"])
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
            rows.append(measure_config(config, "fp32", 6000, 4000, 1, stop, args.threads, args.backends[0]))
    else:
        for config in args.configs:
            for backend in args.backends:
                for precision in args.precisions:
                    width, height = args.bf16_size if precision == "bf16" and args.bf16_size else args.size
                    repeats = 1 if config == "paper" else args.repeats
                    rows.append(measure_config(config, precision, width, height, repeats, 0, args.threads, backend))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'config':<7} {'engine':<9} {'prec':<5} {'size':<10} {'MP/s':>8} {'s/image':>8} {'peak RSS MiB':>13} {'tiles':>7}")
    for r in rows:
        note = "" if r["completed"] else "  (stopped early, see --help)"
        print(f"{r['model'].removeprefix('random-'):<7} {r['backend']:<9} {r['precision']:<5} {r['size']:<10} {r['mp_per_s']:>8.3g} "
              f"{r['seconds']:>8.2f} {r['peak_memory_mib'] or float('nan'):>13.0f} {r['tiles']:>7}{note}")
    print(f"threads: {rows[0]['threads']}")


if __name__ == "__main__":
    main()
