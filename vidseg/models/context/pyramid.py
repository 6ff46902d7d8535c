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

    def forward(
        self, top: torch.Tensor, feats: list[torch.Tensor], reduce: nn.Sequential | None = None
    ) -> torch.Tensor:
        """The concatenated levels, or `reduce(concatenation)` without building it.

        Args:
            top, feats: see the class docstring.
            reduce: the consumer's first block (a conv, then any layers, e.g. `ConvBNReLU`), or
                None. Given, the conv is applied level by level on its slice of input channels
                and the partial outputs summed (`conv(cat(x_i)) = sum_i conv_i(x_i)`), so the
                `(B, 2560, h2, w2)` concatenation never exists and each resized level is freed
                after its conv: the inference path's memory peak (the same function; only the
                summation order of float rounding changes).
        """
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
        if reduce is None:
            return torch.cat([resize(o, size) for o in outs], dim=1)
        return _reduce_by_level(reduce, outs, size)


def _reduce_by_level(block: nn.Sequential, parts: list[torch.Tensor], size) -> torch.Tensor:
    """`block(cat([resize(p, size) for p in parts], 1))`, one part at a time (see `forward`)."""
    conv = block[0]
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError(f"UperPyramid: reduce must start with a dense Conv2d, got {conv}")
    if conv.in_channels != sum(p.shape[1] for p in parts):
        raise ValueError(
            f"UperPyramid: reduce takes {conv.in_channels} channels, the levels give "
            f"{sum(p.shape[1] for p in parts)}"
        )
    out, start = None, 0
    while parts:
        part = resize(parts.pop(0), size)
        weight = conv.weight[:, start : start + part.shape[1]]
        start += part.shape[1]
        bias = conv.bias if out is None else None
        y = conv._conv_forward(part, weight, bias)  # the module's own path (Winograd on a CPU)
        del part
        out = y if out is None else out.add_(y)
    for layer in list(block)[1:]:
        out = layer(out)
    return out
