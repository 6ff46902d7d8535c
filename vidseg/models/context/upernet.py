"""UperNet's FPN decoder over C2..C4 and a fused top level (UperNet = PPM on C5 + this)."""

from __future__ import annotations

import torch
from torch import nn

from vidseg.models.heads import ConvBNReLU, resize


class FPNDecoder(nn.Module):
    """Top-down feature pyramid ending at the C2 (1/4) grid.

    Steps: the top map (the fused C5-grid features, e.g. concat[F_T output, PPM output]) goes
    through a 3x3 conv-BN-ReLU to `channels`; C2, C3, C4 through 1x1 conv-BN-ReLU laterals to
    `channels`; top-down: P4 = L4 + up(T), P3 = L3 + up(P4), P2 = L2 + up(P3); a 3x3 conv-BN-ReLU on
    each of P2..P4; [P2', P3', P4', T] are resized to the P2 grid, concatenated (4 x channels) and
    fused by a 3x3 conv-BN-ReLU to `channels`.

    Every resize goes to the size of the level below (bilinear, align_corners=False), so a dilated
    backbone whose C3..C5 share one grid (OS8) and odd input sizes both work. Deviation from the
    MCIBI++ code, which widens the laterals to the top width (1024) and leaves the concat (2560 ch)
    to the classifier: here the pyramid is `channels` wide and ends with its own fusion conv, so
    the output is `channels` wide like every other context head.

    Args:
        lateral_channels: channels of C2, C3, C4 (3 ints, e.g. `backbone.channels[:3]`).
        top_channels: channels of the top map.
        channels: width of the pyramid and of the output.
    Shapes: `top (B, top_channels, h5, w5)`, `feats [C2 (B, c2, h2, w2), C3, C4]` ->
        `(B, channels, h2, w2)`.
    """

    def __init__(self, lateral_channels: list[int], top_channels: int, channels: int):
        super().__init__()
        lateral_channels = [int(c) for c in lateral_channels]
        if len(lateral_channels) != 3:
            raise ValueError(
                f"FPNDecoder: lateral_channels={lateral_channels}, expected 3 ints (C2, C3, C4)"
            )
        self.top = ConvBNReLU(top_channels, channels, 3)
        self.laterals = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in lateral_channels)
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in lateral_channels)
        self.fuse = ConvBNReLU((len(lateral_channels) + 1) * channels, channels, 3)

    def forward(self, top: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.laterals):
            raise ValueError(
                f"FPNDecoder: got {len(feats)} lateral maps, expected {len(self.laterals)} (C2, C3, C4)"
            )
        t = self.top(top)
        lats = [conv(f) for conv, f in zip(self.laterals, feats)]
        # top-down: each level receives the (already summed) level above
        above = t
        summed = [None] * len(lats)
        for i in range(len(lats) - 1, -1, -1):
            summed[i] = lats[i] + resize(above, lats[i].shape[-2:])
            above = summed[i]
        outs = [conv(p) for conv, p in zip(self.fpn_convs, summed)] + [t]
        size = outs[0].shape[-2:]
        return self.fuse(torch.cat([resize(o, size) for o in outs], dim=1))
