"""FBCNN as OpenVINO graphs, built from the weights' tensors with OpenVINO's graph API.

No PyTorch and no stored graph file: the layers of :class:`~fbcnn_plugins.core.network.FBCNN`
are written out here once more as OpenVINO operations (convolutions, transposed convolutions,
the QF embedding that scales and shifts the decoder's residual branches) and filled with the
tensors of the safetensors file, so the weights are the only copy of the network that ships.
Building takes milliseconds.  Names of tensors are the PyTorch module's state-dict keys, so
the two definitions are checked against each other by the tests (same output to above 50 dB).

Inputs are padded to a multiple of 8 before they reach a graph; shapes are dynamic in batch,
height and width, so one compiled graph serves every tile and frame size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset15 as ops

#: Graph variants: the restoration at a given QF; a whole image restored at its own rounded
#: predicted QF in one pass; the encoder and QF branch alone, giving the summed QF features.
GRAPHS = ("restore", "blind", "quality")


class GraphBuilder:
    """Turns state-dict tensors into OpenVINO nodes; remembers which tensors it used."""

    def __init__(self, tensors: Mapping[str, np.ndarray], blocks: int, global_residual: bool) -> None:
        self.tensors = tensors
        self.blocks = blocks
        self.global_residual = global_residual
        self.used: set[str] = set()

    # -- layers ------------------------------------------------------------------
    def const(self, key: str) -> Any:
        self.used.add(key)
        return ops.constant(np.ascontiguousarray(self.tensors[key], dtype=np.float32))

    def bias(self, node: Any, key: str) -> Any:
        value = np.asarray(self.tensors[key], dtype=np.float32).reshape(1, -1, 1, 1)
        self.used.add(key)
        return ops.add(node, ops.constant(value))

    def conv(self, x: Any, prefix: str, stride: int = 1) -> Any:
        """nn.Conv2d: 3x3 with padding 1, or 2x2 with stride 2 (the encoder's downsampling)."""
        kernel = self.tensors[f"{prefix}.weight"].shape[-1]
        pad = kernel // 2 if stride == 1 else 0
        y = ops.convolution(x, self.const(f"{prefix}.weight"), [stride, stride], [pad, pad], [pad, pad], [1, 1])
        return self.bias(y, f"{prefix}.bias")

    def up(self, x: Any, prefix: str) -> Any:
        """nn.ConvTranspose2d with kernel 2 and stride 2 (its weights are laid out as OpenVINO's)."""
        y = ops.convolution_backprop_data(x, self.const(f"{prefix}.weight"), strides=[2, 2],
                                         pads_begin=[0, 0], pads_end=[0, 0], dilations=[1, 1])
        return self.bias(y, f"{prefix}.bias")

    def linear(self, x: Any, prefix: str) -> Any:
        y = ops.matmul(x, self.const(f"{prefix}.weight"), False, True)
        self.used.add(f"{prefix}.bias")
        return ops.add(y, ops.constant(np.asarray(self.tensors[f"{prefix}.bias"], dtype=np.float32)))

    def residual_branch(self, x: Any, prefix: str) -> Any:
        return self.conv(ops.relu(self.conv(x, f"{prefix}.res.0")), f"{prefix}.res.2")

    def res_blocks(self, x: Any, prefix: str, count: int, start: int = 0) -> Any:
        for i in range(start, start + count):
            x = ops.add(x, self.residual_branch(x, f"{prefix}.{i}"))
        return x

    # -- the network's parts -------------------------------------------------------
    def encode(self, x: Any) -> list[Any]:
        """The encoder's outputs as FBCNN.encode gives them: input, four skips, the bottleneck."""
        x1 = self.conv(x, "m_head")
        skips = [x1]
        for stage in ("m_down1", "m_down2", "m_down3"):
            y = self.res_blocks(skips[-1], stage, self.blocks)
            skips.append(self.conv(y, f"{stage}.{self.blocks}", stride=2))
        return [x, *skips, self.res_blocks(skips[-1], "m_body_encoder", self.blocks)]

    def quality_features(self, bottleneck: Any) -> Any:
        """The QF branch's residual blocks, before its global pooling."""
        return self.res_blocks(bottleneck, "qf_pred", self.blocks)

    def qf_head(self, pooled: Any) -> Any:
        """The QF head after pooling, q = 1 - QF/100 (layers blocks+2.. of ``qf_pred``)."""
        first = self.blocks + 2
        hidden = ops.relu(self.linear(pooled, f"qf_pred.{first}"))
        hidden = ops.relu(self.linear(hidden, f"qf_pred.{first + 2}"))
        return ops.sigmoid(self.linear(hidden, f"qf_pred.{first + 4}"))

    def decode(self, features: list[Any], control: Any) -> Any:
        x, x1, x2, x3, x4, bottleneck = features
        embedding = control
        for index in (0, 2, 4):
            embedding = ops.relu(self.linear(embedding, f"qf_embed.{index}"))
        y = ops.add(self.res_blocks(bottleneck, "m_body_decoder", self.blocks), x4)
        for level, skip in ((3, x3), (2, x2), (1, x1)):
            stage = f"m_up{level}"
            gamma = ops.unsqueeze(ops.sigmoid(self.linear(embedding, f"to_gamma_{level}.0")), [2, 3])
            beta = ops.unsqueeze(ops.tanh(self.linear(embedding, f"to_beta_{level}.0")), [2, 3])
            y = self.up(y, f"{stage}.0")
            for i in range(1, self.blocks + 1):
                y = ops.add(ops.add(y, ops.multiply(gamma, self.residual_branch(y, f"{stage}.{i}"))), beta)
            y = ops.add(y, skip)
        y = self.conv(y, "m_tail")
        return ops.add(y, x) if self.global_residual else y


def build_graphs(tensors: Mapping[str, np.ndarray], in_channels: int, blocks: int, global_residual: bool) -> dict[str, Any]:
    """The three graphs of one network; raises ValueError if the tensors do not fit FBCNN."""
    image = ov.PartialShape([-1, in_channels, -1, -1])
    graphs: dict[str, Any] = {}
    builder = GraphBuilder(tensors, blocks, global_residual)
    try:
        x = ops.parameter(image, ov.Type.f32, name="x")
        control = ops.parameter(ov.PartialShape([-1, 1]), ov.Type.f32, name="control")
        graphs["restore"] = ov.Model([builder.decode(builder.encode(x), control)], [x, control], "fbcnn_restore")

        x = ops.parameter(image, ov.Type.f32, name="x")
        features = builder.encode(x)
        pooled = ops.reduce_mean(builder.quality_features(features[-1]), [2, 3], False)
        predicted = builder.qf_head(pooled)
        # clamp_qf: round half to even (as Python's round does), then 1..100; the decoder runs at that QF.
        qf = ops.clamp(ops.round(ops.multiply(ops.subtract(ops.constant(np.float32(1.0)), predicted),
                                              ops.constant(np.float32(100.0))), "half_to_even"), 1.0, 100.0)
        used_control = ops.subtract(ops.constant(np.float32(1.0)), ops.divide(qf, ops.constant(np.float32(100.0))))
        graphs["blind"] = ov.Model([builder.decode(features, used_control), predicted, qf], [x], "fbcnn_blind")

        x = ops.parameter(image, ov.Type.f32, name="x")
        quality_sum = ops.reduce_sum(builder.quality_features(builder.encode(x)[-1]), [2, 3], False)
        graphs["quality"] = ov.Model([quality_sum], [x], "fbcnn_quality")
    except KeyError as missing:
        raise ValueError(f"not an FBCNN state dict: tensor {missing} is missing") from None
    except RuntimeError as error:  # OpenVINO's shape inference: a tensor of the wrong shape
        raise ValueError(f"the tensors do not fit the FBCNN network: {str(error).strip().splitlines()[0]}") from None
    for graph in graphs.values():
        _name_deterministically(graph)
    return graphs


def _name_deterministically(model: Any) -> None:
    """Name every operation by its place in the graph.

    OpenVINO numbers new operations and output tensors from a process-wide counter, and its
    compiled-model cache keys on the graph including those names: without this, every build would
    compile anew and add another entry to the cache.
    """
    for index, op in enumerate(model.get_ordered_ops()):
        op.set_friendly_name(f"{op.get_type_name()}_{index}")
    for index, output in enumerate(model.outputs):
        output.get_tensor().set_names({f"output_{index}"})

