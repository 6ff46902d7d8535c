"""Outputs: VSPW label PNGs, colour PNGs, signal-safe closing; and, re-exported, the overlay mp4
(`mp4_writer`), the live window (`live_window`) and the shared errors and drawing (`sink_base`).

Writers check their output folder at construction (one clear error instead of a failure after the
first frame) and ``close()`` idempotently. ``close_on_signal`` turns SIGINT / SIGTERM into an
exception and closes the writers on the way out, so an interrupted run leaves a playable mp4 of
every frame written so far. Nothing written is lost to a crash or a full disk either: the mp4 is
fragmented (a killed process leaves every fragment flushed so far playable), PNGs appear
atomically, and a failed write raises ``SinkWriteError`` after leaving the file valid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from vidseg.io.live_window import LiveWindow
from vidseg.io.mp4_writer import OverlayVideoWriter, count_video_frames
from vidseg.io.palette import NUM_COLORS, colorize, overlay
from vidseg.io.sink_base import (
    Interrupted,
    SinkError,
    SinkWriteError,
    draw_fps,
    draw_legend,
    ensure_writable_dir,
)

# the writers and errors callers import from here, wherever they are defined
__all__ = [
    "ColorPngWriter",
    "Interrupted",
    "LabelPngWriter",
    "LiveWindow",
    "OverlayVideoWriter",
    "SinkError",
    "SinkWriteError",
    "close_on_signal",
    "count_video_frames",
    "draw_fps",
    "draw_legend",
    "ensure_writable_dir",
    "write_png_atomic",
]

log = logging.getLogger(__name__)


def write_png_atomic(path: Path, img: np.ndarray) -> None:
    """Encode ``img`` (uint8 ``(H, W)`` or BGR ``(H, W, 3)``) as a PNG at ``path``, all or nothing.

    The bytes go to a hidden temporary file in the same folder that `os.replace` then renames,
    so a killed process or a full disk never leaves a cut PNG under the final name (no fsync: a
    crash of the process keeps the OS's copy; only a power loss could lose the last files).

    Raises:
        SinkWriteError: naming the PNG and the OS error; the temporary file is removed.
    """
    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise SinkError(f"{path}: PNG encoding failed for an array {img.dtype} {img.shape}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SinkWriteError(path, exc) from exc


def _check_ids(labels: np.ndarray, where: Path) -> None:
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"{where}: labels must be uint8 (H, W), got {labels.dtype} {labels.shape}")
    if labels.size and labels.max() >= NUM_COLORS:
        bad = np.unique(labels[labels >= NUM_COLORS])[:8].tolist()
        raise ValueError(
            f"{where}: label values {bad} outside the train ids 0..{NUM_COLORS - 1} "
            "that the VSPW evaluation expects"
        )


class LabelPngWriter:
    """VSPW-format predictions: ``<out_dir>/<video>/<stem>.png``, 8-bit single channel, train ids."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = ensure_writable_dir(out_dir)
        self.frames_written = 0

    def write(self, video: str, stem: str, labels: np.ndarray) -> Path:
        """Write one label map (uint8 ``(H, W)``, values 0..123); returns the PNG path.

        Raises:
            SinkWriteError: the file could not be written (no partial PNG is left).
        """
        path = self.out_dir / video / f"{stem}.png"
        _check_ids(labels, path)
        write_png_atomic(path, np.ascontiguousarray(labels))
        self.frames_written += 1
        return path

    def close(self) -> None:
        """Nothing is buffered; present so every writer can be closed alike."""


class ColorPngWriter:
    """Colour PNGs ``<out_dir>/<video>/<stem>.png``: the palette, or an overlay when ``rgb`` is given."""

    def __init__(self, out_dir: str | Path, alpha: float = 0.5):
        self.out_dir = ensure_writable_dir(out_dir)
        self.alpha = alpha
        self.frames_written = 0

    def write(
        self, video: str, stem: str, labels: np.ndarray, rgb: np.ndarray | None = None
    ) -> Path:
        """Write ``colorize(labels)`` or ``overlay(rgb, labels)``; returns the PNG path."""
        path = self.out_dir / video / f"{stem}.png"
        img = colorize(labels) if rgb is None else overlay(rgb, labels, self.alpha)
        write_png_atomic(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        self.frames_written += 1
        return path

    def close(self) -> None:
        """Nothing is buffered; present so every writer can be closed alike."""


@contextlib.contextmanager
def close_on_signal(
    *closables, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[None]:
    """Close writers on exit, including on Ctrl-C / SIGTERM.

    Inside the block the first SIGINT / SIGTERM raises ``Interrupted`` (a KeyboardInterrupt) in
    the main thread; on the way out every closable is closed in reverse order with further signals
    ignored, so the encoder flush cannot itself be interrupted. Handlers are only installed from
    the main thread; elsewhere the block still closes its writers.

    Args:
        *closables: objects with ``close()`` (writers, sources, windows).
        signals: the signals to catch.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = {}

    def handler(signum, _frame):
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    if main:
        for s in signals:
            previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        if main:
            for s in signals:
                signal.signal(s, signal.SIG_IGN)
        # Do not mask an exception already leaving the block: then every close error is logged.
        leaving = sys.exc_info()[0] is not None
        first_error = None
        try:
            for c in reversed(closables):
                try:
                    c.close()
                except Exception as exc:  # noqa: BLE001 - close the others, then report
                    if leaving or first_error is not None:
                        log.error("closing %r failed: %s", c, exc)
                    else:
                        first_error = exc  # raised below, so not logged twice
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        if first_error is not None:
            raise first_error
