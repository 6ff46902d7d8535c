"""Within-image context heads A_wi: PPM, ASPP, GALD, and UperNet's FPN decoder."""

from __future__ import annotations

from torch import nn

from vidseg.models.context.aspp import ASPP
from vidseg.models.context.gald import GALDHead
from vidseg.models.context.ppm import PPM
from vidseg.models.context.upernet import FPNDecoder

CONTEXT_KINDS = ("none", "ppm", "aspp", "gald", "upernet")

__all__ = ["ASPP", "CONTEXT_KINDS", "FPNDecoder", "GALDHead", "PPM", "build_context"]


def build_context(kind: str, in_channels: int, channels: int, **kwargs) -> nn.Module | None:
    """Build the within-image context head on C5.

    Args:
        kind: "none" (FCN: returns None), "ppm", "aspp", "gald", or "upernet" (its C5 part, a PPM;
            the `FPNDecoder` is built separately because it runs after the fusion).
        in_channels: C_in (backbone C5 channels).
        channels: C_out (Z).
        **kwargs: passed to the head (e.g. `bins`, `dilations`, `ga`, `ld`, `ld_kernel`, `ld_dilation`).
    Returns:
        a module `(B, in_channels, h, w) -> (B, channels, h, w)`, or None for "none".
    """
    if kind == "none":
        if kwargs:
            raise ValueError(f"context 'none' takes no options, got {sorted(kwargs)}")
        return None
    heads = {"ppm": PPM, "upernet": PPM, "aspp": ASPP, "gald": GALDHead}
    if kind not in heads:
        raise ValueError(f"unknown context '{kind}', expected one of {CONTEXT_KINDS}")
    try:
        return heads[kind](in_channels, channels, **kwargs)
    except TypeError as e:
        raise ValueError(f"context '{kind}': bad options {sorted(kwargs)} ({e})") from e
