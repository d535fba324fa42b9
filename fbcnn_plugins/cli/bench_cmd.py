"""``fbcnn bench``: how fast a model restores on this machine, and at what memory cost.

For picking a device, precision and tile size before a long batch: every
setting asked for is measured in the same run, so the ratios between them hold
even on a noisy machine where the absolute numbers drift.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="measure restoration speed and peak memory on this machine")
    parser.add_argument("--model", help="registered name or weights path (default: the bundled colour model, or gray with --gray)")
    parser.add_argument("--gray", action="store_true", help="measure a gray image (the bundled gray model by default)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--precision", nargs="+", choices=["fp32", "fp16", "bf16"],
                        help="precisions to compare (default: fp32, plus bf16 on CPUs with bf16 hardware, fp16 and bf16 on CUDA GPUs)")
    parser.add_argument("--size", nargs=2, type=int, default=[1024, 768], metavar=("W", "H"),
                        help="image size in pixels (default: 1024 768)")
    parser.add_argument("--tile", type=int, nargs="+", help="tile sizes to compare, multiples of 8 (default: 512)")
    parser.add_argument("--self-ensemble", action="store_true", help="measure with the 8-fold self-ensemble")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the best counts (default: 3)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch (default: PyTorch's own)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.benchmark import measure_in_child
    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.core.device import DeviceError, resolve_device, resolve_precision
    from fbcnn_plugins.core.tiling import DEFAULT_TILE, check_tiling, default_overlap

    width, height = args.size
    tiles = args.tile or [DEFAULT_TILE]
    try:
        if width < 8 or height < 8:
            raise ValueError(f"--size {width} {height}: both sides must be at least 8 pixels")
        if args.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
        for tile in tiles:
            check_tiling(tile, default_overlap(tile))
        device = resolve_device(args.device)
        precisions = args.precision or default_precisions(device)
        for precision in precisions:
            resolve_precision(None if precision == "fp32" else precision, device)
        loaded = load_model(args.model, gray=args.gray)  # a missing model or bad file is reported here, once
        if loaded.is_gray and not args.gray:
            raise ValueError(f"model {loaded.name!r} is a gray model; add --gray")
    except (ValueError, FileNotFoundError, DeviceError) as error:
        print(f"fbcnn bench: {error}", file=sys.stderr)
        return 2

    rows, failures = [], 0
    for tile in tiles:
        for precision in precisions:
            try:
                row = measure_in_child(
                    model=args.model, gray=args.gray, device=str(device), precision=precision, width=width,
                    height=height, tile=tile, self_ensemble=args.self_ensemble, repeats=args.repeats,
                    threads=args.threads,
                )
            except RuntimeError as error:
                # One setting that does not fit (a GPU out of memory at a large tile) must not hide the others.
                print(f"fbcnn bench: {precision} at tile {tile} on {device} failed: {error}", file=sys.stderr)
                failures += 1
                continue
            row["speed_ratio"] = row["mp_per_s"] / rows[0]["mp_per_s"] if rows else 1.0
            rows.append(row)
    status = 1 if failures else 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return status
    if not rows:
        return status
    first = rows[0]
    print(f"{first['model']} on {first['device']}, {first['size']} image, best of {args.repeats}, "
          f"{first['threads']} CPU threads{', self-ensemble' if args.self_ensemble else ''}")
    print(f"{'precision':<10}{'tile':>6}{'MP/s':>9}{'s/image':>9}{'vs first':>9}  peak memory")
    for row in rows:
        memory = "unknown" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f} MiB ({row['memory_kind']})"
        print(f"{row['precision']:<10}{row['tile']:>6}{row['mp_per_s']:>9.3g}{row['seconds']:>9.2f}"
              f"{row['speed_ratio']:>8.2f}x  {memory}")
    return status


def default_precisions(device) -> list[str]:
    """Every precision worth comparing here: on a CPU bf16 only where it has bf16 hardware (else
    PyTorch emulates it, many times slower than fp32); on a GPU fp16 and, where supported, bf16."""
    import torch

    from fbcnn_plugins.core.device import cpu_has_native_bf16

    if device.type == "cuda":
        return ["fp32", "fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    if device.type == "cpu" and cpu_has_native_bf16():
        return ["fp32", "bf16"]
    return ["fp32"]
