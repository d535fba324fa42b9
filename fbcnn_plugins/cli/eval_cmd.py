"""``fbcnn eval``: PSNR, SSIM and PSNR-B of JPEG inputs and restored outputs on a folder of clean images."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval", help="measure restoration quality on clean images compressed with libjpeg",
        description="Compress clean images with libjpeg, restore them, and report mean PSNR, SSIM and PSNR-B "
        "(color: RGB; --gray: 8-bit MATLAB-style Y) of the JPEG input and the restored output.",
    )
    parser.add_argument("--images", nargs="+", required=True, type=Path, metavar="DIR", help="folders of clean images")
    parser.add_argument("--qf", nargs="+", type=int, default=[10, 20, 30, 40], help="single-JPEG qualities")
    parser.add_argument("--double", nargs=2, type=int, metavar=("QF1", "QF2"),
                        help="evaluate double JPEG (QF1 then QF2) instead of single JPEG")
    parser.add_argument("--shift", nargs=2, type=int, default=[0, 0], metavar=("ROWS", "COLS"),
                        help="grid shift between the two compressions of --double (0..7)")
    parser.add_argument("--gray", action="store_true", help="evaluate on the Y channel with a gray model")
    parser.add_argument("--model", metavar="NAME|PATH", help="model to evaluate (default: the bundled one)")
    parser.add_argument("--qf-mode", choices=["predicted", "given", "dominant"], default="predicted",
                        help="which QF drives the network: the network's prediction, the true (smaller) QF, "
                        "or the FBCNN-D estimate from the pixels")
    parser.add_argument("--self-ensemble", action="store_true", help="restore with the 8-transform self-ensemble")
    parser.add_argument("--jpeg-only", action="store_true", help="only report the JPEG input's scores")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                        help="compute precision (default: auto, the fastest the hardware computes natively)")
    parser.add_argument("--backend", choices=["auto", "pytorch", "openvino"], default="auto",
                        help="engine (default: auto, OpenVINO on x86 CPUs where installed)")
    parser.add_argument("--tile", type=int, help="tile size (default: the restorer's)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.core.device import precision_name
    from fbcnn_plugins.core.restorer import Restorer
    from fbcnn_plugins.training.evaluation import Condition, evaluate, load_eval_images

    if args.double:
        if not all(0 <= s <= 7 for s in args.shift):
            print("fbcnn eval: --shift values must be in 0..7", file=sys.stderr)
            return 2
        conditions = [Condition(args.double[0], args.double[1], tuple(args.shift))]
    else:
        conditions = [Condition(qf) for qf in args.qf]
    if not all(1 <= c.qf <= 100 and (c.qf2 is None or 1 <= c.qf2 <= 100) for c in conditions):
        print("fbcnn eval: qualities must be in 1..100", file=sys.stderr)
        return 2
    try:
        images = load_eval_images(args.images, args.gray, args.limit)
        restorer = None if args.jpeg_only else Restorer(
            args.model, device=args.device, tile=args.tile or None, self_ensemble=args.self_ensemble,
            precision=args.precision, backend=args.backend,
        )
        if restorer is not None:
            model = restorer.model_for(args.gray)
            if args.gray != model.is_gray:
                kind = "gray" if model.is_gray else "color"
                raise ValueError(f"model {model.name!r} is a {kind} model; {'drop' if model.is_gray else 'add'} --gray")
    except (FileNotFoundError, ValueError) as error:
        print(f"fbcnn eval: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = evaluate(images, conditions, restorer, args.qf_mode)
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({
            "images": [str(p) for p in args.images], "count": len(images), "gray": args.gray,
            "model": None if restorer is None else restorer.model_for(args.gray).name, "qf_mode": args.qf_mode,
            "self_ensemble": args.self_ensemble, "seconds": seconds, "results": [r.to_dict() for r in results],
            "precision": None if restorer is None else precision_name(restorer.precision),
            "backend": None if restorer is None else restorer.backend,
        }, indent=2))
        return 0
    space = "Y (BT.601, 16..235)" if args.gray else "RGB"
    print(f"{len(images)} images, {space}, QF driven by: {args.qf_mode}" + (", self-ensemble" if args.self_ensemble else ""))
    header = f"{'condition':<28} {'JPEG PSNR':>9} {'SSIM':>6} {'PSNR-B':>7}"
    if restorer is not None:
        header += f" | {'out PSNR':>8} {'SSIM':>6} {'PSNR-B':>7} {'gain':>6} {'QF used':>7}"
    print(header)
    for r in results:
        line = f"{r.condition.label:<28} {r.jpeg['psnr']:>9.2f} {r.jpeg['ssim']:>6.4f} {r.jpeg['psnr_b']:>7.2f}"
        if restorer is not None:
            out = r.restored
            line += (f" | {out['psnr']:>8.2f} {out['ssim']:>6.4f} {out['psnr_b']:>7.2f} "
                     f"{out['psnr'] - r.jpeg['psnr']:>+6.2f} {r.qf_used:>7.1f}")
        print(line)
    print(f"{seconds:.1f} s")
    return 0
