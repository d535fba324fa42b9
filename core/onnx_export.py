"""FBCNN as an ONNX graph in the shape vs-mlrt's runtimes expect.

vs-mlrt (``core.ort.Model``, ``core.ov.Model``, ``core.trt.Model`` and its
``vsmlrt.inference`` wrapper) runs a graph with one 4-D float32 input of batch
1, whose channels are the planes of the clips it is given, one after the
other, and one output of 1 or 3 channels.  A network's extra control goes in
as one more constant plane: vs-mlrt's DPIR takes its strength that way.  So
the graph exported here takes

    input  (1, C + 1, H, W): the image's C channels (0..1), then one plane filled with QF / 100
    output (1, C, H, W):     the restored image

where C is 3 (RGB) or 1 (gray).  As in the ``fbcnn`` VapourSynth filter's YUV
mode, the network sees the image clamped to [0, 1], its output is clamped to
[0, 1], and whatever the input had outside that range (the chroma overshoot of
a YUV to RGB conversion) is added back, so that converting the result back to
YUV rebuilds the source's chroma.  The QF plane is averaged over the tile, so a
constant plane gives every tile the same strength.  H and W are dynamic and
need not be multiples of 8: the graph pads with replicated edges (as the
network does in PyTorch) and crops again, so the plugins may run whole frames
or any tile size.  ``fp16=True`` keeps float32 input and output (what the
plugins hand over) and computes in half precision inside; the QF is taken from
the plane in float32 first, since a half-precision sum over a whole frame
would overflow.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_target
from .network import SIZE_MULTIPLE, FBCNN
from .weights import LoadedModel

#: How the QF plane is scaled: its value is QF / QF_PLANE_SCALE (0.01 .. 1.0).
QF_PLANE_SCALE = 100.0
OPSET = 18
#: Largest difference from PyTorch an export may show on the check image (values in [0, 1]).
FP32_TOLERANCE, FP16_TOLERANCE = 1e-4, 2e-2
INPUT_NAME, OUTPUT_NAME = "input", "output"


class QFPlaneFBCNN(nn.Module):
    """An FBCNN whose QF arrives as the last input channel (value QF/100) instead of a separate tensor."""

    def __init__(self, network: FBCNN, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.network = network.to(dtype).eval()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        image, plane = x[:, :-1].float(), x[:, -1:]
        # The network's control is q = 1 - QF/100 (core.quality.qf_to_scalar).
        control = 1.0 - plane.float().mean(dim=(2, 3)) * (QF_PLANE_SCALE / 100.0)
        # The network sees [0, 1], as in training; what lies outside (chroma overshoot from a YUV
        # to RGB conversion) is given back afterwards, because the conversion back needs it.
        clamped = image.clamp(0.0, 1.0)
        # Padded with amounts that are zero for multiples of 8, so the graph has no branch on the size.
        padded = F.pad(clamped, (0, (-width) % SIZE_MULTIPLE, 0, (-height) % SIZE_MULTIPLE), mode="replicate")
        restored, _ = self.network(padded.to(self.dtype), control.to(self.dtype))
        return restored[..., :height, :width].float().clamp(0.0, 1.0) + (image - clamped)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    #: Largest difference between ONNX Runtime and PyTorch on a check image (None: onnxruntime not installed).
    max_difference: float | None


def qf_plane_value(qf: int) -> float:
    """The value to fill the QF plane with for a QF 1..100."""
    return float(qf) / QF_PLANE_SCALE


def export_onnx(
    loaded: LoadedModel, path: str | os.PathLike[str], *, fp16: bool = False, example_size: tuple[int, int] = (64, 64),
) -> ExportResult:
    """Write ``loaded`` as a vs-mlrt ONNX graph to ``path`` (atomically), checked against PyTorch where ORT is installed."""
    import onnx  # the onnx extra; imported here so the rest of the core never needs it

    path = Path(path)
    module = QFPlaneFBCNN(_cpu_copy(loaded.network), torch.float16 if fp16 else torch.float32)
    channels = loaded.in_channels
    example = torch.rand(1, channels + 1, *example_size)
    example[:, -1] = qf_plane_value(50)
    height = torch.export.Dim("height", min=8, max=16384)
    width = torch.export.Dim("width", min=8, max=16384)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            module.eval(), (example,), None, dynamo=True, opset_version=OPSET, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes={"x": {2: height, 3: width}},
        )
    model = program.model_proto
    # vs-mlrt reads the batch dimension as 1; say so rather than leave it symbolic.
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    for key, value in _metadata(loaded, fp16).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = (
        f"FBCNN {loaded.name}: input (1, {channels + 1}, H, W) = {channels} image channel(s) in [0, 1] and one plane "
        f"of QF/{QF_PLANE_SCALE:g}; output (1, {channels}, H, W) in [0, 1]"
    )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        onnx.save_model(model, str(tmp))
        difference = check_against_pytorch(tmp, loaded)
        if difference is not None and difference > (FP16_TOLERANCE if fp16 else FP32_TOLERANCE):
            raise RuntimeError(f"the exported graph differs from PyTorch by up to {difference:.3g}; nothing was written")
    return ExportResult(path, difference)


def check_against_pytorch(path: str | os.PathLike[str], loaded: LoadedModel) -> float | None:
    """Run the graph in ONNX Runtime and the network in PyTorch (fp32) on one odd-sized image; the largest difference.

    The odd size (not a multiple of 8) exercises the graph's own padding.  None when onnxruntime
    is not installed: the export is still valid, just not double-checked.
    """
    try:
        import onnxruntime
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, loaded.in_channels + 1, 44, 60, generator=generator)
    example[:, -1] = qf_plane_value(30)
    with torch.no_grad():
        expected = QFPlaneFBCNN(_cpu_copy(loaded.network)).eval()(example).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: example.numpy()})
    return float(abs(got - expected).max())


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress lines and notes about optional packages (torchvision) are not the caller's business."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
            warnings.simplefilter("ignore")
            try:
                yield
            finally:
                sink.close()
    finally:
        logger.setLevel(level)


def _cpu_copy(network: FBCNN) -> FBCNN:
    return copy.deepcopy(network).cpu().float().eval()


def _metadata(loaded: LoadedModel, fp16: bool) -> dict[str, str]:
    card: dict[str, Any] = loaded.card or {}
    return {
        "fbcnn_model": loaded.name,
        "fbcnn_config": loaded.config.name,
        "fbcnn_weights_sha256": str(card.get("sha256", "")),
        "fbcnn_color": "gray" if loaded.is_gray else "rgb",
        "fbcnn_qf_plane": f"QF/{QF_PLANE_SCALE:g}",
        "fbcnn_precision": "fp16" if fp16 else "fp32",
    }
