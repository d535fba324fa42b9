"""What predicting the QF costs on each engine, per tile (a benchmark, not a test).

A restoration at a given QF runs the network once.  With the QF predicted, the Restorer
either runs the one-tile graph that predicts and restores together (OpenVINO, images of
one tile), or encodes a few sampled tiles, pools their QF features and decodes the same
features (both engines, larger images).  This times those passes against the plain one on
one tile, interleaved in one process so that a busy machine's drift cancels, and prints the
median of each relative to the plain pass.

    python benchmarks/bench_qf_cost.py                  # 504x384, a 1080p frame's tile at tile 512
    python benchmarks/bench_qf_cost.py --size 512 512 --runs 9
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fbcnn_plugins.core.catalog import load_model
from fbcnn_plugins.core.device import precision_name, resolve_precision, torch_dtype


def timings(passes: dict, runs: int) -> dict[str, float]:
    for run in passes.values():  # warm-up: the first call at a shape selects kernels
        run(), run()
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(runs):
        for name, run in passes.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs=2, type=int, default=[504, 384], metavar=("W", "H"))
    parser.add_argument("--precision", default=None, help="fp32 or bf16 (default: this machine's default)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    width, height = args.size
    precision = resolve_precision(args.precision, "cpu")
    dtype = torch_dtype(precision)
    loaded = load_model(None, gray=False)
    network = loaded.network.eval()
    x = torch.rand(1, 3, height, width)
    control = torch.full((1, 1), 0.8)

    torch_network = network.to(dtype).to(memory_format=torch.channels_last)
    tx = x.to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        rows = {"pytorch": timings({
            "given QF": lambda: torch_network.restore(tx, control.to(dtype)),
            "encode, pool, decode": lambda: torch_network.decode_tile(torch_network.encode_tile(tx), control.to(dtype)),
        }, args.runs)}
    try:
        from fbcnn_plugins.core.openvino_backend import OpenVINONetwork, openvino_unavailable

        if openvino_unavailable() is None:
            ov = OpenVINONetwork.from_model(loaded, precision)
            x_np, control_np = x.numpy(), control.numpy()
            rows["openvino"] = timings({
                "given QF": lambda: ov.restore(x_np, control_np),
                "QF graph alone (then given QF)": lambda: ov.quality_feature_sum(x_np),
                "one-tile graph, QF predicted": lambda: ov.restore_predicted(x_np),
            }, args.runs)
    except ImportError:
        pass
    print(f"{width}x{height} tile, {precision_name(precision)}, median of {args.runs}, {torch.get_num_threads()} threads")
    for engine, seconds in rows.items():
        base = seconds["given QF"]
        for name, value in seconds.items():
            print(f"{engine:<9} {name:<30} {value:7.3f} s  {value / base:5.2f}x")


if __name__ == "__main__":
    main()
