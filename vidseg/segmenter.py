"""`vidseg.Segmenter`: one trained model, one frame or one stream at a time, from Python.

The same per-frame path as `vidseg stream` and `vidseg eval` (`engine/predict.py`): the frame is
resized to the config's short side, normalised with the config's mean/std (RGB order), run
through the model's causal `step()` and resized back (bilinear, align_corners=False).

    from vidseg import Segmenter
    seg = Segmenter("vspw/upernet_mcibipp_r50", "model.pth")    # a packaged config or a file
    labels = seg.predict(rgb)                            # (H, W) int64 class ids
    logits = seg.predict(rgb, return_logits=True)        # (K, H, W) float32
    for index, timestamp, labels, overlay in seg.stream("clip.mp4", out="out/"):
        ...                                              # overlay: (H, W, 3) uint8 RGB
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

MODES = ("whole", "slide")


@functools.cache
def _whole_frame():
    """`TTASettings()` (one pass over the whole frame), built once for the per-frame `step`."""
    from vidseg.engine.tta import TTASettings

    return TTASettings()


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One streamed frame; unpacks as `(index, timestamp, labels, overlay)`.

    The overlay is drawn on first access (then kept), so a loop that reads only `labels` does
    not pay for it; unpacking all four fields draws it.

    Attributes:
        index: position of the frame in the source (before striding).
        timestamp: seconds from the start of the source.
        labels: `(H, W)` int64 class ids.
        frame: the RGB uint8 `(H, W, 3)` input frame.
        overlay: RGB uint8 `(H, W, 3)`: the frame blended with its class colours and a legend of
            the visible classes, as in the `vidseg stream` overlay video (without its FPS counter).
    """

    index: int
    timestamp: float
    labels: np.ndarray
    frame: np.ndarray = field(repr=False)
    _renderer: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)

    @functools.cached_property
    def overlay(self) -> np.ndarray:
        return self._renderer(self.frame, self.labels.astype(np.uint8))

    def __iter__(self) -> Iterator:
        return iter((self.index, self.timestamp, self.labels, self.overlay))


def resolve_config_path(config: str | Path) -> Path:
    """A config file path or a packaged config name (`vspw/upernet_mcibipp_r50`) as a file path.

    Raises:
        ConfigError: neither a file nor a packaged config (one line, with the closest names).
    """
    from vidseg.packaged_configs import resolve_config

    return resolve_config(config)


class Segmenter:
    """A model ready for inference.

    Args:
        config: a config file path, a packaged config name (`vidseg configs`) or a `Config`;
            None = the config stored in the checkpoint.
        checkpoint: a vidseg checkpoint, a run directory, an sssegmentation (authors')
            checkpoint (converted in memory) or None for untrained weights (with a warning).
        device: "cpu", "cuda", ...
        overrides: `key=value` config overrides.
        optimize: rewrite the model for inference (`vidseg.models.fuse`: BatchNorms folded into
            the convolutions; on a CPU channels-last weights and the wide 3x3 convolutions run
            by Winograd F(2x2, 3x3)): faster and smaller, same outputs up to float rounding;
            False keeps the model as built (e.g. to read its state dict).
    Attributes:
        model: the `torch.nn.Module` (a `VideoSegmentor` in eval mode, inference-only when
            `optimize`).
        cfg: the resolved `Config`.
        class_names: names of the K classes when known, else None.
    """

    def __init__(
        self, config=None, checkpoint=None, device: str = "cpu", overrides=(), optimize: bool = True
    ):
        from vidseg.config import Config
        from vidseg.engine.inference import load_inference_model

        if config is not None and not isinstance(config, Config):
            config = resolve_config_path(config)
        if checkpoint is None:
            warnings.warn(
                "Segmenter without a checkpoint: UNTRAINED weights, the predictions are "
                "meaningless",
                stacklevel=2,
            )
        self.cfg, self.model = load_inference_model(
            config,
            checkpoint,
            overrides,
            random_init=checkpoint is None,
            device=device,
            optimize=optimize,
        )
        self.device = torch.device(device)
        self.class_names = None
        self._state = None

    @classmethod
    def from_pretrained(cls, name: str, device: str = "cpu") -> Segmenter:
        """The authors' published model `name` (see `vidseg.zoo`): downloaded on first use into
        the user cache, converted once, then loaded from the cache."""
        from vidseg.zoo import class_names, fetch_converted, resolve

        entry = resolve(name)
        path = fetch_converted(entry, convert_zoo_entry)
        seg = cls(None, path, device=device)
        names = class_names(entry.dataset)
        seg.class_names = names if len(names) == seg.cfg.model.num_classes else None
        return seg

    # ------------------------------------------------------------------ settings

    def _short_side(self) -> int | None:
        from vidseg.engine.stream import model_short_side

        return model_short_side(self.cfg)

    def _settings(self, mode: str):
        from vidseg.engine.tta import TTASettings

        if mode not in MODES:
            raise ValueError(f"Segmenter.predict: mode={mode!r}, expected one of {MODES}")
        if mode == "whole":
            return _whole_frame()
        ec = self.cfg.eval
        if ec.crop_size is None or ec.stride is None:
            raise ValueError(
                "Segmenter.predict(mode='slide') needs eval.crop_size and eval.stride "
                "in the config (e.g. [512, 512] and [341, 341])"
            )
        return TTASettings(
            mode="slide", crop_size=ec.crop_size, stride=ec.stride, scales=ec.scales, flip=ec.flip
        )

    @staticmethod
    def _check_frame(rgb) -> np.ndarray:
        if (
            not isinstance(rgb, np.ndarray)
            or rgb.dtype != np.uint8
            or rgb.ndim != 3
            or rgb.shape[2] != 3
        ):
            got = (
                f"{type(rgb).__name__} {getattr(rgb, 'dtype', '')} "
                f"{tuple(getattr(rgb, 'shape', ()))}"
            )
            raise ValueError(f"Segmenter: expected an RGB uint8 array (H, W, 3), got {got}")
        return rgb

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw logits for one normalised frame, as the first frame of a video.

        The forward alone, without `predict`'s resizing, windows, scales or flips: one `step()`
        with no history.

        Args:
            x: `(1, 3, H, W)` float32, normalised with the config's mean/std (RGB order).
        Returns:
            `(1, K, h, w)` float32 (contiguous) on the model's grid: 1/4 of the input with an
            UperNet head, 1/8 otherwise.
        """
        logits, _ = self.model.step(x.to(self.device))
        return logits.contiguous()

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, return_logits: bool = False, mode: str = "whole"):
        """Segment one image (no history: it is treated as the first frame of a video).

        Args:
            rgb: RGB uint8 `(H, W, 3)`.
            return_logits: return `(K, H, W)` float32 scores instead of labels.
            mode: "whole" (one pass over the frame resized to the config's short side) or
                "slide" (the config's sliding window `eval.crop_size` / `eval.stride`, with
                `eval.scales` / `eval.flip`).
        Returns:
            `(H, W)` int64 class ids, or `(K, H, W)` float32: logits in whole mode, averaged
            softmax probabilities in slide mode (the authors' rule), at the input resolution.
        """
        from vidseg.engine.predict import predict_scores, segment_frame

        rgb = self._check_frame(rgb)
        settings = self._settings(mode)
        if return_logits:
            scores, _ = predict_scores(
                self.model,
                rgb,
                None,
                settings,
                rgb.shape[:2],
                short_side=self._short_side(),
                mean=self.cfg.data.mean,
                std=self.cfg.data.std,
                device=self.device,
            )
            return scores.cpu().numpy().astype(np.float32, copy=False)
        labels, _ = segment_frame(
            self.model,
            rgb,
            None,
            self._short_side(),
            self.cfg.data.mean,
            self.cfg.data.std,
            self.device,
            tta=settings,
        )
        return labels.astype(np.int64)

    def reset(self) -> None:
        """Forget the history of the current stream (the next frame starts a new video)."""
        self._state = None

    @torch.inference_mode()
    def step(self, rgb: np.ndarray) -> np.ndarray:
        """Segment the next frame of the current stream (with the history buffer): `(H, W)` int64."""
        from vidseg.engine.predict import segment_frame

        rgb = self._check_frame(rgb)
        labels, self._state = segment_frame(
            self.model,
            rgb,
            self._state,
            self._short_side(),
            self.cfg.data.mean,
            self.cfg.data.std,
            self.device,
            tta=self._settings("whole"),
        )
        return labels.astype(np.int64)

    def stream(
        self,
        source,
        out: str | Path | None = None,
        *,
        save_video: bool = True,
        save_labels: bool = False,
        save_color: bool = False,
        **source_options,
    ) -> Iterator[FrameResult]:
        """Segment a video file, frame folder, camera index or URL causally, frame by frame.

        Each frame runs the per-frame path of `vidseg stream`: the config's test-time protocol
        (`eval.mode/crop_size/stride/scales/flip`) and, with `stream.reset_on_shot_cut`, a history
        reset on shot cuts. The history buffer carries over from frame to frame; it starts empty
        (`reset()`). Leaving the loop early (`break`, an exception) closes the source and
        finishes the output files with every frame yielded so far.

        Args:
            source: anything `vidseg.io.sources.open_source` accepts: a video file, a frame
                folder, a camera index (`0`) or a URL (`rtsp://...`, `http://...`).
            out: output folder for the files `vidseg stream --out DIR` writes; None writes none.
            save_video: with `out`, write `<video>_overlay.mp4` (with an FPS counter).
            save_labels: with `out`, write VSPW train-id PNGs `labels/<video>/<stem>.png`.
            save_color: with `out`, write colour overlay PNGs `color/<video>/<stem>.png`.
            **source_options: go to `open_source` (e.g. `stride`, `max_frames`).
        Yields:
            `FrameResult`: unpacks as `(index, timestamp, labels (H, W) int64,
            overlay (H, W, 3) uint8 RGB)`.
        Raises:
            SourceError: the source does not open.
            SinkError: `out` is not writable.
        """
        from vidseg.engine.predict import segment_frame
        from vidseg.engine.stream_outputs import (
            StreamOutputs,
            class_names_for,
            frame_stem,
            render_overlay,
        )
        from vidseg.engine.tta import TTASettings
        from vidseg.io.sources import open_source

        if out is None and (save_labels or save_color):
            raise ValueError(
                "Segmenter.stream: save_labels / save_color need an output folder (out=DIR)"
            )
        names = self.class_names if self.class_names is not None else class_names_for(self.cfg)
        sc = self.cfg.stream
        render = functools.partial(
            render_overlay, alpha=sc.alpha, legend=sc.legend, class_names=names
        )
        tta = TTASettings.from_config(self.cfg.eval)
        shot_cut = sc.shot_cut_threshold if sc.reset_on_shot_cut else None
        short_side, mean, std = self._short_side(), self.cfg.data.mean, self.cfg.data.std
        self.reset()
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(contextlib.closing(open_source(source, **source_options)))
            sinks = None
            if out is not None:
                sinks = stack.enter_context(
                    StreamOutputs.for_source(
                        out,
                        src,
                        self.cfg,
                        names,
                        overlay=save_video,
                        labels=save_labels,
                        color=save_color,
                    )
                )
            t_start = time.perf_counter()
            for done, (index, timestamp, rgb) in enumerate(src, 1):
                labels, self._state = segment_frame(
                    self.model,
                    rgb,
                    self._state,
                    short_side,
                    mean,
                    std,
                    self.device,
                    shot_cut_threshold=shot_cut,
                    tta=tta,
                )
                if sinks is not None:
                    fps = done / max(time.perf_counter() - t_start, 1e-9)
                    sinks.write(frame_stem(src, index), rgb, labels, fps)
                yield FrameResult(
                    int(index), float(timestamp), labels.astype(np.int64), rgb, render
                )


def convert_zoo_entry(raw: Path, dst: Path, entry) -> None:
    """`vidseg.zoo.fetch_converted` hook: the authors' file -> a vidseg checkpoint for its config."""
    from vidseg.config import load_config
    from vidseg.convert.sssegmentation import convert

    convert(raw, dst, load_config(resolve_config_path(entry.config)))
