"""Named network configurations, in the manner of timm's model registry.

A config fixes the architecture only (widths, depth, QF-embedding width); the
number of image channels is chosen when the network is built, because every
config exists in a color and a gray flavour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # PyTorch is imported where networks are built, so listing configs stays instant
    import torch

    from .network import FBCNN


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    channels: tuple[int, int, int, int]
    blocks: int
    embed_dim: int
    global_residual: bool = False
    summary: str = ""

    def build(self, in_channels: int = 3) -> FBCNN:
        from .network import FBCNN

        return FBCNN(
            in_channels=in_channels, channels=self.channels, blocks=self.blocks, embed_dim=self.embed_dim,
            global_residual=self.global_residual,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data


_REGISTRY: dict[str, NetworkConfig] = {}


def register_config(config: NetworkConfig) -> NetworkConfig:
    """Add a config to the registry; names are unique so saved weights stay unambiguous."""
    if config.name in _REGISTRY and _REGISTRY[config.name] != config:
        raise ValueError(f"network config {config.name!r} is already registered with other values")
    _REGISTRY[config.name] = config
    return config


def get_config(name: str) -> NetworkConfig:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown network config {name!r}; known configs: {known}") from None


def list_configs() -> list[NetworkConfig]:
    return list(_REGISTRY.values())


def create_network(config: str | NetworkConfig, in_channels: int = 3) -> FBCNN:
    """Build a randomly initialised network from a registered config or a config object."""
    if isinstance(config, str):
        config = get_config(config)
    return config.build(in_channels)


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[NetworkConfig, int]:
    """Infer the architecture and the image channel count from tensor shapes.

    This is what lets users drop in checkpoints whose config was never written
    down, such as the authors' model-zoo files.
    """
    try:
        head = state_dict["m_head.weight"]
        blocks = sum(1 for key in state_dict if key.startswith("m_down1.") and key.endswith(".res.0.weight"))
        c1 = int(head.shape[0])
        c2 = int(state_dict[f"m_down1.{blocks}.weight"].shape[0])
        c3 = int(state_dict[f"m_down2.{blocks}.weight"].shape[0])
        c4 = int(state_dict[f"m_down3.{blocks}.weight"].shape[0])
        embed_dim = int(state_dict["qf_embed.0.weight"].shape[0])
    except KeyError as missing:
        raise ValueError(f"not an FBCNN state dict: key {missing} is missing") from None
    if blocks == 0:
        raise ValueError("not an FBCNN state dict: no residual blocks under m_down1")
    channels = (c1, c2, c3, c4)
    for config in _REGISTRY.values():
        if config.channels == channels and config.blocks == blocks and config.embed_dim == embed_dim:
            return config, int(head.shape[1])
    name = f"custom-{'-'.join(map(str, channels))}-b{blocks}-e{embed_dim}"
    return NetworkConfig(name, channels, blocks, embed_dim, summary="inferred from a state dict"), int(head.shape[1])


def state_dict_shapes(config: NetworkConfig, in_channels: int = 3, *, strength_head: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor of the FBCNN module's state dict and its shape, without building the module.

    What lets weights be checked, and random test networks be made, where PyTorch is not installed;
    a test holds it equal to :class:`~fbcnn_plugins.core.network.FBCNN`'s own state dict.
    """
    c1, c2, c3, c4 = config.channels
    blocks, embed = config.blocks, config.embed_dim
    shapes: dict[str, tuple[int, ...]] = {}

    def layer(name: str, weight: tuple[int, ...]) -> None:
        shapes[f"{name}.weight"] = weight
        shapes[f"{name}.bias"] = (weight[1] if len(weight) == 4 and name.startswith("m_up") and name.endswith(".0")
                                  else weight[0],)

    def residual(prefix: str, channels: int) -> None:
        layer(f"{prefix}.res.0", (channels, channels, 3, 3))
        layer(f"{prefix}.res.2", (channels, channels, 3, 3))

    def head(prefix: str) -> None:
        layer(f"{prefix}.{blocks + 2}", (embed, c4))
        layer(f"{prefix}.{blocks + 4}", (embed, embed))
        layer(f"{prefix}.{blocks + 6}", (1, embed))

    layer("m_head", (c1, in_channels, 3, 3))
    for stage, (wide, wider) in zip(("m_down1", "m_down2", "m_down3"), ((c1, c2), (c2, c3), (c3, c4))):
        for i in range(blocks):
            residual(f"{stage}.{i}", wide)
        layer(f"{stage}.{blocks}", (wider, wide, 2, 2))
    for i in range(blocks):
        residual(f"m_body_encoder.{i}", c4)
    for i in range(blocks):
        residual(f"m_body_decoder.{i}", c4)
    for stage, (wide, narrow) in zip(("m_up3", "m_up2", "m_up1"), ((c4, c3), (c3, c2), (c2, c1))):
        layer(f"{stage}.0", (wide, narrow, 2, 2))  # transposed: (in, out, k, k)
        for i in range(1, blocks + 1):
            residual(f"{stage}.{i}", narrow)
    layer("m_tail", (in_channels, c1, 3, 3))
    for i in range(blocks):
        residual(f"qf_pred.{i}", c4)
    head("qf_pred")
    layer("qf_embed.0", (embed, 1))
    layer("qf_embed.2", (embed, embed))
    layer("qf_embed.4", (embed, embed))
    for level, channels in ((3, c3), (2, c2), (1, c1)):
        layer(f"to_gamma_{level}.0", (channels, embed))
        layer(f"to_beta_{level}.0", (channels, embed))
    if strength_head:
        head("strength_pred")
    return shapes


def state_dict_mismatch(tensors: Mapping[str, Any], config: NetworkConfig, in_channels: int) -> str | None:
    """What keeps ``tensors`` from being this network's state dict (missing, unexpected, misshapen), or None."""
    strength = any(key.startswith("strength_pred.") for key in tensors)
    expected = state_dict_shapes(config, in_channels, strength_head=strength)
    problems = []
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    wrong = [f"{key} is {tuple(tensors[key].shape)}, not {shape}" for key, shape in expected.items()
             if key in tensors and tuple(tensors[key].shape) != shape]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            problems.append(f"{label}: {', '.join(keys[:3])}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else ""))
    return "; ".join(problems) or None


def count_parameters(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def flops_per_pixel(config: str | NetworkConfig, in_channels: int = 3, size: int = 64) -> float:
    """Floating-point operations per input pixel (2 per multiply-add), counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    network = create_network(config, in_channels).eval()
    x = torch.zeros(1, in_channels, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x)
    return counter.get_total_flops() / (size * size)


PAPER = register_config(
    NetworkConfig("paper", (64, 128, 256, 512), 4, 512, summary="the published FBCNN, 71.9 M parameters")
)
BASE = register_config(
    NetworkConfig("base", (32, 64, 128, 256), 2, 256, True, "compact: half the paper's widths and depth")
)
SMALL = register_config(NetworkConfig("small", (24, 48, 96, 192), 2, 192, True, "compact: the CPU default"))
TINY = register_config(NetworkConfig("tiny", (16, 32, 64, 128), 1, 128, True, "compact: for large video frames"))
