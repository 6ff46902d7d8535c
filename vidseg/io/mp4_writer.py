"""The overlay video: frames blended with their label colours, written as a fragmented H.264 mp4.

Fragmented so that a killed process leaves every fragment flushed so far playable; a failed
write cuts the file back to its last complete fragment and raises ``SinkWriteError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidseg.io.palette import overlay
from vidseg.io.sink_base import (
    SinkError,
    SinkWriteError,
    draw_fps,
    draw_legend,
    ensure_writable_dir,
)

log = logging.getLogger(__name__)
_STOP = object()


# The mp4 is fragmented (moof + mdat pieces after an empty moov), so every fragment on disk is
# playable without the index a plain mp4 writes only at close. frag_duration starts a fragment at
# least every `fragment_s` of video, at a keyframe or not, so x264's default GOP (250 frames) is
# kept: measured on a 360p overlay, 1 s GOPs cost +21% size, 1 s fragments +0.02%.
# flush_packets hands each fragment to the OS as soon as it is complete. (An empty moov leaves no
# room for the edit list that hides x264's B-frame delay: the first frame shows at 1-2 frames.)
_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"


def count_video_frames(path: str | Path) -> int:
    """Frames in a video file, counted from its packets without decoding.

    Raises:
        OSError, av.FFmpegError: the file cannot be read.
    """
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


class OverlayVideoWriter:
    """Writes frames blended with their label colours as a fragmented H.264 mp4 (libx264, yuv420p).

    Odd frame sizes are padded (bottom / right, black) to even ones, as yuv420p requires.
    With ``threaded=True`` a background thread blends and encodes from a bounded queue, so
    encoding overlaps with the caller's compute; arrays are copied on ``write``.

    The file plays while it is written: every ``fragment_s`` of video goes to the file as one
    fragment, so a killed process loses at most that, the frames inside the encoder (its
    lookahead, about 10 frames) and the queue. A write error (full disk, file size limit, I/O error)
    stops the encoding; ``close()`` then cuts the file back to its last complete fragment (or
    removes it when no frame was complete) and sets ``frames_kept``. The error is raised as
    ``SinkWriteError`` by every later ``write``, and by ``close`` unless a ``write`` already did.

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
        fragment_s: the longest stretch of video (seconds) held in memory before it is written.

    Attributes:
        frames_written: frames handed to the encoder.
        frames_kept: frames the finished file holds (set by ``close``).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        alpha: float = 0.5,
        class_names: Sequence[str] | None = None,
        legend: bool = True,
        show_fps: bool = True,
        threaded: bool = False,
        queue_size: int = 8,
        crf: int = 23,
        preset: str = "veryfast",
        fragment_s: float = 1.0,
    ):
        if not fps or fps <= 0:
            raise ValueError(f"{path}: fps must be > 0, got {fps}")
        if not fragment_s > 0:
            raise ValueError(f"{path}: fragment_s must be > 0, got {fragment_s}")
        self.path = Path(path)
        ensure_writable_dir(self.path.parent)
        self.fps, self.alpha, self.class_names = fps, alpha, class_names
        self.legend, self.show_fps = legend, show_fps
        self.crf, self.preset, self.fragment_s = crf, preset, fragment_s
        self.frames_written = 0
        self.frames_kept = 0
        self.size: tuple[int, int] | None = None
        self._container = None
        self._stream = None
        self._closed = False
        self._error: BaseException | None = None
        self._reported = False
        # File size after the last successful mux: flush_packets makes it a fragment boundary.
        self._complete_bytes = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(
                target=self._worker, name=f"encode:{self.path.name}", daemon=True
            )
            self._thread.start()

    def write(self, rgb: np.ndarray, labels: np.ndarray, fps_value: float | None = None) -> None:
        """Add one frame.

        Args:
            rgb: uint8 ``(H, W, 3)``; every frame of a file has the same size.
            labels: uint8 ``(H, W)`` train ids (255 = ignore, left unblended).
            fps_value: drawn as an FPS counter when ``show_fps``.

        Raises:
            SinkWriteError: writing the file failed (now or in the encoder thread).
        """
        if self._closed:
            raise SinkError(f"{self.path}: write() after close()")
        if self._error is not None:
            self._reported = True
            raise self._failure()
        if self._queue is not None:
            self._queue.put((rgb.copy(), labels.copy(), fps_value))
            return
        try:
            self._encode(rgb, labels, fps_value)
        except SinkWriteError as exc:
            self._error, self._reported = exc, True
            raise

    def _failure(self) -> SinkError:
        if isinstance(self._error, SinkError):
            return self._error
        failure = SinkError(f"{self.path}: encoder thread failed: {self._error}")
        failure.__cause__ = self._error
        return failure

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
        options = {
            "movflags": _MOVFLAGS,
            "frag_duration": str(round(self.fragment_s * 1e6)),
            "flush_packets": "1",
        }
        try:
            self._container = av.open(str(self.path), "w", format="mp4", options=options)
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot create video file ({exc})") from exc
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(
            "libx264", rate=rate, options={"crf": str(self.crf), "preset": self.preset}
        )
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"

    def _mux(self, packets: list) -> None:
        try:
            self._container.mux(packets)
        except OSError as exc:  # PyAV's errors for ENOSPC, EFBIG, EIO derive from OSError
            raise SinkWriteError(self.path, exc) from exc
        if packets:
            self._complete_bytes = os.path.getsize(self.path)

    def _encode(self, rgb: np.ndarray, labels: np.ndarray, fps_value: float | None) -> None:
        import av

        img = self._render(rgb, labels, fps_value)
        h, w = img.shape[:2]
        with self._lock:
            if self._container is None:
                self._open(h, w)
            if (h, w) != self.size:
                raise ValueError(
                    f"{self.path}: frame size {(h, w)} differs from the first frame's {self.size}"
                )
            if h % 2 or w % 2:
                img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            self._mux(self._stream.encode(frame))
            self.frames_written += 1

    def close(self) -> None:
        """Drain the queue, flush the encoder and write the last fragment; safe to call twice.

        Raises:
            SinkWriteError: a write failed and no ``write`` call has raised it yet; the file
                keeps its complete fragments (``frames_kept``).
            SinkError: the encoder thread failed otherwise.
        """
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
        with self._lock:
            if self._container is not None:
                self._finish()
                self._container = None
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._failure()

    def _finish(self) -> None:
        import av

        if not isinstance(self._error, SinkWriteError):
            try:
                self._mux(self._stream.encode(None))
                try:
                    self._container.close()  # writes the last fragment
                except OSError as exc:
                    raise SinkWriteError(self.path, exc) from exc
                self.frames_kept = self.frames_written
                return
            except SinkWriteError as exc:
                self._error = self._error or exc
        with contextlib.suppress(OSError, av.FFmpegError):  # its trailer cannot be written either
            self._container.close()
        try:
            if self._complete_bytes:
                os.truncate(self.path, self._complete_bytes)
                self.frames_kept = count_video_frames(self.path)
            if self.frames_kept == 0:
                self.path.unlink(missing_ok=True)  # a header without frames is not a video
        except (OSError, av.FFmpegError) as exc:
            log.warning(
                "%s: could not cut the file back to its last complete fragment: %s", self.path, exc
            )

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
