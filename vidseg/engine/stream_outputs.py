"""The files one streamed source leaves in an output folder, and the overlay frames shown to users.

`Segmenter.stream(source, out=DIR)` writes through `StreamOutputs` the same files as
`vidseg stream SOURCE --out DIR`: `<video>_overlay.mp4` (`output_paths`), and on request VSPW
label PNGs `labels/<video>/<stem>.png` and colour PNGs `color/<video>/<stem>.png`, with the same
writers, the same stems and the same frame-size rule as `StreamRunner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vidseg.engine.stream import class_names_for, output_paths, source_video_name
from vidseg.io.palette import overlay
from vidseg.io.sinks import (
    ColorPngWriter,
    LabelPngWriter,
    OverlayVideoWriter,
    draw_legend,
    ensure_writable_dir,
)


def render_overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5, legend: bool = True,
                   class_names: Sequence[str] | None = None) -> np.ndarray:
    """A frame as the overlay mp4 of `vidseg stream` shows it, without the FPS counter.

    Args:
        rgb: uint8 `(H, W, 3)`.
        labels: uint8 `(H, W)` train ids 0..123 (255 = ignore, left unblended).
        alpha: weight of the class colours (`stream.alpha`).
        legend: draw the legend of the visible classes (`stream.legend`).
        class_names: legend names by train id; `class <id>` when None.
    Returns:
        RGB uint8 `(H, W, 3)`.
    """
    img = overlay(rgb, labels, alpha)
    if legend:
        draw_legend(img, labels, class_names)
    return img


def frame_stem(source, index: int) -> str:
    """PNG stem of frame `index`: the file's stem in a frame folder, else the zero-padded index."""
    paths = getattr(source, "paths", None)
    return paths[index].stem if paths is not None else f"{index:06d}"


class StreamOutputs:
    """The writers of one source's run, opened and checked before the first frame.

    Args:
        out_dir: output folder; created and checked writable here.
        video_name: the source's name in file names (`source_video_name`).
        fps: frame rate of the overlay mp4.
        alpha, legend, class_names: overlay rendering, as in `render_overlay`.
        overlay: write `<video>_overlay.mp4`.
        labels: write VSPW train-id PNGs (ids must be < 124).
        color: write colour overlay PNGs.
        queue_size: frames the overlay encoder thread buffers.
    Raises:
        SinkError: the folder is not writable.
    """

    def __init__(self, out_dir: str | Path, video_name: str, fps: float, *, alpha: float = 0.5,
                 legend: bool = True, class_names: Sequence[str] | None = None,
                 overlay: bool = True, labels: bool = False, color: bool = False,
                 queue_size: int = 8):
        ensure_writable_dir(out_dir)
        self.video_name = video_name
        self.paths = output_paths(out_dir, video_name)
        self.overlay = OverlayVideoWriter(self.paths["overlay"], fps=fps, alpha=alpha,
                                          legend=legend, class_names=class_names, threaded=True,
                                          queue_size=queue_size) if overlay else None
        self.labels = LabelPngWriter(self.paths["labels"]) if labels else None
        self.color = ColorPngWriter(self.paths["color"], alpha=alpha) if color else None
        self._first_size: tuple[int, int] | None = None

    @classmethod
    def for_source(cls, out_dir: str | Path, source, cfg, class_names=None, **outputs
                   ) -> StreamOutputs:
        """The outputs `vidseg stream` opens for `source` (a `FrameSource`) under `cfg.stream`.

        `class_names` default to the class list of `cfg.data.root` when readable; `outputs` are
        the `overlay` / `labels` / `color` switches.
        """
        return cls(out_dir, source_video_name(source), (source.fps or 25.0) / source.stride,
                   alpha=cfg.stream.alpha, legend=cfg.stream.legend,
                   class_names=class_names if class_names is not None else class_names_for(cfg),
                   queue_size=cfg.stream.queue_size, **outputs)

    def write(self, stem: str, rgb: np.ndarray, labels: np.ndarray,
              fps_value: float | None = None) -> None:
        """Hand one frame to every writer.

        Args:
            stem: PNG file stem (`frame_stem`).
            rgb: uint8 `(H, W, 3)`.
            labels: uint8 `(H, W)` train ids.
            fps_value: drawn on the overlay video as an FPS counter.
        """
        size = rgb.shape[:2]
        if self._first_size is None:
            self._first_size = size
        elif size != self._first_size:
            # one mp4 has one frame size: later frames follow the first one's, as in `vidseg stream`
            wh = (self._first_size[1], self._first_size[0])
            rgb = cv2.resize(rgb, wh, interpolation=cv2.INTER_LINEAR)
            labels = cv2.resize(labels, wh, interpolation=cv2.INTER_NEAREST)
        if self.overlay is not None:
            self.overlay.write(rgb, labels, fps_value)
        if self.labels is not None:
            self.labels.write(self.video_name, stem, labels)
        if self.color is not None:
            self.color.write(self.video_name, stem, labels, rgb)

    def close(self) -> None:
        """Finish every file (the mp4 stays playable); safe to call twice."""
        # only the overlay encoder can fail on close, so it goes last and the PNGs are done
        for writer in (self.labels, self.color, self.overlay):
            if writer is not None:
                writer.close()

    def __enter__(self) -> StreamOutputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
