"""The onnxruntime backend of `vidseg stream`: the exported streaming step, driven like `step()`.

`OnnxStepper` has the interface of `TorchStepper` (`vidseg/engine/stream.py`), so `StreamRunner`
runs either: `step(rgb, state) -> (labels, state)`, where the state has `nbytes()` and `resets`.
Pre-processing is `prepare_frame` (the torch path's), the graph is `StepGraph`
(`vidseg/engine/export.py`, fixed input size, history maps as inputs) and the history buffer
lives in `OnnxStreamState`, reset exactly where `VideoSegmentor.step` resets its `StreamState`:
at the start of a stream, when the model input size changes, on a detected shot cut (same 32x32
thumbnail rule, computed with the same torch op) and on every frame with `no_history`. The
labels come from `upsample_argmax_np`, the class-pruned bilinear upsample + argmax of the torch
path done with OpenCV.

The sessions and their graphs (`FixedGraph`, `CachedGraphs`) are in
`vidseg/engine/onnx_session.py`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from vidseg.data.transforms import prepare_frame
from vidseg.engine.input_size import scaled_size
from vidseg.engine.onnx_session import (
    INSTALL_HINT,
    CachedGraphs,
    FixedGraph,
    OnnxBackendError,
    StepSession,
    import_onnxruntime,
)
from vidseg.models.video import pick_history, shot_cut

log = logging.getLogger(__name__)


@dataclass
class OnnxStreamState:
    """Per-stream state of `OnnxStepper` (the `StreamState` of the onnxruntime backend).

    Attributes:
        input_size: `(H, W)` of the model input (a change resets the history).
        buffer: the last `h * stride` history maps `(1, Z, h', w')`, oldest first.
        frame_index: frames processed since the last reset.
        resets: history resets (size change, shot cut), counted as `StreamState.resets`.
        last_thumb: 32x32 thumbnail of the previous frame (shot-cut detection).
    """

    input_size: tuple | None = None
    buffer: deque = field(default_factory=deque)
    frame_index: int = 0
    resets: int = 0
    last_thumb: torch.Tensor | None = None

    def nbytes(self) -> int:
        """Bytes held by the history buffer (C_dl is a constant of the graph, not state)."""
        return int(sum(m.nbytes for m in self.buffer))

    def reset(self, maxlen: int, reason: str | None) -> None:
        """Empty the buffer; `reason` (logged, counted) is None at the start of a stream."""
        if reason is not None:
            log.warning("stream None: %s; history reset at frame %d", reason, self.frame_index)
            self.resets += 1
        self.buffer = deque(maxlen=maxlen)
        self.frame_index = 0
        self.last_thumb = None


def upsample_argmax_np(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`upsample_argmax` (engine/predict.py) with OpenCV: argmax of the bilinearly resized logits.

    Only classes that can win in some 2x2 cell of the grid (largest corner value not below the
    largest smallest-corner value of any class) are resized, one plane at a time
    (`cv2.resize` INTER_LINEAR = half-pixel centres, as align_corners=False), and compared in
    class order, so ties go to the lowest id as in `torch.argmax`. One class left: no resize.

    Args:
        logits: float32 `(K, h, w)`.
        size: output `(H, W)`.
    Returns:
        uint8 `(H, W)` class ids (K <= 256).
    """
    k, h, w = logits.shape
    classes = np.arange(k)
    if k > 1 and h >= 2 and w >= 2:
        a, b, c, d = logits[:, :-1, :-1], logits[:, :-1, 1:], logits[:, 1:, :-1], logits[:, 1:, 1:]
        corner_max = np.maximum(np.maximum(a, b), np.maximum(c, d))
        corner_min = np.minimum(np.minimum(a, b), np.minimum(c, d))
        floor = corner_min.max(0)
        margin = 1e-5 * (1.0 + np.abs(floor))
        classes = np.flatnonzero((corner_max + margin >= floor).any(axis=(1, 2)))
    height, width = int(size[0]), int(size[1])
    labels = np.full((height, width), classes[0], np.uint8)
    if len(classes) == 1:
        return labels
    best = cv2.resize(logits[classes[0]], (width, height), interpolation=cv2.INTER_LINEAR)
    wins = np.empty((height, width), bool)
    for cls in classes[1:]:
        up = cv2.resize(logits[cls], (width, height), interpolation=cv2.INTER_LINEAR)
        np.greater(up, best, out=wins)
        np.copyto(best, up, where=wins)
        labels[wins] = cls
    return labels


class OnnxStepper:
    """Segments frames with an exported step in onnxruntime: `TorchStepper`'s interface.

    Args:
        graphs: a `FixedGraph` or `CachedGraphs` (`for_frame(frame_hw, short_side)` gives the
            `StepSession` of that frame's model input size).
        short_side: model input short side (None keeps the frame size).
        mean, std: normalisation (`data.mean`, `data.std`).
        no_history: every frame is the first of its stream (as `TorchStepper`).
        shot_cut_threshold: reset the history on a detected shot cut (None = off).
    """

    backend = "onnxruntime"
    device = "cpu"  # onnxruntime's CPU execution provider

    def __init__(
        self,
        graphs,
        short_side: int | None,
        mean: Sequence[float],
        std: Sequence[float],
        no_history: bool = False,
        shot_cut_threshold: float | None = None,
    ):
        self.graphs = graphs
        self.short_side = short_side
        self.mean, self.std = mean, std
        self.no_history = no_history
        self.shot_cut = shot_cut_threshold

    def step(self, rgb: np.ndarray, state: OnnxStreamState | None):
        """Labels for one RGB uint8 `(H, W, 3)` frame: uint8 `(H, W)` train ids, and the state.

        Raises:
            InputSizeError, OnnxBackendError: the frame cannot reach the graph's input size.
        """
        frame_hw = tuple(rgb.shape[:2])
        size = scaled_size(frame_hw, self.short_side)
        session = self.graphs.for_frame(frame_hw, self.short_side)
        x = prepare_frame(rgb, self.short_side, self.mean, self.std)
        maxlen = max(1, session.history * session.history_stride)
        if state is None or self.no_history:
            state = OnnxStreamState()
            state.reset(maxlen, None)
        elif size != state.input_size:
            state.reset(maxlen, f"input size changed from {state.input_size} to {size}")
        state.input_size = size
        if self.shot_cut is not None:
            cut, thumb = shot_cut(x, state.last_thumb, self.shot_cut)
            if cut:
                state.reset(maxlen, "shot cut detected")
            state.last_thumb = thumb
        hist = None
        if state.buffer:
            hist = pick_history(state.buffer, session.history, session.history_stride, None)
        logits, new_map = session.run(x.numpy(), hist)
        if new_map is not None:
            state.buffer.append(new_map)
        state.frame_index += 1
        return upsample_argmax_np(logits[0], frame_hw), state


def check_onnx_settings(cfg, scales: Sequence[float] | None, device: str = "cpu") -> None:
    """Refuse what the exported step cannot run, naming the setting and `--backend torch`.

    Args:
        cfg: the resolved config (its `eval` test-time protocol and `model.scales`).
        scales: `--scales` (None: the model's).
        device: `--device`; onnxruntime runs on the CPU here.
    Raises:
        OnnxBackendError.
    """
    from vidseg.engine.tta import TTASettings

    if str(device) != "cpu":
        raise OnnxBackendError(
            f"--backend onnxruntime runs on the CPU; use --backend torch for --device {device}"
        )
    tta = TTASettings.from_config(cfg.eval)
    if not tta.plain:
        raise OnnxBackendError(
            "--backend onnxruntime runs the whole frame at scale 1.0 without flip; this config "
            f"asks eval.mode={tta.mode}, eval.scales={list(tta.scales)}, eval.flip={tta.flip}: "
            "use --backend torch"
        )
    hmsa = cfg.model.hmsa
    model_scales = (
        tuple(scales) if scales is not None else tuple(hmsa.scales if hmsa.enabled else [1])
    )
    if tuple(float(s) for s in model_scales) != (1.0,):
        raise OnnxBackendError(
            f"--backend onnxruntime runs one scale (1.0), the model runs "
            f"{','.join(f'{s:g}' for s in model_scales)} (HMSA): use --backend torch"
        )


def onnx_stepper(
    cfg,
    model,
    onnx_path: str | Path | None,
    threads: int | None,
    short_side: int | None,
    no_history: bool = False,
    cache_root: str | Path | None = None,
) -> OnnxStepper:
    """The `OnnxStepper` `vidseg stream --backend onnxruntime` runs.

    Args:
        cfg: the resolved config (`data.mean/std`, `stream.*shot_cut*`, `model`).
        model: the `VideoSegmentor` to export per input size; None with `onnx_path`.
        onnx_path: a .onnx file from `vidseg export` (its input size must be the model input
            size), or None to export on first use into `cache_root`.
        threads: onnxruntime intra-op threads.
        short_side: model input short side.
        no_history: every frame is the first of its stream.
        cache_root: default `vidseg.cache.cache_dir() / "onnx"`.
    Raises:
        OnnxBackendError: onnxruntime missing, an unusable file, or classes that differ from
            `model.num_classes`.
    """
    import_onnxruntime()
    if onnx_path is not None:
        graphs = FixedGraph(onnx_path, threads, cfg.data.clip.stride or 1)
        k = graphs.session.num_classes
        if k != cfg.model.num_classes:
            raise OnnxBackendError(
                f"{onnx_path}: the graph predicts {k} classes, the config's model "
                f"{cfg.model.num_classes}: pass the config it was exported from"
            )
    else:
        from vidseg.cache import cache_dir

        try:
            import onnx  # noqa: F401 - torch.onnx.export needs it
        except ImportError:
            raise OnnxBackendError(
                f"--backend onnxruntime exports the model with onnx: {INSTALL_HINT}, "
                "or pass an exported step with --onnx FILE"
            ) from None
        root = Path(cache_root) if cache_root is not None else cache_dir() / "onnx"
        graphs = CachedGraphs(model, cfg.model, root, threads)
    shot_cut = cfg.stream.shot_cut_threshold if cfg.stream.reset_on_shot_cut else None
    return OnnxStepper(graphs, short_side, cfg.data.mean, cfg.data.std, no_history, shot_cut)


__all__ = [
    "CachedGraphs",
    "FixedGraph",
    "OnnxBackendError",
    "OnnxStepper",
    "OnnxStreamState",
    "StepSession",
    "check_onnx_settings",
    "import_onnxruntime",
    "onnx_stepper",
    "upsample_argmax_np",
]
