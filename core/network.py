"""The FBCNN network (Jiang et al., ICCV 2021) as a plain ``nn.Module``.

The module tree mirrors the authors' release so that their model-zoo state
dicts load by key name (``m_head``, ``m_down1.N.res.M``, ``qf_pred``, ...).
Widths, depth and the QF-embedding width are parameters so that the same code
serves the 72 M-parameter paper network and the compact CPU configs.
"""

from __future__ import annotations

import copy

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: The network works on 3 stride-2 levels, so inputs are padded to this.
SIZE_MULTIPLE = 8


def _conv3x3(channels_in: int, channels_out: int) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=True)


def _residual_convs(channels: int) -> nn.Sequential:
    # Indices 0 and 2 hold the convs, as in the release's "CRC" blocks.
    return nn.Sequential(_conv3x3(channels, channels), nn.ReLU(inplace=True), _conv3x3(channels, channels))


class ResBlock(nn.Module):
    """x + conv(relu(conv(x)))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res = _residual_convs(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class QFAttention(nn.Module):
    """A residual block whose branch is scaled and shifted per channel by the QF embedding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res = _residual_convs(channels)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return x + gamma[:, :, None, None] * self.res(x) + beta[:, :, None, None]


def _encoder_stage(channels_in: int, channels_out: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(
        *[ResBlock(channels_in) for _ in range(blocks)],
        nn.Conv2d(channels_in, channels_out, kernel_size=2, stride=2, bias=True),
    )


def _decoder_stage(channels_in: int, channels_out: int, blocks: int) -> nn.ModuleList:
    return nn.ModuleList(
        [
            nn.ConvTranspose2d(channels_in, channels_out, kernel_size=2, stride=2, bias=True),
            *[QFAttention(channels_out) for _ in range(blocks)],
        ]
    )


def _modulation(embed_dim: int, channels: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(embed_dim, channels), activation)


@dataclass
class EncodedTile:
    """One input's encoder outputs (padded to SIZE_MULTIPLE) and its QF branch's pooled features.

    ``quality_sum`` (N, C, float32) sums the QF branch's features over ``quality_count``
    positions, so sums from several tiles pool into one image's features.
    """

    features: tuple[torch.Tensor, ...]
    quality_sum: torch.Tensor
    quality_count: int
    height: int
    width: int


class FBCNN(nn.Module):
    """Flexible blind JPEG artifact removal network.

    ``forward(x, qf=None)`` takes images in [0, 1] of any size and returns the
    restored image and the predicted quality scalar ``q = 1 - QF/100`` of shape
    (N, 1).  Passing ``qf`` (same convention, shape (N, 1)) overrides the
    prediction that drives the decoder, which is what makes the strength
    adjustable by users.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        channels: tuple[int, int, int, int] = (64, 128, 256, 512),
        blocks: int = 4,
        embed_dim: int = 512,
        global_residual: bool = False,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        c1, c2, c3, c4 = channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(channels)
        self.blocks = blocks
        self.embed_dim = embed_dim
        self.global_residual = global_residual

        self.m_head = _conv3x3(in_channels, c1)
        self.m_down1 = _encoder_stage(c1, c2, blocks)
        self.m_down2 = _encoder_stage(c2, c3, blocks)
        self.m_down3 = _encoder_stage(c3, c4, blocks)
        self.m_body_encoder = nn.Sequential(*[ResBlock(c4) for _ in range(blocks)])
        self.m_body_decoder = nn.Sequential(*[ResBlock(c4) for _ in range(blocks)])
        self.m_up3 = _decoder_stage(c4, c3, blocks)
        self.m_up2 = _decoder_stage(c3, c2, blocks)
        self.m_up1 = _decoder_stage(c2, c1, blocks)
        self.m_tail = _conv3x3(c1, out_channels)

        self.qf_pred = nn.Sequential(
            *[ResBlock(c4) for _ in range(blocks)],
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(c4, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, 1),
            nn.Sigmoid(),
        )
        self.qf_embed = nn.Sequential(
            nn.Linear(1, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, embed_dim),
            nn.ReLU(),
        )
        self.to_gamma_3 = _modulation(embed_dim, c3, nn.Sigmoid())
        self.to_beta_3 = _modulation(embed_dim, c3, nn.Tanh())
        self.to_gamma_2 = _modulation(embed_dim, c2, nn.Sigmoid())
        self.to_beta_2 = _modulation(embed_dim, c2, nn.Tanh())
        self.to_gamma_1 = _modulation(embed_dim, c1, nn.Sigmoid())
        self.to_beta_1 = _modulation(embed_dim, c1, nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the encoder on a padded input; returns everything the decoder reads.

        That is the input itself (the global residual's source), the four skip tensors and
        the bottleneck, last.
        """
        x1 = self.m_head(x)
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        return x, x1, x2, x3, x4, self.m_body_encoder(x4)

    def predict_quality(self, x: torch.Tensor) -> torch.Tensor:
        """The QF branch alone: q = 1 - QF/100 for each image, shape (N, 1)."""
        x = pad_to_multiple(x)
        return self.qf_pred(self.encode(x)[-1])

    def quality_feature_sum(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Sum over positions of the QF branch's features before its global pooling, and their count.

        Summing these over non-overlapping tiles and dividing by the total count
        gives the whole image's pooled features, so a large image's QF can be
        predicted tile by tile with bounded memory.
        """
        features = self.qf_pred[: self.blocks](self.encode(pad_to_multiple(x))[-1])
        return features.sum(dim=(2, 3)), features.shape[2] * features.shape[3]

    def quality_from_features(self, mean_features: torch.Tensor) -> torch.Tensor:
        """The QF head (after pooling) applied to mean features of shape (N, C)."""
        return self.qf_pred[self.blocks + 2 :](mean_features)

    def add_strength_head(self) -> None:
        """Give the network a second head on the QF branch's pooled features: the *strength*.

        The QF head says which JPEG quality the damage looks like (what it was trained on, and the
        better witness of whether an image was compressed at all); the strength head says which
        control restores the image best, also after a resize or a second save
        (:mod:`fbcnn_plugins.training.qf_head`).  It starts as a copy of the QF head's last layers.
        Weights files that carry ``strength_pred.*`` tensors get it on loading.
        """
        self.strength_pred = copy.deepcopy(self.qf_pred[self.blocks + 2 :])

    @property
    def has_strength_head(self) -> bool:
        return hasattr(self, "strength_pred")

    def strength_from_features(self, mean_features: torch.Tensor) -> torch.Tensor:
        """The strength head applied to mean pooled features (N, C), as q = 1 - QF/100."""
        return self.strength_pred(mean_features)

    def encode_tile(self, x: torch.Tensor) -> EncodedTile:
        """The encoder and the QF branch's pooled features of one input, kept for :meth:`decode_tile`.

        Predicting the QF and restoring then share one encoder pass: the QF is decided from
        the features (of this tile, or of several), and the decoder runs on the same features.
        """
        height, width = x.shape[-2:]
        features = self.encode(pad_to_multiple(x))
        quality = self.qf_pred[: self.blocks](features[-1])
        count = quality.shape[2] * quality.shape[3]
        return EncodedTile(features, quality.sum(dim=(2, 3)).float(), count, height, width)

    def decode_tile(self, encoded: EncodedTile, control: torch.Tensor) -> torch.Tensor:
        """The restored image from :meth:`encode_tile`'s features at the quality scalar ``control`` (N, 1)."""
        return self.decode(encoded.features, control)[..., : encoded.height, : encoded.width]

    def restore(self, x: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """The restored image at a given quality scalar (N, 1), without running the QF branch.

        Equal to ``forward(x, control)[0]``; skipping the prediction nobody reads saves its
        share of the work (about a ninth of the convolutions).
        """
        height, width = x.shape[-2:]
        return self.decode(self.encode(pad_to_multiple(x)), control)[..., :height, :width]

    def decode(self, features: tuple[torch.Tensor, ...], control: torch.Tensor) -> torch.Tensor:
        """The decoder on :meth:`encode`'s outputs, driven by the quality scalar ``control`` (N, 1)."""
        x, x1, x2, x3, x4, bottleneck = features
        embedding = self.qf_embed(control.to(dtype=bottleneck.dtype, device=bottleneck.device))
        y = self.m_body_decoder(bottleneck) + x4
        for stage, skip, to_gamma, to_beta in (
            (self.m_up3, x3, self.to_gamma_3, self.to_beta_3),
            (self.m_up2, x2, self.to_gamma_2, self.to_beta_2),
            (self.m_up1, x1, self.to_gamma_1, self.to_beta_1),
        ):
            gamma, beta = to_gamma(embedding), to_beta(embedding)
            y = stage[0](y)
            for block in stage[1:]:
                y = block(y, gamma, beta)
            y = y + skip
        y = self.m_tail(y)
        if self.global_residual:
            y = y + x
        return y

    def forward(
        self, x: torch.Tensor, qf: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Restored image and predicted q = 1 - QF/100.

        ``qf`` sets the q that drives the decoder: None uses the prediction (blind), a tensor
        (N, 1) fixes it, and a function maps the prediction to it (training mixes in labels).
        """
        height, width = x.shape[-2:]
        features = self.encode(pad_to_multiple(x))
        predicted = self.qf_pred(features[-1])
        if qf is None:
            control = predicted
        elif callable(qf):
            control = qf(predicted)
        else:
            control = qf.to(dtype=predicted.dtype, device=predicted.device)
        return self.decode(features, control)[..., :height, :width], predicted


def pad_to_multiple(x: torch.Tensor) -> torch.Tensor:
    """``x`` padded at the bottom and right (edge pixels repeated) to a multiple of SIZE_MULTIPLE.

    The network halves the image three times; every engine (PyTorch here, OpenVINO in
    openvino_backend) pads the same way so that their outputs agree.
    """
    height, width = x.shape[-2:]
    pad_bottom = -height % SIZE_MULTIPLE
    pad_right = -width % SIZE_MULTIPLE
    if pad_bottom or pad_right:
        x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")
    return x
