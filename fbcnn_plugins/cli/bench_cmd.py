"""``fbcnn bench``: how fast a model restores on this machine, and at what memory cost.

For picking a device, engine, precision and tile size before a long batch: every
setting asked for is measured in the same run, so the ratios between them hold
even on a noisy machine where the absolute numbers drift.  Without options it
compares every engine and precision worth trying on this machine against PyTorch
fp32 and says which one the default (``auto``) picks.
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
    parser.add_argument("--backend", nargs="+", choices=["pytorch", "openvino"],
                        help="engines to compare (default: every engine usable here when --precision is not given, "
                        "else the default engine)")
    parser.add_argument("--qf", default="30", metavar="N|auto",
                        help="QF driving the network (default: 30); auto also measures predicting it")
    parser.add_argument("--size", nargs=2, type=int, default=[1024, 768], metavar=("W", "H"),
                        help="image size in pixels (default: 1024 768)")
    parser.add_argument("--tile", type=int, nargs="+", help="tile sizes to compare, multiples of 8 (default: 512; 2048 on a CUDA GPU)")
    parser.add_argument("--self-ensemble", action="store_true", help="measure with the 8-fold self-ensemble")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the best counts (default: 3)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for the engine (default: the engine's own)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.cli.speed_probe import measure_in_child
    from fbcnn_plugins.core.catalog import load_model
    from fbcnn_plugins.core.device import DeviceError, precision_name, resolve_device, resolve_precision
    from fbcnn_plugins.core.quality import parse_qf
    from fbcnn_plugins.core.restorer import resolve_backend
    from fbcnn_plugins.core.tiling import check_tiling, default_overlap, default_tile

    width, height = args.size
    try:
        if width < 8 or height < 8:
            raise ValueError(f"--size {width} {height}: both sides must be at least 8 pixels")
        if args.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
        for tile in args.tile or []:
            check_tiling(tile, default_overlap(tile))
        qf = parse_qf(args.qf)
        if qf not in ("auto", "predicted") and not isinstance(qf, int):
            raise ValueError(f"--qf must be a number or auto, got {args.qf!r}")
        device = resolve_device(args.device)
        tiles = args.tile or [default_tile(device.type)]
        default_precision = resolve_precision(None, device)
        default = (resolve_backend("auto", device, default_precision), precision_name(default_precision))
        settings = settings_to_compare(device, args.backend, args.precision, default)
        for backend, precision in settings:
            resolve_backend(backend, device, resolve_precision(precision, device))
        loaded = load_model(args.model, gray=args.gray)  # a missing model or bad file is reported here, once
        if loaded.is_gray and not args.gray:
            raise ValueError(f"model {loaded.name!r} is a gray model; add --gray")
    except (ValueError, FileNotFoundError, DeviceError) as error:
        print(f"fbcnn bench: {error}", file=sys.stderr)
        return 2

    rows, failures = [], 0
    for tile in tiles:
        for backend, precision in settings:
            try:
                row = measure_in_child(
                    model=args.model, gray=args.gray, device=str(device), precision=precision, backend=backend,
                    qf=qf, width=width, height=height, tile=tile, self_ensemble=args.self_ensemble,
                    repeats=args.repeats, threads=args.threads,
                )
            except RuntimeError as error:
                # One setting that does not fit (a GPU out of memory at a large tile) must not hide the others.
                print(f"fbcnn bench: {backend} {precision} at tile {tile} on {device} failed: {error}", file=sys.stderr)
                failures += 1
                continue
            row["default"] = (row["backend"], row["precision"]) == default and tile == default_tile(device.type)
            rows.append(row)
    # Ratios against PyTorch fp32 (the reference every other setting is checked against), else the first row.
    baseline = next((r for r in rows if (r["backend"], r["precision"]) == ("pytorch", "fp32")), rows[0] if rows else None)
    for row in rows:
        row["speed_ratio"] = row["mp_per_s"] / baseline["mp_per_s"]
    status = 1 if failures else 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return status
    if not rows:
        return status
    first = rows[0]
    reference = f"{baseline['backend']} {baseline['precision']}"
    print(f"{first['model']} on {first['device']}, {first['size']} image, QF {args.qf}, best of {args.repeats}, "
          f"{first['threads']} CPU threads{', self-ensemble' if args.self_ensemble else ''}")
    print(f"{'engine':<10}{'precision':<10}{'tile':>6}{'MP/s':>9}{'s/image':>9}{'vs ' + reference:>{max(9, len(reference) + 5)}}  peak memory")
    for row in rows:
        memory = "unknown" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f} MiB ({row['memory_kind']})"
        mark = "  <- default" if row["default"] else ""
        print(f"{row['backend']:<10}{row['precision']:<10}{row['tile']:>6}{row['mp_per_s']:>9.3g}{row['seconds']:>9.2f}"
              f"{row['speed_ratio']:>{max(9, len(reference) + 5) - 1}.2f}x  {memory}{mark}")
    print(f"default here: {default[0]} {default[1]} (fbcnn restore, GIMP and VapourSynth use it unless told otherwise)")
    return status


def settings_to_compare(device, backends: list[str] | None, precisions: list[str] | None,
                        default: tuple[str, str]) -> list[tuple[str, str]]:
    """(engine, precision) pairs to measure: PyTorch fp32 first (the reference), the default among them.

    With neither option given: every engine usable here at every precision worth comparing.
    With only --precision: those precisions on the default engine.
    """
    from fbcnn_plugins.core.openvino_backend import openvino_installed, openvino_suits_this_machine
    from fbcnn_plugins.core.torch_extra import torch_installed

    if backends is None:
        if precisions is not None:
            backends = [default[0]]
        else:
            openvino_here = device.type == "cpu" and (openvino_suits_this_machine() or default[0] == "openvino")
            backends = (["pytorch"] if torch_installed() else []) + (["openvino"] if openvino_here else [])
    precisions = precisions or default_precisions(device)
    pairs = [(b, p) for b in backends for p in precisions if not (b == "openvino" and p == "fp16")]
    if not pairs:
        raise ValueError("OpenVINO runs in fp32 or bf16; fp16 is for GPUs through PyTorch")
    return pairs


def default_precisions(device) -> list[str]:
    """Every precision worth comparing here: on a CPU bf16 only where it has bf16 hardware (else
    PyTorch emulates it, many times slower than fp32); on a GPU fp16 and, where supported, bf16."""
    from fbcnn_plugins.core.device import cpu_has_native_bf16

    if device.type == "cuda":
        import torch

        return ["fp32", "fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    if device.type == "cpu" and cpu_has_native_bf16():
        return ["fp32", "bf16"]
    return ["fp32"]
