"""Outputs: overlay mp4 (PyAV H.264), VSPW label PNGs, colour PNGs, a live window.

Writers check their output folder at construction (one clear error instead of a failure after the
first frame) and ``close()`` idempotently. ``close_on_signal`` turns SIGINT / SIGTERM into an
exception and closes the writers on the way out, so an interrupted run leaves a playable mp4 of
every frame written so far.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from vidseg.errors import VidsegError
from vidseg.io.palette import NUM_COLORS, PALETTE, colorize, label_counts, overlay

log = logging.getLogger(__name__)
_STOP = object()


class SinkError(VidsegError, RuntimeError):
    """An output that cannot be written; the message names the path and the cause."""


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by ``close_on_signal`` when SIGINT or SIGTERM arrives."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it is writable by creating a temporary file in it.

    Raises:
        SinkError: naming the folder and the OS error.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".vidseg-write-test"):
            pass
    except OSError as exc:
        raise SinkError(f"{path}: output folder is not writable ({exc.strerror or exc})") from exc
    return path


def _font_scale(height: int) -> float:
    return float(np.clip(height / 720.0 * 0.9, 0.35, 1.2))


def draw_legend(img: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None,
                max_items: int = 10) -> np.ndarray:
    """Draw, in place, a top-left box listing the classes visible in ``labels`` (largest first).

    Args:
        img: RGB uint8 ``(H, W, 3)``, modified in place and returned.
        labels: uint8 ``(H, W)`` train ids (255 = ignore, not listed).
        class_names: name of each train id; ``class <id>`` when None or too short.
        max_items: at most this many rows, then a ``+N more`` row.
    """
    counts = label_counts(labels)[:NUM_COLORS]
    ids = np.nonzero(counts)[0]
    if ids.size == 0:
        return img
    order = ids[np.argsort(-counts[ids], kind="stable")]
    names = [class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"
             for k in order[:max_items]]
    if order.size > max_items:
        names.append(f"+{order.size - max_items} more")
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, _font_scale(img.shape[0])
    (_, th), base = cv2.getTextSize("Ag", font, scale, 1)
    pad, row = max(2, th // 3), th + base + max(2, th // 3)
    box_w = pad * 3 + th + max(cv2.getTextSize(n, font, scale, 1)[0][0] for n in names)
    box_h = pad * 2 + row * len(names)
    h, w = img.shape[:2]
    x1, y1 = min(w, box_w), min(h, box_h)
    # Darken instead of painting an opaque box, so the scene under the legend stays visible.
    img[:y1, :x1] = (img[:y1, :x1].astype(np.uint16) * 2 // 5).astype(np.uint8)
    for r, name in enumerate(names):
        y = pad + r * row
        if r < max_items and r < order.size:
            color = tuple(int(c) for c in PALETTE[order[r]])
            cv2.rectangle(img, (pad, y), (pad + th, y + th), color, thickness=-1)
        cv2.putText(img, name, (pad * 2 + th, y + th), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def draw_fps(img: np.ndarray, fps_value: float) -> np.ndarray:
    """Draw ``<fps> FPS`` in the top-right corner of an RGB uint8 image, in place."""
    text = f"{fps_value:.1f} FPS"
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, _font_scale(img.shape[0])
    (tw, th), _ = cv2.getTextSize(text, font, scale, 2)
    org = (max(0, img.shape[1] - tw - th // 2), th + th // 2)
    cv2.putText(img, text, org, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


class OverlayVideoWriter:
    """Writes frames blended with their label colours as an H.264 (libx264, yuv420p) mp4.

    Odd frame sizes are padded (bottom / right, black) to even ones, as yuv420p requires.
    With ``threaded=True`` a background thread blends and encodes from a bounded queue, so
    encoding overlaps with the caller's compute; arrays are copied on ``write``.

    Args:
        path: output .mp4; its folder is created and checked at construction.
        fps: frame rate stored in the file.
        alpha: weight of the class colours.
        class_names: names for the legend, indexed by train id.
        legend: draw the legend of visible classes.
        show_fps: draw the ``fps_value`` given to ``write``.
        threaded: encode in a background thread.
        queue_size: frames the background queue holds.
        crf: x264 constant rate factor (lower = better).
        preset: x264 speed preset.
    """

    def __init__(self, path: str | Path, fps: float, alpha: float = 0.5,
                 class_names: Sequence[str] | None = None, legend: bool = True,
                 show_fps: bool = True, threaded: bool = False, queue_size: int = 8,
                 crf: int = 23, preset: str = "veryfast"):
        if not fps or fps <= 0:
            raise ValueError(f"{path}: fps must be > 0, got {fps}")
        self.path = Path(path)
        ensure_writable_dir(self.path.parent)
        self.fps, self.alpha, self.class_names = fps, alpha, class_names
        self.legend, self.show_fps = legend, show_fps
        self.crf, self.preset = crf, preset
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self._container = None
        self._stream = None
        self._closed = False
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(target=self._worker, name=f"encode:{self.path.name}",
                                            daemon=True)
            self._thread.start()

    def write(self, rgb: np.ndarray, labels: np.ndarray, fps_value: float | None = None) -> None:
        """Add one frame.

        Args:
            rgb: uint8 ``(H, W, 3)``; every frame of a file has the same size.
            labels: uint8 ``(H, W)`` train ids (255 = ignore, left unblended).
            fps_value: drawn as an FPS counter when ``show_fps``.
        """
        if self._closed:
            raise SinkError(f"{self.path}: write() after close()")
        if self._error is not None:
            raise SinkError(f"{self.path}: encoder thread failed: {self._error}") from self._error
        if self._queue is None:
            self._encode(rgb, labels, fps_value)
        else:
            self._queue.put((rgb.copy(), labels.copy(), fps_value))

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is None:
                try:
                    self._encode(*item)
                except BaseException as exc:  # noqa: BLE001 - reported by the next write/close
                    self._error = exc

    def _render(self, rgb: np.ndarray, labels: np.ndarray, fps_value: float | None) -> np.ndarray:
        img = overlay(rgb, labels, self.alpha)
        if self.legend:
            draw_legend(img, labels, self.class_names)
        if self.show_fps and fps_value is not None:
            draw_fps(img, fps_value)
        return img

    def _open(self, height: int, width: int) -> None:
        import av

        self.size = (height, width)
        try:
            self._container = av.open(str(self.path), "w")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot create video file ({exc})") from exc
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(
            "libx264", rate=rate, options={"crf": str(self.crf), "preset": self.preset})
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"

    def _encode(self, rgb: np.ndarray, labels: np.ndarray, fps_value: float | None) -> None:
        import av

        img = self._render(rgb, labels, fps_value)
        h, w = img.shape[:2]
        with self._lock:
            if self._container is None:
                self._open(h, w)
            if (h, w) != self.size:
                raise ValueError(f"{self.path}: frame size {(h, w)} differs from the first "
                                 f"frame's {self.size}")
            if h % 2 or w % 2:
                img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1

    def close(self) -> None:
        """Drain the queue, flush the encoder and finish the mp4; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
        with self._lock:
            if self._container is not None:
                try:
                    self._container.mux(self._stream.encode(None))
                finally:
                    self._container.close()
                    self._container = None
        if self._error is not None:
            raise SinkError(f"{self.path}: encoder thread failed: {self._error}") from self._error

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_ids(labels: np.ndarray, where: Path) -> None:
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"{where}: labels must be uint8 (H, W), got {labels.dtype} {labels.shape}")
    if labels.size and labels.max() >= NUM_COLORS:
        bad = np.unique(labels[labels >= NUM_COLORS])[:8].tolist()
        raise ValueError(f"{where}: label values {bad} outside the train ids 0..{NUM_COLORS - 1} "
                         "that the VSPW evaluation expects")


class LabelPngWriter:
    """VSPW-format predictions: ``<out_dir>/<video>/<stem>.png``, 8-bit single channel, train ids."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = ensure_writable_dir(out_dir)
        self.frames_written = 0

    def write(self, video: str, stem: str, labels: np.ndarray) -> Path:
        """Write one label map (uint8 ``(H, W)``, values 0..123); returns the PNG path."""
        path = self.out_dir / video / f"{stem}.png"
        _check_ids(labels, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), np.ascontiguousarray(labels)):
            raise SinkError(f"{path}: cv2.imwrite failed")
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

    def write(self, video: str, stem: str, labels: np.ndarray, rgb: np.ndarray | None = None) -> Path:
        """Write ``colorize(labels)`` or ``overlay(rgb, labels)``; returns the PNG path."""
        path = self.out_dir / video / f"{stem}.png"
        img = colorize(labels) if rgb is None else overlay(rgb, labels, self.alpha)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise SinkError(f"{path}: cv2.imwrite failed")
        self.frames_written += 1
        return path

    def close(self) -> None:
        """Nothing is buffered; present so every writer can be closed alike."""


class LiveWindow:
    """A cv2.imshow window; disables itself (with one warning) when no display can be used."""

    def __init__(self, title: str = "vidseg"):
        self.title = title
        self.enabled = self.available()
        if not self.enabled:
            log.warning("live view disabled: no display (DISPLAY / WAYLAND_DISPLAY unset) or "
                        "an OpenCV build without GUI (opencv-python-headless)")

    @staticmethod
    def gui_backend() -> str:
        """OpenCV's GUI backend as its build information names it ("NONE" when headless)."""
        for line in cv2.getBuildInformation().splitlines():
            if line.strip().startswith("GUI:"):
                return line.split(":", 1)[1].strip()
        return "UNKNOWN"

    @classmethod
    def available(cls) -> bool:
        """False without a reachable display (headless Linux) or without an OpenCV GUI backend."""
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            return False
        return cls.gui_backend() != "NONE"

    def show(self, rgb: np.ndarray) -> bool:
        """Show an RGB uint8 frame; returns False when the user pressed q or Esc."""
        if not self.enabled:
            return True
        try:
            cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            # opencv-python-headless has no GUI backend: imshow raises "not implemented".
            self.enabled = False
            log.warning("live view disabled: cv2.imshow failed (%s)", str(exc).strip().splitlines()[-1])
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
            self.enabled = False


@contextlib.contextmanager
def close_on_signal(*closables, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
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
        first_error = None
        try:
            for c in reversed(closables):
                try:
                    c.close()
                except Exception as exc:  # noqa: BLE001 - close the others, then report
                    log.error("closing %r failed: %s", c, exc)
                    first_error = first_error or exc
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        # Do not mask an exception already leaving the block.
        if first_error is not None and sys.exc_info()[0] is None:
            raise first_error
