"""``fbcnn export-onnx``: a model as an ONNX graph for vs-mlrt's runtimes (ORT, OpenVINO, TensorRT).

The graph's layout (image channels plus one QF/100 plane in, restored image
out) is described in :mod:`fbcnn_plugins.core.onnx_export`; docs/vapoursynth.md
shows the vs-mlrt calls that run it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export-onnx", help="write a model as an ONNX graph for vs-mlrt (core.ort / core.ov / core.trt)",
        description="Write MODEL as an ONNX graph for vs-mlrt: input = the image's channels (RGB or gray, float "
                    "0..1) plus one plane filled with QF/100; output = the restored image. Any frame or tile size.",
    )
    parser.add_argument("model", metavar="MODEL", help="registered model name (see `fbcnn models`) or weights file")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--fp16", action="store_true",
                        help="compute in half precision inside the graph (input and output stay float32)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fbcnn_plugins.core.catalog import load_model, resolve_model_path

    prog = "fbcnn export-onnx"
    try:
        import onnx  # noqa: F401  (the optional extra; say so before loading anything)
    except ImportError:
        print(f"{prog}: needs the onnx extra: pip install 'fbcnn-plugins[onnx]'", file=sys.stderr)
        return 2
    from fbcnn_plugins.core.onnx_export import export_onnx

    if args.output.suffix.lower() != ".onnx":
        print(f"{prog}: {args.output}: the output name must end in .onnx", file=sys.stderr)
        return 2
    try:
        source = resolve_model_path(args.model)
        if args.output.resolve() == source.resolve():
            print(f"{prog}: {args.output}: is the model file itself; choose another output", file=sys.stderr)
            return 2
        loaded = load_model(args.model)
    except (ValueError, OSError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    if not args.output.parent.is_dir():
        print(f"{prog}: {args.output}: folder {args.output.parent} does not exist", file=sys.stderr)
        return 2
    try:
        result = export_onnx(loaded, args.output, fp16=args.fp16)
    except (OSError, RuntimeError) as error:
        print(f"{prog}: {args.output}: {error}", file=sys.stderr)
        return 1
    kind = "gray" if loaded.is_gray else "RGB"
    print(f"{result.path}: {loaded.name} ({kind}, {'fp16' if args.fp16 else 'fp32'}); "
          f"input (1, {loaded.in_channels + 1}, H, W) = {kind} + QF/100 plane, output (1, {loaded.in_channels}, H, W)")
    if result.max_difference is None:
        print(f"{prog}: onnxruntime is not installed, so the graph was not checked against PyTorch", file=sys.stderr)
    else:
        print(f"checked with ONNX Runtime: largest difference from PyTorch {result.max_difference:.2g}")
    return 0
