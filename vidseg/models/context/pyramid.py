"""The MCIBI++ authors' UperNet pyramid, which runs after the memory fusion.

It differs from `FPNDecoder` (this project's narrower variant) in three ways, all needed for the
authors' checkpoints to load and give their numbers: the laterals are as wide as the top map
(2 Z = 1024), the top map goes into the pyramid without a convolution, and the four levels are
concatenated without a fusion conv (3 Z + 2 Z = 2560 channels for Z = 512), leaving the
reduction to the classifier's 3x3 conv.
"""

from __future__ import annotations

import torch
from torch import nn

from vidseg.models.heads import ConvBNReLU, resize


class UperPyramid(nn.Module):
    """Top-down pyramid over C2..C4 below a given top map, concatenated at the C2 grid.

    Steps: laterals L_i = 1x1 conv-BN-ReLU(C_i) to `lateral_channels`; top-down sums
    P4 = L4 + up(T), P3 = L3 + up(P4), P2 = L2 + up(P3) (bilinear, align_corners=False, to the
    size of the level below); 3x3 conv-BN-ReLU on P2..P4 to `channels`; [P2', P3', P4', T] resized
    to the P2 grid and concatenated.

    Args:
        in_channels: channels of C2, C3, C4.
        lateral_channels: width of the laterals, which must equal the top map's width.
        channels: output width of each pyramid conv.
    Shapes: `top (B, lateral_channels, h5, w5)`, `feats [C2 (B, c2, h2, w2), C3, C4]` ->
        `(B, 3 * channels + lateral_channels, h2, w2)`.
    """

    def __init__(self, in_channels: list[int], lateral_channels: int, channels: int):
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) != 3:
            raise ValueError(
                f"UperPyramid: in_channels={in_channels}, expected 3 ints (C2, C3, C4)"
            )
        self.lateral_channels = lateral_channels
        self.laterals = nn.ModuleList(ConvBNReLU(c, lateral_channels, 1) for c in in_channels)
        self.convs = nn.ModuleList(ConvBNReLU(lateral_channels, channels, 3) for _ in in_channels)
        self.out_channels = len(in_channels) * channels + lateral_channels

    def forward(self, top: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.laterals):
            raise ValueError(
                f"UperPyramid: got {len(feats)} lateral maps, expected "
                f"{len(self.laterals)} (C2, C3, C4)"
            )
        if top.shape[1] != self.lateral_channels:
            raise ValueError(
                f"UperPyramid: top map has {top.shape[1]} channels, expected "
                f"{self.lateral_channels}"
            )
        levels = [conv(f) for conv, f in zip(self.laterals, feats)] + [top]
        for i in range(len(levels) - 1, 0, -1):
            levels[i - 1] = levels[i - 1] + resize(levels[i], levels[i - 1].shape[-2:])
        outs = [conv(p) for conv, p in zip(self.convs, levels[:-1])] + [levels[-1]]
        # the summed laterals (1024 wide, the C2 one at 1/4 scale) are not needed for the concat
        del levels
        size = outs[0].shape[-2:]
        return torch.cat([resize(o, size) for o in outs], dim=1)
