"""GALD: global aggregation (GA) followed by local distribution (LDv1 masks or LDv2 local attention).

Open choices of the paper (seed-spec 2.8) and what this file does:

1. LDv2 kernel / dilation: defaults k = 5, r = 6 (the best table entry, matching the headline
   ASPP + LDv2 result); both configurable, k must be odd so the neighbourhood is centred.
2. LDv2 width and scaling: query/key/value are 1x1 convs to C' = C/2, logits scaled by 1/sqrt(C').
3. X_l = the head input after a 3x3 conv-BN-ReLU reduction to `channels`; X_g = the GA output at
   the same grid. Query, key and value all come from concat(X_l, X_g) (the paper's best variant).
4. Output fusion: concat(X_gald, X_l) -> 3x3 conv-BN-ReLU to `channels`, for LDv1 and LDv2 alike
   (the GALDv1 code concatenates with the raw backbone map instead; inside vidseg the head's output
   is C_wi of width Z, and X_l already carries the backbone features at that width).
5. LDv1: three depth-wise 3x3 stride-2 convs without padding, each + BN + ReLU, then bilinear
   upsampling and a sigmoid. Maps smaller than 15 x 15 (too small for three unpadded stride-2
   convs) are replicate-padded to 15 first. Because the last layer ends with ReLU, M lies in
   [0.5, 1): X_g * M + X_g is a learned per-position, per-channel gain in [1.5, 2) on X_g.
6. GA runs on a 2x-downsampled map (3x3 depth-wise stride-2 conv-BN-ReLU before, bilinear
   upsampling after). ASPP as GA uses dilations (1, 6, 12, 18) by default on that half-resolution
   grid, i.e. the same image-space field as ASPP (1, 12, 24, 36) at full resolution.
   "nonlocal" is the compact generalised non-local block (CGNL, dot-product kernel, 8 groups,
   GroupNorm, residual), which costs O(C N) instead of O(C N^2).
7. LDv2 borders: neighbours outside the map are zero keys and values (zero padding); they stay in
   the softmax with logit 0, as zero padding of an unfold does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.context.aspp import ASPP
from vidseg.models.context.ppm import PPM
from vidseg.models.heads import ConvBNReLU, resize

GA_KINDS = ("aspp", "ppm", "nonlocal")
LD_KINDS = ("v1", "v2")


class CompactNonLocal(nn.Module):
    """CGNL block with the dot-product kernel: per channel group, y = theta * <phi, g> where the
    inner product runs over all positions and channels of the group; grouped 1x1 conv, GroupNorm,
    residual.

    Args:
        channels: C of input and output.
        inner_channels: width of theta/phi/g (default C/2).
        groups: channel groups (must divide C and inner_channels).
    Shapes: `(B, C, h, w) -> (B, C, h, w)`.
    """

    def __init__(self, channels: int, inner_channels: int | None = None, groups: int = 8):
        super().__init__()
        inner = inner_channels or max(channels // 2, groups)
        if channels % groups or inner % groups:
            raise ValueError(
                f"CompactNonLocal: channels={channels} and inner_channels={inner} must be "
                f"divisible by groups={groups}"
            )
        self.groups = groups
        self.theta = nn.Conv2d(channels, inner, 1, bias=False)
        self.phi = nn.Conv2d(channels, inner, 1, bias=False)
        self.g = nn.Conv2d(channels, inner, 1, bias=False)
        self.out = nn.Conv2d(inner, channels, 1, groups=groups, bias=False)
        self.norm = nn.GroupNorm(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t, p, g = (f(x).reshape(b, self.groups, -1) for f in (self.theta, self.phi, self.g))
        # scaled so the statistic does not grow with the group size and the map size
        s = (p * g).sum(-1, keepdim=True) / math.sqrt(p.shape[-1])
        y = (t * s).reshape(b, -1, h, w)
        return x + self.norm(self.out(y))


class LocalDistributionV1(nn.Module):
    """LDv1 mask: M = sigmoid(upsample(depth-wise stride-2 stack(X_g))); returns X_g * M + X_g.

    Shapes: `(B, C, h, w) -> (B, C, h, w)`.
    """

    MIN_SIZE = 15  # smallest side three unpadded 3x3 stride-2 convs can take

    def __init__(self, channels: int, depth: int = 3):
        super().__init__()
        layers = []
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, channels, 3, stride=2, padding=0, groups=channels, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.down = nn.Sequential(*layers)
        self.min_size = 2 ** (depth + 1) - 1

    def forward(self, xg: torch.Tensor) -> torch.Tensor:
        h, w = xg.shape[-2:]
        x = xg
        if h < self.min_size or w < self.min_size:
            x = F.pad(
                x, (0, max(0, self.min_size - w), 0, max(0, self.min_size - h)), mode="replicate"
            )
        mask = torch.sigmoid(resize(self.down(x), (h, w)))
        return xg * mask + xg


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel: int,
    dilation: int,
    scale: float = 1.0,
    max_elements: int = 2**25,
) -> torch.Tensor:
    """Each position attends over its dilated `kernel x kernel` neighbourhood (zero padding).

    out(p) = sum_n softmax_n(scale * q(p) . k(p + dilation * d_n)) v(p + dilation * d_n), the
    softmax over the k*k neighbours only; neighbours outside the map have zero key and value.
    Keys and values are unfolded a band of rows at a time so the unfolded tensors stay below about
    `max_elements` elements.

    Args:
        q: `(B, C, H, W)` queries.
        k: `(B, C, H, W)` keys.
        v: `(B, Cv, H, W)` values.
        kernel: odd neighbourhood size k.
        dilation: spacing r between sampled neighbours.
        scale: logit scale (1/sqrt(C) in LDv2).
        max_elements: budget for one band's unfolded keys + values.
    Returns:
        `(B, Cv, H, W)`.
    """
    if kernel % 2 != 1 or kernel < 1 or dilation < 1:
        raise ValueError(
            f"local_attention: kernel={kernel} must be odd and dilation={dilation} >= 1"
        )
    b, c, h, w = k.shape
    cv = v.shape[1]
    kk = kernel * kernel
    pad = dilation * (kernel - 1) // 2
    kp = F.pad(k, (pad, pad, pad, pad))
    vp = F.pad(v, (pad, pad, pad, pad))
    rows = max(1, min(h, max_elements // max(1, b * (c + cv) * kk * w)))
    outs = []
    for top in range(0, h, rows):
        n = min(rows, h - top)
        # padded rows top .. top+n+2*pad-1 hold every neighbour of output rows top .. top+n-1
        ku = F.unfold(kp[:, :, top : top + n + 2 * pad], kernel, dilation=dilation).view(
            b, c, kk, n, w
        )
        vu = F.unfold(vp[:, :, top : top + n + 2 * pad], kernel, dilation=dilation).view(
            b, cv, kk, n, w
        )
        logits = (q[:, :, top : top + n].unsqueeze(2) * ku).sum(1) * scale  # (B, kk, n, W)
        attn = logits.softmax(dim=1)
        outs.append((attn.unsqueeze(1) * vu).sum(2))
    return torch.cat(outs, dim=2)


class LocalDistributionV2(nn.Module):
    """LDv2: dynamic local attention with query/key/value from concat(X_l, X_g).

    Args:
        channels: C of X_l and X_g.
        key_channels: C' of query/key/value (default C/2).
        kernel: neighbourhood size k (odd).
        dilation: neighbourhood dilation r.
    Shapes: `x_l, x_g (B, C, h, w) -> X_gald (B, C', h, w)`.
    """

    def __init__(
        self, channels: int, key_channels: int | None = None, kernel: int = 5, dilation: int = 6
    ):
        super().__init__()
        if kernel % 2 != 1 or kernel < 1 or dilation < 1:
            raise ValueError(
                f"LDv2: ld_kernel={kernel} must be odd and ld_dilation={dilation} >= 1"
            )
        self.key_channels = key_channels or max(channels // 2, 1)
        self.kernel, self.dilation = kernel, dilation
        self.query = nn.Conv2d(2 * channels, self.key_channels, 1)
        self.key = nn.Conv2d(2 * channels, self.key_channels, 1)
        self.value = nn.Conv2d(2 * channels, self.key_channels, 1)

    def forward(self, xl: torch.Tensor, xg: torch.Tensor) -> torch.Tensor:
        s = torch.cat([xl, xg], dim=1)
        return local_attention(
            self.query(s),
            self.key(s),
            self.value(s),
            self.kernel,
            self.dilation,
            scale=self.key_channels**-0.5,
        )


class GALDHead(nn.Module):
    """GALD context head: reduce -> GA on a 2x-downsampled map -> LD -> fuse with X_l.

    Args:
        in_channels: C_in (backbone C5).
        channels: C_out and the width of X_l, X_g.
        ga: global aggregation, "aspp" | "ppm" | "nonlocal" (CGNL).
        ld: local distribution, "v1" (masks) | "v2" (local attention).
        ld_kernel: LDv2 neighbourhood size k (odd).
        ld_dilation: LDv2 neighbourhood dilation r.
        ga_dilations: ASPP dilations on the half-resolution grid (GA "aspp").
        ga_bins: PPM bins (GA "ppm").
    Shapes: `(B, C_in, h, w) -> (B, channels, h, w)`.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        ga: str = "aspp",
        ld: str = "v2",
        ld_kernel: int = 5,
        ld_dilation: int = 6,
        ga_dilations: tuple[int, ...] = (1, 6, 12, 18),
        ga_bins: tuple[int, ...] = (1, 2, 3, 6),
    ):
        super().__init__()
        if ga not in GA_KINDS:
            raise ValueError(f"GALDHead: ga='{ga}', expected one of {GA_KINDS}")
        if ld not in LD_KINDS:
            raise ValueError(f"GALDHead: ld='{ld}', expected one of {LD_KINDS}")
        self.ga_kind, self.ld_kind = ga, ld
        self.reduce = ConvBNReLU(in_channels, channels, 3)
        self.down = ConvBNReLU(channels, channels, 3, stride=2, groups=channels)
        if ga == "aspp":
            self.ga = ASPP(channels, channels, dilations=ga_dilations)
        elif ga == "ppm":
            self.ga = PPM(channels, channels, bins=ga_bins)
        else:
            self.ga = CompactNonLocal(channels)
        if ld == "v1":
            self.ld = LocalDistributionV1(channels)
            gald_channels = channels
        else:
            self.ld = LocalDistributionV2(channels, kernel=ld_kernel, dilation=ld_dilation)
            gald_channels = self.ld.key_channels
        self.fuse = ConvBNReLU(gald_channels + channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xl = self.reduce(x)
        xg = resize(self.ga(self.down(xl)), xl.shape[-2:])
        xgald = self.ld(xg) if self.ld_kind == "v1" else self.ld(xl, xg)
        return self.fuse(torch.cat([xgald, xl], dim=1))
