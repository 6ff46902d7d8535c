"""Video-MCIBI++: fuse the cached stage-1 C_bi of the h previous frames into the current frame.

Three entry points share the same per-frame stages of `ImageSegmentor`:
- training, `forward(clip, labels)`: backbone over the clip's frames, losses on the current
  frame, memory updated from the current frame only;
- offline reference, `forward(clip)`: recomputes every history frame (h + 1 backbone passes);
- streaming, `step(frame, state)`: one backbone pass per frame and scale; the frame's stage-1
  C_bi goes into a ring buffer, so history is never re-encoded.
Streaming and offline agree exactly (tests/test_video.py); both pad the start of a video by
repeating the oldest available frame, as the clip loader does.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.memory import downsample_labels
from vidseg.models.segmentor import FrameEncoding, ImageSegmentor

log = logging.getLogger(__name__)


@dataclass
class StreamState:
    """Per-stream cache for `VideoSegmentor.step`. Small, detached, movable between devices.

    Attributes:
        video_id: id of the stream this state belongs to (a new id resets the state).
        frame_index: frames processed since the last reset.
        input_size: `(H, W)` of the frames (a change resets the state).
        history: per scale, a ring buffer of the last `h * stride` history maps `(1, Z, h_s, w_s)`.
        c_dl: C_dl `(K, Z)` computed once per stream from the frozen memory.
        resets: how many times this stream was reset (size change, shot cut).
    """

    video_id: object = None
    frame_index: int = 0
    input_size: tuple | None = None
    history: dict = field(default_factory=dict)
    c_dl: torch.Tensor | None = None
    resets: int = 0
    last_thumb: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> StreamState:
        """Move every cached tensor to `device` (in place); returns self."""
        for scale, buf in self.history.items():
            self.history[scale] = deque((t.to(device) for t in buf), maxlen=buf.maxlen)
        if self.c_dl is not None:
            self.c_dl = self.c_dl.to(device)
        if self.last_thumb is not None:
            self.last_thumb = self.last_thumb.to(device)
        return self

    def nbytes(self) -> int:
        """Bytes held by the cache (history maps + C_dl)."""
        total = sum(t.numel() * t.element_size() for buf in self.history.values() for t in buf)
        return total + (0 if self.c_dl is None else self.c_dl.numel() * self.c_dl.element_size())


def pick_history(
    buffer: Sequence[torch.Tensor], history: int, stride: int, current: torch.Tensor
) -> list:
    """History maps for the current frame, most recent first, padded with the oldest available.

    Args:
        buffer: maps of previous frames, oldest first (at most `history * stride` of them); a
            list or the state's deque (indexed in place, no copy).
        history: h.
        stride: distance between history frames, in frames.
        current: the current frame's map, used when no previous frame exists.
    """
    picked = []
    for i in range(1, history + 1):
        pos = len(buffer) - i * stride
        if pos >= 0:
            picked.append(buffer[pos])
        else:  # start of the video: repeat the earliest frame (clip loader does the same)
            picked.append(buffer[0] if buffer else current)
    return picked


def shot_cut(frame: torch.Tensor, last_thumb: torch.Tensor | None, threshold: float):
    """The shared shot-cut rule of every streaming backend.

    Args:
        frame: `(1, 3, H, W)` normalised frame.
        last_thumb: the previous frame's thumbnail, or None.
        threshold: mean absolute thumbnail difference (normalised units) above which it is a cut.
    Returns:
        (is a cut, this frame's thumbnail).
    """
    thumb = F.adaptive_avg_pool2d(frame, 32)
    cut = last_thumb is not None and bool((thumb - last_thumb).abs().mean() > threshold)
    return cut, thumb


class VideoSegmentor(nn.Module):
    """Video-MCIBI++ around an `ImageSegmentor` whose fusion takes `history` extra maps.

    Args:
        image_model: the per-frame segmentor (its `fusion` must accept the history maps).
        history: h, number of previous frames fused (0 = image MCIBI++).
        history_source: "cbi" (paper: stage-1 C_bi of each history frame) or "r" (Table 16
            ablation: the raw representation R of each history frame).
        history_grad: back-propagate through the history frames (default: no gradients; history
            frames then run in a separate no-grad backbone call).
        history_stride: distance between history frames, in frames (same as the clip loader).
        scales: inference scales; more than one needs the HMSA attention head.
        train_low_scale: the lower HMSA training scale (the pair is (low, 1.0)).
        flip: average with the horizontally flipped frame at inference (offline path only).
        loss_terms: a `SegmentationLosses` that turns outputs into the weighted loss dict.
    """

    def __init__(
        self,
        image_model: ImageSegmentor,
        history: int = 2,
        history_source: str = "cbi",
        history_grad: bool = False,
        history_stride: int = 1,
        scales=(1.0,),
        train_low_scale: float = 0.5,
        loss_terms: nn.Module | None = None,
    ):
        super().__init__()
        if history_source not in ("cbi", "r"):
            raise ValueError(f"history_source must be 'cbi' or 'r', got {history_source!r}")
        if history_source == "cbi" and history > 0 and image_model.memory is None:
            raise ValueError("history_source='cbi' needs a memory; use 'r' for a memory-free model")
        scales = tuple(float(s) for s in scales)
        if 1.0 not in scales:
            raise ValueError(f"scales must include 1.0, got {scales}")
        if len(scales) > 1 and image_model.attention_head is None:
            raise ValueError(f"scales {scales} need the HMSA attention head (model.hmsa.enabled)")
        self.image_model = image_model
        self.history = history
        self.history_source = history_source
        self.history_grad = history_grad
        self.history_stride = history_stride
        self.scales = scales
        self.train_low_scale = train_low_scale
        self.loss_terms = loss_terms
        self.progress = 0.0

    @property
    def backbone(self) -> nn.Module:
        return self.image_model.backbone

    @property
    def memory(self) -> nn.Module | None:
        return self.image_model.memory

    def set_progress(self, progress: float) -> None:
        """Training progress t / T in [0, 1] (MCIBI poly momentum, contrast warm-up)."""
        self.progress = float(progress)

    def memory_stats(self) -> dict:
        return self.image_model.memory_stats()

    # ------------------------------------------------------------------ helpers

    def _history_map(self, enc: FrameEncoding) -> torch.Tensor:
        return enc.cbi if self.history_source == "cbi" else enc.r

    def _encode_clip(self, clip: torch.Tensor, c_dl: torch.Tensor | None, grad_history: bool):
        """Encode a clip `(B, T, 3, H, W)`. Returns (current-frame encoding, history maps list,
        most recent first), each map `(B, Z, h, w)`."""
        b, t = clip.shape[:2]
        m = self.image_model
        if t == 1 or grad_history:
            enc = m.encode(clip.flatten(0, 1), c_dl)
            per_frame = self._split(enc, b, t)
            current = per_frame[-1]
            maps = [self._history_map(e) for e in per_frame[:-1]]
            if not grad_history:
                maps = [x.detach() for x in maps]
        else:
            current = m.encode(clip[:, -1], c_dl)
            with torch.no_grad():
                hist_enc = m.encode(clip[:, :-1].flatten(0, 1), c_dl)
            maps = [self._history_map(e) for e in self._split(hist_enc, b, t - 1)]
        # clip frames are oldest first; fusion wants the most recent history first
        maps = maps[::-1]
        if len(maps) < self.history:  # clip shorter than h: pad with the oldest available
            oldest = maps[-1] if maps else self._history_map(current)
            maps = maps + [oldest] * (self.history - len(maps))
        return current, maps[: self.history]

    @staticmethod
    def _split(enc: FrameEncoding, b: int, t: int) -> list:
        """Split a `(B*T, ...)` encoding into T per-frame encodings of batch B."""

        def part(x, i):
            return None if x is None else x.view(b, t, *x.shape[1:])[:, i]

        names = [f.name for f in dataclasses.fields(FrameEncoding) if f.name != "feats"]
        return [
            FrameEncoding(
                [part(f, i) for f in enc.feats], **{n: part(getattr(enc, n), i) for n in names}
            )
            for i in range(t)
        ]

    def predict(
        self, enc: FrameEncoding, c_dl: torch.Tensor | None, hist: list, stages: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`ImageSegmentor.predict_frame` with the history share of the fusion computed once.

        Every IIS stage fuses the same h history maps; their (linear) share of the fusion conv
        does not depend on the stage, so with more than one stage it is computed once per frame
        (`Fusion.reuse_history`). One stage runs the plain fused conv (fewer kernel launches).

        Args:
            enc: the current frame's encoding.
            c_dl: C_dl `(K, Z)` or None.
            hist: h history maps `(B, Z, h, w)`, most recent first.
            stages: IIS stages.
        Returns:
            logits `(B, K, h', w')` and R_aug of the last stage.
        """
        m = self.image_model
        c_wi = m.within_image_context(enc)
        if stages < 2 or not hist:
            return m.predict_frame(enc, c_wi, c_dl, hist, stages)
        with m.fusion.reuse_history(len(hist)):
            return m.predict_frame(enc, c_wi, c_dl, hist, stages)

    def _clip_outputs(self, clip: torch.Tensor, c_dl, stages: int, grad_history: bool):
        enc, hist = self._encode_clip(clip, c_dl, grad_history)
        logits, r_aug = self.predict(enc, c_dl, hist, stages)
        return enc, logits, self.image_model.attention(r_aug)

    @staticmethod
    def _as_clip(frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() == 4:
            return frames.unsqueeze(1)
        if frames.dim() != 5:
            raise ValueError(
                f"expected frames (B, T, 3, H, W) or (B, 3, H, W), got {tuple(frames.shape)}"
            )
        return frames

    # ------------------------------------------------------------------ training / offline

    def forward(
        self, frames: torch.Tensor, labels: torch.Tensor | None = None, upsample: bool = True
    ):
        """Training (with labels, train mode) or offline inference.

        Args:
            frames: clip `(B, T, 3, H, W)`, history first, current last (or `(B, 3, H, W)`).
            labels: current-frame labels `(B, H, W)`, train ids, 255 = ignore.
            upsample: offline inference only: return logits at the input size.
        Returns:
            training: dict of weighted loss terms (their sum is the loss);
            inference: logits `(B, K, H, W)` (or at the model grid when `upsample` is False).
        """
        clip = self._as_clip(frames)
        if labels is not None and self.training:
            return self._forward_train(clip, labels)
        return self._forward_offline(clip, upsample)

    def _forward_train(self, clip: torch.Tensor, labels: torch.Tensor) -> dict:
        m = self.image_model
        c_dl = m.sample_memory()
        enc, logits, attn = self._clip_outputs(clip, c_dl, stages=1, grad_history=self.history_grad)
        # labels on the R grid, for the pixel-contrast term
        r_labels = downsample_labels(labels, enc.r.shape[-2:])
        outputs = {
            "logits": logits,
            "pr_logits": enc.pr_logits,
            "cwi_logits": enc.cwi_logits,
            "aux_logits": m.aux_head(enc.feats[-2]),
            "r": enc.r,
            "r_labels": r_labels,
        }
        if m.attention_head is not None:
            low = F.interpolate(
                clip.flatten(0, 1),
                scale_factor=self.train_low_scale,
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )
            low = low.view(*clip.shape[:2], *low.shape[1:])
            _, low_logits, low_attn = self._clip_outputs(low, c_dl, 1, self.history_grad)
            outputs["hmsa"] = ((low_logits, low_attn), (logits, attn))
        losses = self.loss_terms(outputs, labels, m, self.progress)
        if m.memory is not None:
            # full-resolution labels: the memory applies its own rule (grid or label), in fp32
            m.memory.update(enc.r.detach(), labels, self.progress)
        return losses

    @torch.no_grad()
    def _forward_offline(self, clip: torch.Tensor, upsample: bool) -> torch.Tensor:
        m = self.image_model
        c_dl = m.sample_memory()
        outs = {}
        for s in self.scales:
            x = clip if s == 1.0 else self._resize_clip(clip, s)
            _, logits, attn = self._clip_outputs(x, c_dl, m.iis_stages, grad_history=False)
            outs[s] = (logits, attn)
        logits = self._fuse_scales(outs)
        if upsample:
            logits = F.interpolate(
                logits, size=clip.shape[-2:], mode="bilinear", align_corners=False
            )
        return logits

    @staticmethod
    def _resize_clip(clip: torch.Tensor, scale: float) -> torch.Tensor:
        flat = F.interpolate(
            clip.flatten(0, 1),
            scale_factor=scale,
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )
        return flat.view(*clip.shape[:2], *flat.shape[1:])

    def _fuse_scales(self, outs: dict) -> torch.Tensor:
        if len(outs) == 1:
            return outs[1.0][0]
        from vidseg.models.multiscale import hmsa_chain

        return hmsa_chain(outs)

    # ------------------------------------------------------------------ streaming

    def init_state(self, video_id=None) -> StreamState:
        return StreamState(video_id=video_id)

    def _reset(self, state: StreamState, frame: torch.Tensor, video_id, reason: str | None) -> None:
        if reason is not None:
            log.warning(
                "stream %s: %s; history reset at frame %d", video_id, reason, state.frame_index
            )
            state.resets += 1
        state.video_id = video_id
        state.frame_index = 0
        state.input_size = tuple(frame.shape[-2:])
        state.history = {}
        state.last_thumb = None
        if state.c_dl is None or state.c_dl.device != frame.device:
            c_dl = self.image_model.sample_memory()
            state.c_dl = None if c_dl is None else c_dl.detach()

    @torch.no_grad()
    def step(
        self,
        frame: torch.Tensor,
        state: StreamState | None = None,
        video_id=None,
        shot_cut_threshold: float | None = None,
        output_size=None,
    ):
        """Process one frame causally.

        Args:
            frame: `(1, 3, H, W)` normalised frame.
            state: the stream's state from the previous call (None starts a new stream).
            video_id: stream id; a different id from the state's resets the history.
            shot_cut_threshold: if given, reset when the mean absolute difference of a 32x32
                thumbnail to the previous frame's exceeds it (normalised units).
            output_size: `(H_out, W_out)` to upsample the logits to; None keeps the model grid.
        Returns:
            logits `(1, K, h, w)` (or at `output_size`) and the updated state.
        """
        if frame.dim() != 4 or frame.shape[0] != 1:
            raise ValueError(f"step() takes one frame (1, 3, H, W), got {tuple(frame.shape)}")
        if self.training:
            raise RuntimeError("step() is for inference: call model.eval() first")
        if state is None:
            state = self.init_state(video_id)
            self._reset(state, frame, video_id, None)
        elif video_id is not None and video_id != state.video_id:
            self._reset(state, frame, video_id, None)
        elif tuple(frame.shape[-2:]) != state.input_size:
            self._reset(
                state,
                frame,
                state.video_id,
                f"input size changed from {state.input_size} to {tuple(frame.shape[-2:])}",
            )
        if shot_cut_threshold is not None:
            cut, thumb = shot_cut(frame, state.last_thumb, shot_cut_threshold)
            if cut:
                self._reset(state, frame, state.video_id, "shot cut detected")
            state.last_thumb = thumb

        m = self.image_model
        outs = {}
        for s in self.scales:
            x = (
                frame
                if s == 1.0
                else F.interpolate(
                    frame,
                    scale_factor=s,
                    mode="bilinear",
                    align_corners=False,
                    recompute_scale_factor=False,
                )
            )
            enc = m.encode(x, state.c_dl)
            buf = state.history.setdefault(
                s, deque(maxlen=max(1, self.history * self.history_stride))
            )
            current = self._history_map(enc)
            hist = pick_history(buf, self.history, self.history_stride, current)
            logits, r_aug = self.predict(enc, state.c_dl, hist, m.iis_stages)
            outs[s] = (logits, m.attention(r_aug))
            if self.history > 0:
                buf.append(current.detach())
        state.frame_index += 1
        logits = self._fuse_scales(outs)
        if output_size is not None:
            logits = F.interpolate(
                logits, size=tuple(output_size), mode="bilinear", align_corners=False
            )
        return logits, state
