"""Atrous spatial pyramid pooling (DeepLabV3) as a within-image context head."""

from __future__ import annotations

import torch
from torch import nn

from vidseg.models.heads import ConvBNReLU


class ASPP(nn.Module):
    """Parallel conv-BN-ReLU branches (1x1 for dilation 1, 3x3 dilated otherwise) plus an image
    pooling branch (global average, 1x1 conv-BN-ReLU, broadcast back), concatenated (pooling branch
    first) and projected by a `project_kernel` conv-BN-ReLU to `channels`.

    The image-pooling branch has one value per channel and image: BatchNorm in training needs a
    batch of at least 2. Dilations larger than the map only see zero padding in their outer taps;
    that is the usual behaviour and is kept.

    Args:
        in_channels: C_in.
        channels: C_out, also the width of each branch.
        dilations: one branch per dilation (MCIBI++ / DeepLabV3 at OS8: 1, 12, 24, 36).
        project_kernel: kernel of the projection conv (1 here; 3 in the MCIBI++ authors' code,
            whose concatenation puts the pooling branch last: `vidseg convert` permutes the
            projection's input channels accordingly).
    Shapes: `(B, C_in, h, w) -> (B, channels, h, w)`.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        dilations: tuple[int, ...] = (1, 12, 24, 36),
        project_kernel: int = 1,
    ):
        super().__init__()
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(
                f"ASPP: dilations={dilations}, expected positive integers such as (1, 12, 24, 36)"
            )
        self.dilations = tuple(int(d) for d in dilations)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, 1)
        )
        self.branches = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1)
            if d == 1
            else ConvBNReLU(in_channels, channels, 3, dilation=d)
            for d in self.dilations
        )
        self.project = ConvBNReLU((len(self.dilations) + 1) * channels, channels, project_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a 1x1 map upsampled bilinearly is a constant map: expand is the same and free
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.project(torch.cat([pooled] + [b(x) for b in self.branches], dim=1))
