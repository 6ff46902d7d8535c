"""`vidseg.Segmenter`: one trained model, one frame or one stream at a time, from Python.

The same per-frame path as `vidseg stream` and `vidseg eval` (`engine/predict.py`): the frame is
resized to the config's short side, normalised with the config's mean/std (RGB order), run
through the model's causal `step()` and resized back (bilinear, align_corners=False).

    from vidseg import Segmenter
    seg = Segmenter("vspw/upernet_mcibipp_r50", "model.pth")    # a packaged config or a file
    labels = seg.predict(rgb)                            # (H, W) int64 class ids
    logits = seg.predict(rgb, return_logits=True)        # (K, H, W) float32
    for index, timestamp, labels in seg.stream("clip.mp4"):
        ...
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

log = logging.getLogger(__name__)

MODES = ("whole", "slide")


@functools.cache
def _whole_frame():
    """`TTASettings()` (one pass over the whole frame), built once for the per-frame `step`."""
    from vidseg.engine.tta import TTASettings

    return TTASettings()


class FrameResult(NamedTuple):
    """One streamed frame: its index in the source, its timestamp (s) and `(H, W)` int64 labels."""

    index: int
    timestamp: float
    labels: np.ndarray


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
    Attributes:
        model: the `torch.nn.Module` (a `VideoSegmentor` in eval mode).
        cfg: the resolved `Config`.
        class_names: names of the K classes when known, else None.
    """

    def __init__(self, config=None, checkpoint=None, device: str = "cpu", overrides=()):
        from vidseg.config import Config
        from vidseg.engine.inference import load_inference_model

        if config is not None and not isinstance(config, Config):
            config = resolve_config_path(config)
        if checkpoint is None:
            warnings.warn("Segmenter without a checkpoint: UNTRAINED weights, the predictions are "
                          "meaningless", stacklevel=2)
        self.cfg, self.model = load_inference_model(config, checkpoint, overrides,
                                                    random_init=checkpoint is None, device=device)
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
            raise ValueError("Segmenter.predict(mode='slide') needs eval.crop_size and eval.stride "
                             "in the config (e.g. [512, 512] and [341, 341])")
        return TTASettings(mode="slide", crop_size=ec.crop_size, stride=ec.stride,
                           scales=ec.scales, flip=ec.flip)

    @staticmethod
    def _check_frame(rgb) -> np.ndarray:
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
                or rgb.shape[2] != 3:
            got = (f"{type(rgb).__name__} {getattr(rgb, 'dtype', '')} "
                   f"{tuple(getattr(rgb, 'shape', ()))}")
            raise ValueError(f"Segmenter: expected an RGB uint8 array (H, W, 3), got {got}")
        return rgb

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
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
            scores, _ = predict_scores(self.model, rgb, None, settings, rgb.shape[:2],
                                       short_side=self._short_side(), mean=self.cfg.data.mean,
                                       std=self.cfg.data.std, device=self.device)
            return scores.cpu().numpy().astype(np.float32, copy=False)
        labels, _ = segment_frame(self.model, rgb, None, self._short_side(), self.cfg.data.mean,
                                  self.cfg.data.std, self.device, tta=settings)
        return labels.astype(np.int64)

    def reset(self) -> None:
        """Forget the history of the current stream (the next frame starts a new video)."""
        self._state = None

    @torch.no_grad()
    def step(self, rgb: np.ndarray) -> np.ndarray:
        """Segment the next frame of the current stream (with the history buffer): `(H, W)` int64."""
        from vidseg.engine.predict import segment_frame

        rgb = self._check_frame(rgb)
        labels, self._state = segment_frame(self.model, rgb, self._state, self._short_side(),
                                            self.cfg.data.mean, self.cfg.data.std, self.device,
                                            tta=self._settings("whole"))
        return labels.astype(np.int64)

    def stream(self, source, **source_options) -> Iterator[FrameResult]:
        """Segment a video file, frame folder, camera index or URL causally, frame by frame.

        The history buffer carries over from frame to frame; it starts empty (`reset()`).
        `source_options` go to `vidseg.io.sources.open_source` (e.g. `stride`, `max_frames`).
        """
        from vidseg.io.sources import open_source

        self.reset()
        src = open_source(source, **source_options)
        try:
            for index, timestamp, rgb in src:
                yield FrameResult(int(index), float(timestamp), self.step(rgb))
        finally:
            close = getattr(src, "close", None)
            if close is not None:
                close()


def convert_zoo_entry(raw: Path, dst: Path, entry) -> None:
    """`vidseg.zoo.fetch_converted` hook: the authors' file -> a vidseg checkpoint for its config."""
    from vidseg.config import load_config
    from vidseg.convert.sssegmentation import convert

    convert(raw, dst, load_config(resolve_config_path(entry.config)))
