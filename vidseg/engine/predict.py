"""One frame in, labels (or scores) out: the per-frame path of `vidseg eval` and `vidseg stream`.

Both evaluate and stream with exactly the same pre-processing, test-time protocol
(`engine/tta.py`: whole / slide, scales, flip), `step()` calls and upsampling, so streaming
output and evaluated predictions cannot drift apart. `predict_scores` returns the class scores
that `segment_frame` takes the argmax of.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, prepare_frame
from vidseg.engine.input_size import check_frame_size
from vidseg.engine.tta import TTASettings, frame_scores


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """argmax over classes of the bilinearly resized logits, resizing only the classes that can win.

    Bilinear resizing (align_corners=False) makes every output pixel a convex combination of
    the corners of one 2x2 cell of the input grid. In a cell, a class whose largest corner value
    is below another class's smallest corner value can never win there; a class that cannot win
    in any cell is left out of the resize. The result equals
    `F.interpolate(logits, size, mode="bilinear").argmax(1)` (ties included) at a fraction of the
    cost when few classes compete, which is what a trained model produces.

    Args:
        logits: `(1, K, h, w)`, any float dtype (reduced-precision logits are compared in fp32).
        size: output `(H, W)`.

    Returns:
        int64 `(H, W)` class ids.
    """
    logits = logits.float()
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
            up = F.interpolate(
                logits.index_select(1, classes),
                size=tuple(size),
                mode="bilinear",
                align_corners=False,
            )
            return classes[up[0].argmax(0)]
    up = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return up[0].argmax(0)


@torch.no_grad()
def segment_frame(
    model,
    rgb: np.ndarray,
    state,
    short_side: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    out_size=None,
    video_id=None,
    no_history: bool = False,
    shot_cut_threshold: float | None = None,
    tta=None,
):
    """Segment one frame causally with `model.step()` under the test-time protocol `tta`.

    Args:
        model: a `VideoSegmentor` in eval mode.
        rgb: RGB uint8 `(H, W, 3)` (grayscale and RGBA are converted).
        state: the stream's state from the previous call: None starts a stream, else the
            `TTAState` this returned.
        short_side: model input short side (None keeps the frame size).
        mean, std: normalisation.
        device: where the model runs.
        out_size: `(H_out, W_out)` of the labels (default the frame size; the mask size for VSPW).
        video_id: stream id; a new id resets the history.
        no_history: process the frame as the first of its video (history = its own maps).
        shot_cut_threshold: reset the history on a detected shot cut (None = off).
        tta: `TTASettings`, an `EvalConfig` or a `Config` (its `eval`); None = whole frame,
            scale 1.0, no flip (one `step()`, logits resized by `upsample_argmax`).
    Returns:
        uint8 `(H_out, W_out)` train ids and the updated state.
    Raises:
        InputSizeError: the model input would be below the network stride or above the limits
            of `vidseg/engine/input_size.py` (checked before the frame is resized).
    """
    settings = TTASettings.from_config(tta)
    # before the resize: a huge short side or aspect ratio must not allocate anything
    check_frame_size(model, rgb.shape[:2], short_side, settings.scales)
    x = prepare_frame(rgb, short_side, mean, std, device)
    scores, _, state = frame_scores(
        model, x, state, settings, video_id, no_history, shot_cut_threshold
    )
    size = tuple(out_size) if out_size is not None else rgb.shape[:2]
    return upsample_argmax(scores, size).to(torch.uint8).cpu().numpy(), state


@torch.no_grad()
def predict_scores(
    model,
    rgb: np.ndarray,
    states,
    settings=None,
    out_size=None,
    *,
    short_side: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    video_id=None,
    no_history: bool = False,
    shot_cut_threshold: float | None = None,
):
    """Class scores of one frame, the same computation `segment_frame` takes the argmax of.

    Args:
        model: a `VideoSegmentor` in eval mode.
        rgb: RGB uint8 `(H, W, 3)`.
        states: the stream's state from the previous call (None starts a stream).
        settings: a `Config` (test-time protocol from `eval`, pre-processing from `data`:
            `eval_short_side or short_side`, `mean`, `std`), an `EvalConfig`, a `TTASettings` or
            None (plain: whole frame, scale 1.0, no flip).
        out_size: `(H_out, W_out)` of the scores (default the frame size).
        short_side, mean, std: pre-processing; given values win over a `Config`'s (defaults
            without a `Config`: keep the size, ImageNet mean/std).
        device: where the model runs (default: the model's parameters' device).
        video_id, no_history, shot_cut_threshold: as in `segment_frame`.
    Returns:
        `(scores, states)`: float32 `(K, H_out, W_out)` on the model's device, bilinearly resized
        (align_corners=False). They are raw logits under plain settings and averaged softmax
        probabilities (each pixel sums to 1) whenever windows, scales or flips are averaged
        (see `vidseg/engine/tta.py`).
    """
    data = getattr(settings, "data", None)
    if data is not None:
        short_side = short_side or data.eval_short_side or data.short_side
        mean = mean if mean is not None else data.mean
        std = std if std is not None else data.std
    mean = IMAGENET_MEAN if mean is None else mean
    std = IMAGENET_STD if std is None else std
    if device is None:
        param = next(iter(model.parameters()), None)
        device = "cpu" if param is None else param.device
    tta = TTASettings.from_config(settings)
    check_frame_size(model, rgb.shape[:2], short_side, tta.scales)
    x = prepare_frame(rgb, short_side, mean, std, device)
    scores, _, states = frame_scores(
        model, x, states, tta, video_id, no_history, shot_cut_threshold
    )
    size = tuple(out_size) if out_size is not None else tuple(rgb.shape[:2])
    if tuple(scores.shape[-2:]) != size:
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    return scores[0].float(), states
