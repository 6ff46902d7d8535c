"""The files one streamed source leaves in an output folder, and the overlay frames shown to users.

`vidseg stream SOURCE --out DIR` (through `StreamRunner`) and `Segmenter.stream(source,
out=DIR)` write through one `StreamOutputs`: `<video>_overlay.mp4` (`output_paths`), and on
request VSPW label PNGs `labels/<video>/<stem>.png` and colour PNGs `color/<video>/<stem>.png`,
with the same writers, the same stems (`frame_stem`) and the same frame-size rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vidseg.io.palette import overlay
from vidseg.io.sinks import (
    ColorPngWriter,
    LabelPngWriter,
    OverlayVideoWriter,
    draw_legend,
    ensure_writable_dir,
)

log = logging.getLogger(__name__)


def class_names_for(cfg) -> list[str] | None:
    """Class names for legends and the live page, from the dataset the config points to.

    `data.root` (else `$VSPW_ROOT`, as training and eval read it) in `data.format`:
    VSPW's `label_num_dic_final.json` (the synthetic generator writes one too), the other
    layouts' `classes.txt` (`vidseg.data.layouts.class_names`).

    Returns:
        `model.num_classes` names in train-id order, or None (the legend then says `class <id>`)
        when no root is set, its list is unreadable or names another number of classes.
    """
    from vidseg.data.layouts import class_names

    root = cfg.data.root or os.environ.get("VSPW_ROOT", "")
    if not root:
        return None
    try:
        names = class_names(root, cfg.data.format, cfg.model.num_classes)
    except (OSError, ValueError):
        return None
    return names if len(names) == cfg.model.num_classes else None


def output_paths(out_dir: str | Path, video_name: str) -> dict:
    """Where a run writes: overlay mp4, label PNG root, colour PNG root."""
    out = Path(out_dir)
    return {
        "overlay": out / f"{video_name}_overlay.mp4",
        "labels": out / "labels",
        "color": out / "color",
    }


def source_video_name(source) -> str:
    """A file-system-safe name for the source: file / folder stem, `camera<N>` or `stream`."""
    device = getattr(source, "device", None)
    if isinstance(device, int):
        return f"camera{device}"
    if device is not None:
        return "stream"
    stem = Path(source.name.rstrip("/")).stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "stream"


def render_overlay(
    rgb: np.ndarray,
    labels: np.ndarray,
    alpha: float = 0.5,
    legend: bool = True,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
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
    """The writers of one source's run; every frame goes to each at the first frame's size.

    Args:
        video_name: the source's name in file names (`source_video_name`).
        overlay: an `OverlayVideoWriter` or None.
        labels: a `LabelPngWriter` (VSPW train-id PNGs, ids < 124) or None.
        color: a `ColorPngWriter` or None.
        paths: where the files are (`output_paths`); None when the writers were opened elsewhere.
    """

    def __init__(
        self,
        video_name: str,
        overlay: OverlayVideoWriter | None = None,
        labels: LabelPngWriter | None = None,
        color: ColorPngWriter | None = None,
        paths: dict | None = None,
    ):
        self.video_name = video_name
        self.overlay, self.labels, self.color = overlay, labels, color
        self.paths = paths
        self._first_size: tuple[int, int] | None = None
        self._resized = False

    @classmethod
    def open(
        cls,
        out_dir: str | Path,
        video_name: str,
        fps: float,
        *,
        alpha: float = 0.5,
        legend: bool = True,
        class_names: Sequence[str] | None = None,
        overlay: bool = True,
        labels: bool = False,
        color: bool = False,
        queue_size: int = 8,
    ) -> StreamOutputs:
        """Check `out_dir` is writable and open the asked writers (the mp4 encodes in a thread).

        Args:
            out_dir: output folder; created here.
            video_name: the source's name in file names.
            fps: frame rate of the overlay mp4.
            alpha, legend, class_names: overlay rendering, as in `render_overlay`.
            overlay, labels, color: which files to write.
            queue_size: frames the overlay encoder thread buffers.
        Raises:
            SinkError: the folder is not writable.
        """
        ensure_writable_dir(out_dir)
        paths = output_paths(out_dir, video_name)
        return cls(
            video_name,
            OverlayVideoWriter(
                paths["overlay"],
                fps=fps,
                alpha=alpha,
                legend=legend,
                class_names=class_names,
                threaded=True,
                queue_size=queue_size,
            )
            if overlay
            else None,
            LabelPngWriter(paths["labels"]) if labels else None,
            ColorPngWriter(paths["color"], alpha=alpha) if color else None,
            paths,
        )

    @classmethod
    def for_source(
        cls, out_dir: str | Path, source, cfg, class_names=None, **outputs
    ) -> StreamOutputs:
        """The outputs `vidseg stream` opens for `source` (a `FrameSource`) under `cfg.stream`.

        `class_names` default to `class_names_for(cfg)`; `outputs` are the `overlay` /
        `labels` / `color` switches of `open`.
        """
        return cls.open(
            out_dir,
            source_video_name(source),
            (source.fps or 25.0) / source.stride,
            alpha=cfg.stream.alpha,
            legend=cfg.stream.legend,
            class_names=class_names if class_names is not None else class_names_for(cfg),
            queue_size=cfg.stream.queue_size,
            **outputs,
        )

    def write(
        self, stem: str, rgb: np.ndarray, labels: np.ndarray, fps_value: float | None = None
    ) -> None:
        """Hand one frame to every writer.

        Args:
            stem: PNG file stem (`frame_stem`).
            rgb: uint8 `(H, W, 3)`.
            labels: uint8 `(H, W)` train ids.
            fps_value: drawn on the overlay video as an FPS counter.
        Raises:
            SinkWriteError: a write failed (full disk, ...); what was written before is kept.
        """
        size = rgb.shape[:2]
        if self._first_size is None:
            self._first_size = size
        elif size != self._first_size:
            # one mp4 has one frame size, and the PNGs follow it so that they match the video
            if not self._resized:
                log.warning(
                    "%s: frame %s is %s, the stream started at %s; outputs are resized "
                    "to the first size",
                    self.video_name,
                    stem,
                    size,
                    self._first_size,
                )
                self._resized = True
            wh = (self._first_size[1], self._first_size[0])
            rgb = cv2.resize(rgb, wh, interpolation=cv2.INTER_LINEAR)
            labels = cv2.resize(labels, wh, interpolation=cv2.INTER_NEAREST)
        if self.overlay is not None:
            self.overlay.write(rgb, labels, fps_value)
        if self.labels is not None:
            self.labels.write(self.video_name, stem, labels)
        if self.color is not None:
            self.color.write(self.video_name, stem, labels, rgb)

    def frames_written(self) -> dict[str, int]:
        """Frames each output holds (`overlay`, `labels`, `color`; only the open ones).

        After `close`, the mp4's count is that of its complete fragments (`frames_kept`).
        """
        return {
            name: getattr(w, "frames_kept", w.frames_written)
            for name, w in (
                ("overlay", self.overlay),
                ("labels", self.labels),
                ("color", self.color),
            )
            if w is not None
        }

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
