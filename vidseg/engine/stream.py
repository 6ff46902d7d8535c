"""Causal streaming inference: a frame source -> a stepper -> overlay / PNG sinks.

The stepper segments one frame with the stream's state: `TorchStepper` (`VideoSegmentor.step()`
under the test-time protocol, `segment_frame`) or `OnnxStepper` (the exported step in
onnxruntime, `vidseg/engine/onnx_stream.py`); both have `step(rgb, state) -> (labels, state)`,
a state with `nbytes()` and `resets`, a `backend` name and a `device`. One backbone pass per
frame: the model's `StreamState` keeps the stage-1 maps of the last h frames, so history is
never re-encoded. Decoding runs in the source's background thread and the
overlay writer encodes in its own thread, so both overlap with the model; the main thread only
prepares the frame, runs the model and hands the result to the writers.

SIGINT / SIGTERM stop the loop between (or inside) frames; the writers are closed on the way out,
so the overlay mp4 holds every frame processed so far. A source that ends early (truncated file,
lost camera) keeps everything read before it, and the summary says so. A failed write (full
disk, file size limit, I/O error) ends the run the same way: the writers are closed, each file
keeps what was completely written (the mp4 up to its last fragment), and `frames_written` in the
summary counts it.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from vidseg.engine.predict import segment_frame
from vidseg.engine.stream_outputs import StreamOutputs, class_names_for, frame_stem
from vidseg.engine.tta import TTASettings
from vidseg.io.sinks import Interrupted, LiveWindow, SinkWriteError, close_on_signal

log = logging.getLogger(__name__)

# `TorchStepper(precision=...)`: the autocast dtype of each choice (fp32 = no autocast)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device_type: str, precision: str):
    """`torch.autocast` in the dtype of `precision` ("bf16" / "fp16"), a no-op for "fp32"."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


@dataclass
class StreamSummary:
    """What one streaming run did. Times are per processed frame, in milliseconds.

    Attributes:
        frames: frames processed (model run and written).
        dropped: camera frames discarded because the model was slower than the camera.
        fps_end_to_end: frames / wall time from the first request to the source until the
            writers were closed (decode, model, write and the final encoder flush).
        fps_model: 1000 / ms_model, the rate the model alone would reach.
        ms_decode: time the main thread waited for the next decoded frame.
        ms_model: frame preparation + `step()` (every view of the test-time protocol) +
            upsampling + argmax (the stepper's work).
        ms_model_first: the first frame's share of that, which includes the warm-up (cuDNN's
            algorithm search, `--compile`'s compilation).
        fps_model_after_first: the model's rate over the frames after the first (steady state).
        ms_write: time the main thread spent handing results to the sinks.
        peak_rss_mb: peak resident set size of the process (ru_maxrss), MiB.
        state_bytes: bytes held by the stream state (history buffer + C_dl) at the end.
        skipped: unreadable frames skipped by the source (frame folders).
        stopped_early: the run ended before the source did (interrupt, truncated file, lost
            camera, window closed).
        error: why it stopped early, or None.
        resets: history resets (frame size changes, shot cuts).
        backend: the stepper that ran the model: "torch" or "onnxruntime".
        device: where the model ran ("cpu", "cuda:0", ...).
        frames_written: frames each output holds at the end (`overlay`, `labels`, `color`),
            fewer than `frames` when a write failed.
    """

    frames: int = 0
    dropped: int = 0
    fps_end_to_end: float = 0.0
    fps_model: float = 0.0
    ms_decode: float = 0.0
    ms_model: float = 0.0
    ms_model_first: float = 0.0
    fps_model_after_first: float = 0.0
    ms_write: float = 0.0
    peak_rss_mb: float = 0.0
    state_bytes: int = 0
    skipped: int = 0
    stopped_early: bool = False
    error: str | None = None
    resets: int = 0
    backend: str = "torch"
    device: str = "cpu"
    frames_written: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A two-column text table for the console."""
        rows = [
            ("backend", f"{self.backend} on {self.device}"),
            ("frames", f"{self.frames}"),
            ("dropped", f"{self.dropped}"),
            ("skipped", f"{self.skipped}"),
            ("decode wait / frame", f"{self.ms_decode:.1f} ms"),
            ("model / frame", f"{self.ms_model:.1f} ms"),
            ("write / frame", f"{self.ms_write:.1f} ms"),
            ("FPS end to end", f"{self.fps_end_to_end:.2f}"),
            ("FPS model only", f"{self.fps_model:.2f}"),
            (
                "  after frame 1",
                f"{self.fps_model_after_first:.2f} (frame 1: {self.ms_model_first:.0f} ms)",
            ),
            ("peak RSS", f"{self.peak_rss_mb:.0f} MiB"),
            ("stream state", f"{self.state_bytes / 1024:.1f} KiB"),
            ("history resets", f"{self.resets}"),
        ]
        if self.frames_written:
            rows.append(
                ("frames written", ", ".join(f"{k} {v}" for k, v in self.frames_written.items()))
            )
        if self.stopped_early:
            rows.append(("stopped early", self.error or "yes"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def set_inference_scales(model, scales: Sequence[float] | None) -> None:
    """Set the model's inference scales; more than one needs the HMSA attention head.

    Raises:
        ValueError: naming the scales and what is missing.
    """
    if scales is None:
        return
    scales = tuple(float(s) for s in scales)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"--scales must be positive numbers, got {scales}")
    if 1.0 not in scales:
        raise ValueError(f"--scales must include 1.0, got {scales}")
    if len(scales) > 1 and getattr(model.image_model, "attention_head", None) is None:
        raise ValueError(
            f"--scales {','.join(map(str, scales))} needs a model with the HMSA "
            "attention head (model.hmsa.enabled: true, trained with it); this model "
            "has none, so only --scales 1.0 works"
        )
    model.scales = scales


def default_threads() -> int:
    """torch intra-op threads for streaming: one core is left to the decode and encode threads.

    On a small CPU, letting torch's OpenMP pool take every core while the decoder and the x264
    encoder also run oversubscribes it, and the pool's spin-waiting then slows each frame
    many times over (measured on 2 busy cores, light config at 64 px: 26 ms per frame with
    1 thread, 720 ms with 2).
    """
    import os

    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1))


def model_short_side(cfg) -> int | None:
    """Short side of the model input: stream.short_side, else data.eval_short_side, else data.short_side."""
    return cfg.stream.short_side or cfg.data.eval_short_side or cfg.data.short_side


class TorchStepper:
    """Segments frames with the PyTorch model: `segment_frame` with the stream's fixed settings.

    Args:
        model: a `VideoSegmentor` in eval mode on `device`.
        short_side: model input short side (None keeps the frame size).
        mean, std: normalisation (`data.mean`, `data.std`).
        device: torch device of the model.
        tta: the test-time protocol (`TTASettings`).
        no_history: pass no state to `step()`: every frame is the first of a stream.
        shot_cut_threshold: reset the history on a detected shot cut (None = off).
        precision: "fp32", or "bf16" / "fp16" to run the model under `torch.autocast` (on a GPU:
            less memory traffic; the history buffer is then kept in that dtype too).
    """

    backend = "torch"

    def __init__(
        self,
        model,
        short_side: int | None,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        tta: TTASettings | None = None,
        no_history: bool = False,
        shot_cut_threshold: float | None = None,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model = model
        self.short_side = short_side
        self.mean, self.std = mean, std
        self.device = torch.device(device)
        self.tta = tta if tta is not None else TTASettings()
        self.no_history = no_history
        self.shot_cut = shot_cut_threshold
        self.precision = precision

    @torch.no_grad()
    def step(self, rgb: np.ndarray, state):
        """Labels for one RGB uint8 `(H, W, 3)` frame: uint8 `(H, W)` train ids, and the new state.

        The logits are upsampled to the frame size before the argmax (`upsample_argmax`), so
        boundaries are decided at full resolution. The state is the protocol's `TTAState`.
        """
        with autocast_for(self.device.type, self.precision):
            return segment_frame(
                self.model,
                rgb,
                state,
                self.short_side,
                self.mean,
                self.std,
                self.device,
                no_history=self.no_history,
                shot_cut_threshold=self.shot_cut,
                tta=self.tta,
            )


class StreamRunner:
    """Runs a stepper (the model) causally over one frame source and feeds the sinks.

    Args:
        model: a `VideoSegmentor` in eval mode on `device`; None when `stepper` is given.
        cfg: the resolved config (stream.*, data.mean/std/short_side).
        outputs: the files every frame goes to (`StreamOutputs.for_source` opens what
            `vidseg stream` writes; `StreamOutputs(name, overlay=...)` wraps writers opened
            elsewhere); None writes nothing.
        show: open a live window when a display exists (q / Esc stops the run).
        live_view: another live view with the window's interface (`show(rgb, labels, fps) ->
            keep_going`, `stop_reason`, `close()`), e.g. `io.serve.LiveServer` (`--serve`).
        scales: the model's HMSA scales (None keeps the model's); > 1 scale needs HMSA. The
            test-time protocol (`eval.mode/crop_size/stride/scales/flip`, averaged views, see
            `engine/tta.py`) comes from `cfg.eval`, as in `vidseg eval`.
        no_history: pass no state to `step()`: every frame is treated as the first of a stream
            (its own map fills the history slots), so no information flows between frames.
        device: torch device of the model.
        short_side: model input short side; None = `model_short_side(cfg)`.
        on_frame: called after every frame as `on_frame(frames_done, fps_end_to_end)`.
        stepper: what segments each frame (an `OnnxStepper`, `vidseg/engine/onnx_stream.py`);
            None = a `TorchStepper` of `model` with the arguments above (`scales`,
            `no_history`, `device`, `short_side`, `cfg.eval`, `cfg.stream.*shot_cut*`,
            `precision`).
        precision: the `TorchStepper`'s "fp32", "bf16" or "fp16" (autocast).
    Raises:
        ValueError: bad `scales`, or neither `model` nor `stepper`.
    """

    def __init__(
        self,
        model,
        cfg,
        outputs: StreamOutputs | None = None,
        show: bool = False,
        scales: Sequence[float] | None = None,
        no_history: bool = False,
        device: str | torch.device = "cpu",
        short_side: int | None = None,
        on_frame: Callable[[int, float], None] | None = None,
        live_view=None,
        stepper=None,
        precision: str = "fp32",
    ):
        if stepper is None and model is None:
            raise ValueError("StreamRunner needs a model or a stepper")
        if model is not None:
            set_inference_scales(model, scales)
        self.model = model
        self.cfg = cfg
        self.outputs = StreamOutputs("stream") if outputs is None else outputs
        window = (
            LiveWindow(
                title=f"vidseg {self.outputs.video_name}",
                alpha=cfg.stream.alpha,
                class_names=class_names_for(cfg),
                legend=cfg.stream.legend,
            )
            if show
            else None
        )
        self.views = [v for v in (window, live_view) if v is not None]
        self.stop_reason: str | None = None
        self.no_history = no_history
        self.device = torch.device(device)
        self.short_side = short_side or model_short_side(cfg)
        self.on_frame = on_frame
        self.shot_cut = cfg.stream.shot_cut_threshold if cfg.stream.reset_on_shot_cut else None
        self.tta = TTASettings.from_config(cfg.eval)
        self.stepper = stepper or TorchStepper(
            model,
            self.short_side,
            cfg.data.mean,
            cfg.data.std,
            self.device,
            self.tta,
            no_history,
            self.shot_cut,
            precision,
        )

    # ------------------------------------------------------------------ per frame

    def predict(self, rgb: np.ndarray, state):
        """Labels for one RGB uint8 `(H, W, 3)` frame: uint8 `(H, W)` train ids, and the new state
        (the stepper's `step`)."""
        return self.stepper.step(rgb, state)

    def _write(self, source, index: int, rgb: np.ndarray, labels: np.ndarray, fps: float) -> bool:
        """Hand one result to the files and the live views; False when a view asked to stop."""
        self.outputs.write(frame_stem(source, index), rgb, labels, fps)
        for view in self.views:
            if not view.show(rgb, labels, fps):
                self.stop_reason = view.stop_reason
                return False
        return True

    # ------------------------------------------------------------------ loop

    def run(self, source) -> StreamSummary:
        """Process every frame of `source` (a `FrameSource`), then close the source and sinks.

        Returns:
            the run's `StreamSummary`; `stopped_early` / `error` say why it ended early.
        """
        summary = StreamSummary(backend=self.stepper.backend, device=str(self.stepper.device))
        t_decode = t_model = t_write = 0.0
        state = None
        closables = [source, self.outputs, *self.views]
        t_start = time.perf_counter()
        # The outer block sees write errors from the loop and from closing (the last fragment).
        with _stop_on_write_error(summary), close_on_signal(*closables):
            try:
                frames = iter(source)
                while True:
                    t0 = time.perf_counter()
                    item = next(frames, None)
                    t1 = time.perf_counter()
                    if item is None:
                        break
                    index, _, rgb = item
                    labels, state = self.predict(rgb, state)
                    t2 = time.perf_counter()
                    summary.frames += 1
                    fps = summary.frames / max(t2 - t_start, 1e-9)
                    keep_going = self._write(source, index, rgb, labels, fps)
                    t3 = time.perf_counter()
                    t_decode += t1 - t0
                    t_model += t2 - t1
                    if summary.frames == 1:
                        summary.ms_model_first = 1000 * (t2 - t1)
                    t_write += t3 - t2
                    if self.on_frame is not None:
                        self.on_frame(summary.frames, fps)
                    if not keep_going:
                        summary.stopped_early = True
                        summary.error = self.stop_reason
                        break
            except Interrupted as exc:
                summary.stopped_early = True
                summary.error = f"interrupted ({exc}) after {summary.frames} frames"
                log.warning("%s: %s; closing the outputs", source.name, summary.error)
        wall = time.perf_counter() - t_start
        n = max(summary.frames, 1)
        summary.dropped = source.dropped
        summary.skipped = source.skipped
        if source.error and not summary.stopped_early:
            summary.stopped_early = True
            summary.error = f"{source.error} ({summary.frames} frames processed)"
        summary.ms_decode = 1000 * t_decode / n
        summary.ms_model = 1000 * t_model / n
        summary.ms_write = 1000 * t_write / n
        summary.fps_model = summary.frames / t_model if t_model > 0 else 0.0
        rest = t_model - summary.ms_model_first / 1000
        summary.fps_model_after_first = (summary.frames - 1) / rest if rest > 0 else 0.0
        summary.fps_end_to_end = summary.frames / wall if wall > 0 else 0.0
        summary.peak_rss_mb = peak_rss_mb()
        # what is on disk: the mp4 writer counts the frames of its complete fragments
        summary.frames_written = self.outputs.frames_written()
        if state is not None:
            summary.state_bytes = int(state.nbytes())
            summary.resets = int(state.resets)
        return summary


@contextlib.contextmanager
def _stop_on_write_error(summary: StreamSummary):
    """Turn a `SinkWriteError` leaving the block into `summary.stopped_early` / `error`."""
    try:
        yield
    except SinkWriteError as exc:
        summary.stopped_early = True
        cause = f"{exc} (after {summary.frames} frames)"
        summary.error = f"{summary.error}; then {cause}" if summary.error else cause


__all__ = [
    "StreamRunner",
    "TorchStepper",
    "StreamSummary",
    "default_threads",
    "model_short_side",
    "peak_rss_mb",
    "set_inference_scales",
]
