"""Hierarchical multi-scale attention (HMSA): attention head, training pair, inference chain.

HMSA (Tao et al.) predicts, at every scale, a per-pixel attention `a_s` in [0, 1] that says how much
that scale's logits are trusted against the prediction already built from the *larger* scales.
Because the attention is relative between neighbouring scales, training uses one pair (0.5, 1.0)
and inference may chain any list of scales. Logits (not probabilities) are combined, as in the
paper. All resizing is bilinear with `align_corners=False` (the reference code mixes conventions).

Nothing here knows about the segmentor: the inference wrapper takes any callable
`f(image, scale) -> (logits, attention)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.heads import ConvBNReLU, resize
from vidseg.models.losses import cross_entropy

ScaleOutput = tuple[torch.Tensor, torch.Tensor | None]


class AttentionHead(nn.Module):
    """Per-pixel scale attention: 3x3 conv-BN-ReLU, 3x3 conv-BN-ReLU, 1x1 conv -> 1, sigmoid.

    Same layout as the HMSA semantic head with one output channel; it reads the features the
    classifier reads (R_aug in vidseg, seed-spec 5.7.4).

    Args:
        in_channels: channels of the input features.
        mid_channels: hidden channels (256 in HMSA).
    Shapes: `(B, in_channels, h, w) -> (B, 1, h, w)`, values in [0, 1].
    """

    def __init__(self, in_channels: int, mid_channels: int = 256):
        super().__init__()
        self.block = nn.Sequential(
            ConvBNReLU(in_channels, mid_channels, 3), ConvBNReLU(mid_channels, mid_channels, 3)
        )
        self.out = nn.Conv2d(mid_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.block(x)))


def fuse_pair(
    low_logits: torch.Tensor, low_attn: torch.Tensor, high_logits: torch.Tensor
) -> torch.Tensor:
    """Training fusion of a (low, high) scale pair: `up(L_low * a_low) + (1 - up(a_low)) * L_high`.

    Args:
        low_logits: `(B, K, h, w)` logits of the lower scale.
        low_attn: `(B, 1, h, w)` attention of the lower scale.
        high_logits: `(B, K, H', W')` logits of the higher scale.
    Returns:
        `(B, K, H', W')` fused logits at the higher scale's resolution.
    """
    size = high_logits.shape[-2:]
    return resize(low_logits * low_attn, size) + (1.0 - resize(low_attn, size)) * high_logits


def hmsa_chain(outputs: dict[float, ScaleOutput]) -> torch.Tensor:
    """The hierarchical N-scale inference chain (seed-spec 5.2).

    Scales are visited from the largest down: `pred = L_max`; then for each smaller scale `s`,
    `pred = a_s L_s + (1 - a_s) resize(pred)` when `s >= 1` (pred moves to L_s's grid), else
    `pred = up(a_s L_s) + (1 - up(a_s)) pred` (pred keeps its grid). The largest scale's
    attention is never used (it may be None). The result sits on the scale-1.0 grid.

    Args:
        outputs: scale -> `(logits (B, K, h_s, w_s), attention (B, 1, h_s, w_s) or None)`, each
            at the resolution of its own scaled input. Must contain 1.0.
    Returns:
        `(B, K, h_1, w_1)` fused logits at the scale-1.0 resolution.
    """
    scales = sorted((float(s) for s in outputs), reverse=True)
    if 1.0 not in scales:
        raise ValueError(f"hmsa_chain: scales {scales} must include 1.0 (the output grid)")
    items = {float(s): v for s, v in outputs.items()}
    pred = items[scales[0]][0]
    for s in scales[1:]:
        logits, attn = items[s]
        if attn is None:
            raise ValueError(
                f"hmsa_chain: scale {s} has no attention map; only the largest scale "
                f"({scales[0]}) may omit it"
            )
        if s >= 1.0:
            pred = attn * logits + (1.0 - attn) * resize(pred, logits.shape[-2:])
        else:
            pred = fuse_pair(logits, attn, pred)
    return pred


def _scale_image(image: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return image
    return F.interpolate(
        image,
        scale_factor=scale,
        mode="bilinear",
        align_corners=False,
        recompute_scale_factor=False,
    )


class MultiScaleInference:
    """Multi-scale (and optionally flipped) HMSA inference around any per-scale model.

    Args:
        scales: input scales; must contain 1.0 (any order, e.g. (0.25, 0.5, 1.0, 2.0)).
        flip: also run on the horizontally flipped image and average the two fused logits
            (the flipped one flipped back).

    Call `wrapper(f, image)` with `f(image (B, 3, H_s, W_s), scale) -> (logits, attention)`;
    returns `(B, K, h_1, w_1)` logits at the resolution of `f`'s scale-1.0 output (the caller
    upsamples to the frame size before the argmax). Gradients are not disabled here.
    """

    def __init__(self, scales: Iterable[float] = (0.5, 1.0, 2.0), flip: bool = False):
        self.scales = tuple(float(s) for s in scales)
        if 1.0 not in self.scales:
            raise ValueError(f"MultiScaleInference: scales {list(self.scales)} must include 1.0")
        if any(s <= 0 for s in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(
                f"MultiScaleInference: scales {list(self.scales)} must be distinct and > 0"
            )
        self.flip = bool(flip)

    def _fused(
        self, fn: Callable[[torch.Tensor, float], ScaleOutput], image: torch.Tensor
    ) -> torch.Tensor:
        outputs = {s: fn(_scale_image(image, s), s) for s in self.scales}
        return hmsa_chain(outputs)

    def __call__(
        self, fn: Callable[[torch.Tensor, float], ScaleOutput], image: torch.Tensor
    ) -> torch.Tensor:
        fused = self._fused(fn, image)
        if self.flip:
            flipped = self._fused(fn, image.flip(-1)).flip(-1)
            fused = 0.5 * (fused + flipped)
        return fused


def hmsa_training_loss(
    outputs_low: ScaleOutput,
    outputs_high: ScaleOutput,
    labels: torch.Tensor,
    per_scale_weight: float = 0.05,
    ignore_index: int = 255,
) -> dict[str, torch.Tensor]:
    """HMSA training objective on the (low, high) pair, e.g. scales (0.5, 1.0).

    Args:
        outputs_low: `(logits (B, K, h, w), attention (B, 1, h, w))` of the lower scale.
        outputs_high: `(logits (B, K, H', W'), attention or None)` of the higher scale.
        labels: `(B, H, W)` train ids; logits are upsampled to this size inside the CE.
        per_scale_weight: weight of the CE on each single-scale prediction (0.05, HMSA [C]).
        ignore_index: label to ignore.
    Returns:
        weighted terms (their sum is the loss): `loss_cls` (CE of the fused logits),
        `loss_hmsa_low` and `loss_hmsa_high` (per_scale_weight x CE of each scale alone).
    """
    low_logits, low_attn = outputs_low
    high_logits = outputs_high[0]
    if low_attn is None:
        raise ValueError("hmsa_training_loss: the lower scale needs its attention map, got None")
    fused = fuse_pair(low_logits, low_attn, high_logits)
    terms = {"loss_cls": cross_entropy(fused, labels, ignore_index)}
    if per_scale_weight > 0:
        terms["loss_hmsa_low"] = per_scale_weight * cross_entropy(low_logits, labels, ignore_index)
        terms["loss_hmsa_high"] = per_scale_weight * cross_entropy(
            high_logits, labels, ignore_index
        )
    return terms
