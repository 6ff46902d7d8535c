"""Small building blocks shared by every head: conv-BN-ReLU and the two-layer decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of a map `(B, C, h, w)` to `size` (align_corners=False everywhere)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """`k x k` convolution (no bias), BatchNorm, ReLU. `(B, C_in, h, w) -> (B, C_out, h', w')`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Decoder(nn.Module):
    """The MCIBI++ decoder: conv-BN-ReLU, Dropout2d, 1x1 conv to `out_channels` logits.

    Used for H_pr (class weights W), H_cls (final logits) and the auxiliary head. With
    `kernel_size=1` it is made of 1x1 convs only, so it can also classify memory rows given as
    `(K, Z, 1, 1)` "images" (MCIBI's representation-consistency loss).

    Args:
        in_channels: input channels.
        mid_channels: hidden channels.
        out_channels: number of output channels (classes, or 1 for an attention map).
        kernel_size: kernel of the first conv (3 for the UperNet H_cls and the aux head).
        dropout: Dropout2d probability before the classifier.
    Shapes: `(B, in_channels, h, w) -> (B, out_channels, h, w)`.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.block = ConvBNReLU(in_channels, mid_channels, kernel_size)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_block(self.block(x))

    def after_block(self, y: torch.Tensor) -> torch.Tensor:
        """The layers after `block` (dropout, classifier), for callers that ran `block` itself."""
        return self.classifier(self.dropout(y))
