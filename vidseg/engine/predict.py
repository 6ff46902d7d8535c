"""One frame in, labels out: the per-frame path shared by `vidseg eval` and `vidseg stream`.

Both evaluate and stream with exactly the same pre-processing, `step()` call and upsampling, so
streaming output and evaluated predictions cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.data.transforms import prepare_frame


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """argmax over classes of the bilinearly resized logits, resizing only the classes that can win.

    Bilinear resizing (align_corners=False) makes every output pixel a convex combination of
    the corners of one 2x2 cell of the input grid. In a cell, a class whose largest corner value
    is below another class's smallest corner value can never win there; a class that cannot win
    in any cell is left out of the resize. The result equals
    `F.interpolate(logits, size, mode="bilinear").argmax(1)` (ties included) at a fraction of the
    cost when few classes compete, which is what a trained model produces.

    Args:
        logits: `(1, K, h, w)`.
        size: output `(H, W)`.

    Returns:
        int64 `(H, W)` class ids.
    """
    k, h, w = logits.shape[1:]
    if k > 1 and h >= 2 and w >= 2:
        corner_max = F.max_pool2d(logits, 2, stride=1)  # (1, K, h-1, w-1)
        corner_min = -F.max_pool2d(-logits, 2, stride=1)
        floor = corner_min.amax(1, keepdim=True)  # value some class is sure to reach in the cell
        # A small margin keeps classes whose bound differs from the floor by rounding only.
        margin = 1e-5 * (1.0 + floor.abs())
        can_win = (corner_max + margin >= floor).flatten(2).any(2)[0]
        classes = can_win.nonzero().squeeze(1)
        if classes.numel() < k:
            up = F.interpolate(logits.index_select(1, classes), size=tuple(size), mode="bilinear",
                               align_corners=False)
            return classes[up[0].argmax(0)]
    up = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return up[0].argmax(0)


@torch.no_grad()
def segment_frame(model, rgb: np.ndarray, state, short_side: int | None, mean: Sequence[float],
                  std: Sequence[float], device: torch.device | str = "cpu", out_size=None,
                  video_id=None, no_history: bool = False, shot_cut_threshold: float | None = None):
    """Segment one frame causally with `model.step()`.

    Args:
        model: a `VideoSegmentor` in eval mode.
        rgb: RGB uint8 `(H, W, 3)` (grayscale and RGBA are converted).
        state: the stream's `StreamState` (None starts a stream).
        short_side: model input short side (None keeps the frame size).
        mean, std: normalisation.
        device: where the model runs.
        out_size: `(H_out, W_out)` of the labels (default the frame size; the mask size for VSPW).
        video_id: stream id; a new id resets the history.
        no_history: process the frame as the first of its video (history = its own maps).
        shot_cut_threshold: reset the history on a detected shot cut (None = off).
    Returns:
        uint8 `(H_out, W_out)` train ids and the updated state.
    """
    x = prepare_frame(rgb, short_side, mean, std).to(device)
    logits, state = model.step(x, None if no_history else state, video_id=video_id,
                               shot_cut_threshold=shot_cut_threshold)
    size = tuple(out_size) if out_size is not None else rgb.shape[:2]
    return upsample_argmax(logits, size).to(torch.uint8).cpu().numpy(), state
