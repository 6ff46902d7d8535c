"""Test-time protocol of the per-frame path: whole / sliding-window inference, scales, flip.

The MCIBI++ authors evaluate VSPW with sliding windows (512x512 crops, stride 341) on frames
resized to short side 512, optionally over several scales and the mirrored frame. Here every
view of a frame, one per (scale, flip, window index), runs the causal `model.step()` with its
OWN `StreamState`, so the Video-MCIBI++ history of a window always holds the maps of the same
region of the previous frames. The window grid is a function of the frame size, so a frame size
change resets every state (as does a new video id or a detected shot cut).

What the scores are:
- plain settings (`mode: whole`, `scales: [1.0]`, `flip: false`): the model's raw logits on its
  own grid, exactly the tensor `step()` returns (the path used before this module existed);
- anything else: averaged softmax probabilities (the authors' `use_probs_before_resize`): each
  window's logits are resized (bilinear, align_corners=False) to the window size and turned into
  probabilities, summed into a frame-size buffer and divided by the per-pixel window count; a
  flipped view is flipped back; each (scale, flip) result is resized to the scale-1.0 frame size
  and the results are averaged. Whole mode is the one-window case of the same rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vidseg.config import EvalConfig

log = logging.getLogger(__name__)

Window = tuple  # (y1, y2, x1, x2), half-open, in pixels of the (scaled) frame


@dataclass(frozen=True)
class TTASettings:
    """Test-time settings (same meaning and checks as `eval.mode/crop_size/stride/scales/flip`).

    Args:
        mode: "whole" (one window = the frame) or "slide".
        crop_size: `(h, w)` of a window (slide mode).
        stride: `(h, w)` step between windows, at most `crop_size` (slide mode).
        scales: factors applied to the prepared frame; results are averaged.
        flip: also run the horizontally mirrored frame and average it (flipped back).
    Raises:
        ConfigError (a ValueError) naming the setting and the value.
    """

    mode: str = "whole"
    crop_size: tuple | None = None
    stride: tuple | None = None
    scales: tuple = (1.0,)
    flip: bool = False

    def __post_init__(self):
        for key in ("crop_size", "stride"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(value))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        EvalConfig.check_tta(
            self.mode, self.crop_size, self.stride, self.scales, self.flip, prefix=""
        )

    @classmethod
    def from_config(cls, cfg) -> TTASettings:
        """From a `TTASettings`, an `EvalConfig`-like object, a `Config` (its `eval`) or None."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        ec = cfg.eval if hasattr(cfg, "eval") and not hasattr(cfg, "mode") else cfg
        return cls(
            mode=ec.mode, crop_size=ec.crop_size, stride=ec.stride, scales=ec.scales, flip=ec.flip
        )

    @property
    def plain(self) -> bool:
        """Whole frame, scale 1.0, no flip: scores are the raw logits of one `step()`."""
        return self.mode == "whole" and self.scales == (1.0,) and not self.flip

    def views(self) -> list:
        """The (scale, flipped) pairs run per frame, in order."""
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]

    def windows(self, height: int, width: int) -> list:
        """Windows `(y1, y2, x1, x2)` of a `height x width` (scaled) frame."""
        if self.mode == "whole":
            return [(0, height, 0, width)]
        return window_grid(height, width, self.crop_size, self.stride)


def window_grid(height: int, width: int, crop_size: Sequence[int], stride: Sequence[int]) -> list:
    """The authors' sliding-window grid, row-major (h index outer, w index inner).

    `n_h = max(H - crop_h + stride_h - 1, 0) // stride_h + 1` (same for w); window (i, j) starts
    at `(i * stride_h, j * stride_w)`, is clipped to the frame and then shifted back so that it
    keeps the crop size when the frame is large enough (the last row/column is flush with the
    border). A frame smaller than the crop gives one window, the whole frame.

    Returns:
        list of `(y1, y2, x1, x2)`, half-open pixel ranges.
    """
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    n_h = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    n_w = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    out = []
    for i in range(n_h):
        for j in range(n_w):
            y2, x2 = min(i * stride_h + crop_h, height), min(j * stride_w + crop_w, width)
            out.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return out


def count_map(height: int, width: int, windows: Sequence[Window]) -> torch.Tensor:
    """How many windows cover each pixel: float32 `(height, width)`."""
    count = torch.zeros(height, width)
    for y1, y2, x1, x2 in windows:
        count[y1:y2, x1:x2] += 1
    return count


@dataclass
class TTAState:
    """Causal state of one stream under a test-time protocol: one `StreamState` per view.

    Attributes:
        streams: `(scale, flipped, window index) -> StreamState`.
        video_id: id of the stream (a new id resets every view).
        input_size: `(H, W)` of the prepared frame (a change resets every view).
        frame_index: frames processed since this object was created.
        own_resets: resets decided here (size change, shot cut; `resets` adds the views').
        last_thumb: 32x32 thumbnail of the previous frame (shot-cut detection).
    """

    streams: dict = field(default_factory=dict)
    video_id: object = None
    input_size: tuple | None = None
    frame_index: int = 0
    own_resets: int = 0
    last_thumb: torch.Tensor | None = None

    @property
    def resets(self) -> int:
        """History resets of this stream: size changes and shot cuts (as `StreamState.resets`)."""
        return self.own_resets + sum(int(getattr(s, "resets", 0)) for s in self.streams.values())

    def nbytes(self) -> int:
        """Bytes held by every view's cache (history maps + C_dl)."""
        return sum(s.nbytes() for s in self.streams.values())

    def to(self, device: torch.device | str) -> TTAState:
        """Move every cached tensor to `device` (in place); returns self."""
        for s in self.streams.values():
            s.to(device)
        if self.last_thumb is not None:
            self.last_thumb = self.last_thumb.to(device)
        return self

    def _reset(self, reason: str | None) -> None:
        if reason is not None:
            log.warning(
                "stream %s: %s; history of all %d views reset at frame %d",
                self.video_id,
                reason,
                len(self.streams),
                self.frame_index,
            )
            self.own_resets += 1
        self.streams = {}
        self.last_thumb = None


def _check_state(state, frame: torch.Tensor, video_id, shot_cut_threshold) -> TTAState:
    """Reset on a new video id, a frame size change or a shot cut (the whole frame decides)."""
    size = tuple(frame.shape[-2:])
    if video_id is not None and video_id != state.video_id:
        state._reset(None)
        state.video_id = video_id
    elif state.input_size is not None and size != state.input_size:
        state._reset(f"input size changed from {state.input_size} to {size}")
    state.input_size = size
    if shot_cut_threshold is not None:
        thumb = F.adaptive_avg_pool2d(frame, 32)
        last = state.last_thumb
        if last is not None and (thumb - last).abs().mean() > shot_cut_threshold:
            state._reset("shot cut detected")
        state.last_thumb = thumb
    return state


def _view_probs(
    model, x: torch.Tensor, settings: TTASettings, streams: dict, key: tuple, video_id
) -> torch.Tensor:
    """Window-averaged probabilities `(1, K, H, W)` of one (scaled, maybe flipped) frame."""
    height, width = x.shape[-2:]
    windows = settings.windows(height, width)
    total = None
    for index, (y1, y2, x1, x2) in enumerate(windows):
        crop = x if len(windows) == 1 else x[..., y1:y2, x1:x2].contiguous()
        logits, streams[(*key, index)] = model.step(
            crop, streams.get((*key, index)), video_id=video_id
        )
        probs = F.interpolate(
            logits, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False
        ).softmax(1)
        if total is None:
            total = probs.new_zeros(1, probs.shape[1], height, width)
        total[..., y1:y2, x1:x2] += probs
    if len(windows) == 1:
        return total
    return total / count_map(height, width, windows).to(total.device, total.dtype)


@torch.no_grad()
def frame_scores(
    model,
    frame: torch.Tensor,
    state: TTAState | None,
    settings: TTASettings,
    video_id=None,
    no_history: bool = False,
    shot_cut_threshold: float | None = None,
):
    """Scores of one prepared frame under `settings`, causally.

    Args:
        model: a `VideoSegmentor` in eval mode (anything with `step(frame, state, video_id=...)`).
        frame: `(1, 3, H, W)` normalised frame (already at the model's input size).
        state: the stream's `TTAState` (None starts a stream).
        settings: the test-time protocol.
        video_id: stream id; a new id resets every view.
        no_history: process the frame as the first of its video (every view starts afresh).
        shot_cut_threshold: reset every view when the frame's 32x32 thumbnail moves by more than
            this (mean absolute difference, normalised units); None = off.
    Returns:
        `(scores, are_probs, state)`: plain settings: raw logits `(1, K, h, w)` on the model grid
        and False; otherwise averaged softmax probabilities `(1, K, H, W)` at the frame size and
        True.
    """
    if state is not None and not isinstance(state, TTAState):
        raise ValueError(
            f"state must be None or the TTAState of the previous frame, got {type(state).__name__}"
        )
    if no_history or state is None:
        state = TTAState(video_id=video_id)
    if settings.plain:  # the single view handles size changes and shot cuts itself, as before
        key = (1.0, False, 0)
        logits, state.streams[key] = model.step(
            frame, state.streams.get(key), video_id=video_id, shot_cut_threshold=shot_cut_threshold
        )
        state.video_id = video_id if video_id is not None else state.video_id
        state.input_size = tuple(frame.shape[-2:])
        state.frame_index += 1
        return logits, False, state
    state = _check_state(state, frame, video_id, shot_cut_threshold)
    size = tuple(frame.shape[-2:])
    total = None
    views = settings.views()
    for scale, flipped in views:
        x = (
            frame
            if scale == 1.0
            else F.interpolate(
                frame,
                scale_factor=scale,
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )
        )
        probs = _view_probs(
            model,
            x.flip(-1) if flipped else x,
            settings,
            state.streams,
            (scale, flipped),
            state.video_id,
        )
        if flipped:
            probs = probs.flip(-1)
        if tuple(probs.shape[-2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
    state.frame_index += 1
    return (total if len(views) == 1 else total / len(views)), True, state


__all__ = ["TTASettings", "TTAState", "count_map", "frame_scores", "window_grid"]
