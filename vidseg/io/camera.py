"""Live sources: a camera index, a /dev/video* device or a stream URL, read with OpenCV."""

from __future__ import annotations

import logging
import threading
import time

import cv2

from vidseg.data.transforms import resize_short_side
from vidseg.io.source_base import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)


class CameraSource(FrameSource):
    """A live camera (device index) or stream URL (rtsp/http MJPEG) read with cv2.VideoCapture.

    A reader thread keeps only the newest frame; a frame overwritten before the consumer took it is
    counted in ``dropped``. When reads fail, the capture is reopened up to ``reconnect_attempts``
    times (``reconnect_delay_s`` apart); after that the stream stops cleanly with ``error`` set.
    Timestamps are seconds since the source started, taken at capture time. ``queue_size`` is
    accepted for a uniform ``open_source`` interface; a camera holds at most one pending frame.

    Raises:
        SourceError: at construction, if the device or URL does not open.
    """

    def __init__(self, device: int | str, stride: int = 1, max_frames: int | None = None,
                 short_side: int | None = None, reconnect_attempts: int = 3,
                 reconnect_delay_s: float = 0.5, queue_size: int = 1):
        label = f"camera {device}" if isinstance(device, int) else str(device)
        super().__init__(label, stride, max_frames, short_side, queue_size)
        self.device = device
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.reconnects = 0
        self._slot: Frame | None = None
        self._done = False
        self._cond = threading.Condition()
        self._cap = self._open_capture()
        if self._cap is None:
            what = "device index" if isinstance(device, int) else "stream URL"
            raise SourceError(f"{label}: could not open {what} (cv2.VideoCapture.isOpened() is False)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None

    def _open_capture(self):
        if isinstance(self.device, int):
            cap = cv2.VideoCapture(self.device)
        else:
            cap = cv2.VideoCapture(self.device, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            return None
        # Ask the driver for a 1-frame buffer so frames are fresh; many backends ignore it.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _run(self) -> None:
        t0 = time.monotonic()
        captured = 0
        failures = 0
        try:
            while not self._stop.is_set():
                ok, bgr = self._cap.read() if self._cap is not None else (False, None)
                if ok and bgr is not None:
                    failures = 0
                    index = captured
                    captured += 1
                    if index % self.stride:
                        continue
                    rgb = resize_short_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.short_side, None)
                    self.frames_decoded += 1
                    with self._cond:
                        if self._slot is not None:
                            self.dropped += 1
                        self._slot = (index, time.monotonic() - t0, rgb)
                        self._cond.notify_all()
                    continue
                if failures >= self.reconnect_attempts:
                    self.error = (f"{self.name}: stream ended or disconnected after {captured} "
                                  f"frames; {failures} reconnect attempts failed")
                    break
                failures += 1
                self.reconnects += 1
                log.warning("%s: read failed, reconnecting (%d/%d)", self.name, failures,
                            self.reconnect_attempts)
                if self._cap is not None:
                    self._cap.release()
                if self._stop.wait(self.reconnect_delay_s):
                    break
                self._cap = self._open_capture()
        except Exception as exc:  # noqa: BLE001 - a broken backend must end the stream, not hang
            self.error = f"{self.name}: capture failed after {captured} frames: {exc}"
        finally:
            self._release()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _take(self) -> Frame | None:
        with self._cond:
            while self._slot is None and not self._done:
                self._cond.wait(timeout=0.1)
            item, self._slot = self._slot, None
        return item

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
