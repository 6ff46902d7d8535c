"""Pyramid pooling module (PSPNet) as a within-image context head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.heads import ConvBNReLU


class PPM(nn.Module):
    """Pyramid pooling: average-pool to b x b for each bin b, 1x1 conv-BN-ReLU, upsample, concat with
    the input, 3x3 conv-BN-ReLU bottleneck to `channels`.

    The 1x1 branch of bin 1 has one value per channel and image, so BatchNorm in training needs a
    batch of at least 2 (as in every PSPNet implementation).

    Args:
        in_channels: C_in of the input map.
        channels: C_out, also the width of every pooling branch.
        bins: output sizes of the adaptive average pools (PSPNet / MCIBI++: 1, 2, 3, 6).
    Shapes: `(B, C_in, h, w) -> (B, channels, h, w)`.
    """

    def __init__(self, in_channels: int, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        if not bins:
            raise ValueError("PPM: bins is empty, expected output sizes such as (1, 2, 3, 6)")
        self.bins = tuple(int(b) for b in bins)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNReLU(in_channels, channels, 1))
            for b in self.bins
        )
        self.bottleneck = ConvBNReLU(in_channels + len(self.bins) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False)
            for branch in self.branches
        ]
        return self.bottleneck(torch.cat([x] + pooled, dim=1))
