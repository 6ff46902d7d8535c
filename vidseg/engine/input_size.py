"""Limits on the image size a model is asked to process, checked before any pixel is resized.

A frame is resized so that its short side is the model's short side (`--short-side`,
`stream.short_side`, `data.eval_short_side`), then, per test-time or HMSA scale, scaled again.
Every side of every scaled input must be at least the network stride (the backbone's coarsest
feature map would otherwise be empty), and no scaled input may exceed `MAX_SIDE` pixels on its
long side or `MAX_PIXELS` pixels in all. The upper limits exist because a model's memory grows
with the pixel count: a huge short side, or an extreme aspect ratio brought to the short side
(a 10 x 10000 strip at short side 512 becomes 512 x 512000), used to compute for a minute and
then ask for tens of GB. 4096 px / DCI 4K (4096 x 2160) covers every video format in use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from vidseg.errors import VidsegError

MAX_SIDE = 4096  # px, long side of any model input
MAX_PIXELS = 4096 * 2160  # px, a DCI 4K frame


class InputSizeError(VidsegError, ValueError):
    """A model input below the network stride or above the documented maximum."""


def scaled_size(frame_hw: Sequence[int], short_side: int | None) -> tuple[int, int]:
    """The `(H, W)` a frame of size `frame_hw` has after resizing its short side to `short_side`.

    Uses the rounding of `vidseg.data.transforms.resize_short_side`; None keeps the size.
    """
    h, w = int(frame_hw[0]), int(frame_hw[1])
    if short_side is None:
        return h, w
    scale = short_side / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def network_stride(model) -> int:
    """The coarsest stride of the model's backbone (a `VideoSegmentor`, `ImageSegmentor` or a
    `Backbone`): the smallest side an input may have; 1 for a custom model without `strides`."""
    strides = getattr(getattr(model, "backbone", model), "strides", None)
    return int(max(strides)) if strides else 1


def check_input_size(
    size: Sequence[int], stride: int, scales: Sequence[float] = (1.0,), what: str = "model input"
) -> None:
    """Refuse an input of `size` = (H, W) that some scale brings below `stride` or above the limits.

    Args:
        size: `(H, W)` of the input before the scales.
        stride: the network stride (`network_stride(model)`).
        scales: factors applied to the input (test-time scales times HMSA scales).
        what: how the message names the input (e.g. "export --size 7x9").
    Raises:
        InputSizeError: naming the size, the stride or limit, and the smallest / largest short
            side that would work.
    """
    h, w = int(size[0]), int(size[1])
    low, high = min(scales), max(scales)
    # F.interpolate(scale_factor=s) floors the product
    small_h, small_w = math.floor(h * low), math.floor(w * low)
    at = "" if low == 1.0 else f" (at scale {low:g}: {small_h}x{small_w})"
    if min(small_h, small_w) < stride:
        need = math.ceil(stride / low)
        raise InputSizeError(
            f"{what}: {h}x{w}{at} is smaller than the network stride {stride}; "
            f"every side must be at least {need} px"
        )
    big_h, big_w = math.floor(h * high), math.floor(w * high)
    at = "" if high == 1.0 else f" (at scale {high:g}: {big_h}x{big_w})"
    if max(big_h, big_w) > MAX_SIDE or big_h * big_w > MAX_PIXELS:
        raise InputSizeError(
            f"{what}: {h}x{w}{at} exceeds the input limit of {MAX_SIDE} px on "
            f"the long side and {MAX_PIXELS / 1e6:.2f} Mpx in all "
            f"(docs/RELIABILITY.md); use a smaller short side"
        )


def check_frame_size(
    model, frame_hw: Sequence[int], short_side: int | None, scales: Sequence[float] = (1.0,)
) -> tuple[int, int]:
    """Check the input `model` would get from a frame of `frame_hw` at `short_side`.

    Args:
        model: a `VideoSegmentor` (its HMSA `scales` multiply `scales`).
        frame_hw: `(H, W)` of the frame.
        short_side: model input short side (None keeps the frame size).
        scales: test-time scales (`TTASettings.scales`).
    Returns:
        the `(H', W')` after the short-side resize.
    Raises:
        InputSizeError: see `check_input_size`.
    """
    size = scaled_size(frame_hw, short_side)
    every = [t * m for t in scales for m in getattr(model, "scales", (1.0,))]
    frame = f"{int(frame_hw[0])}x{int(frame_hw[1])} frame"
    what = (
        f"model input of a {frame}"
        if short_side is None
        else f"model input of a {frame} at short side {short_side}"
    )
    check_input_size(size, network_stride(model), every, what)
    return size


__all__ = [
    "MAX_PIXELS",
    "MAX_SIDE",
    "InputSizeError",
    "check_frame_size",
    "check_input_size",
    "network_stride",
    "scaled_size",
]
