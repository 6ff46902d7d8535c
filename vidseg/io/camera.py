"""Live sources: a camera index, a /dev/video* device or a stream URL, read with OpenCV.

A network source can stall: a server that accepts the connection and never answers would block
OpenCV's FFmpeg backend for 30 s, and Python only sees Ctrl-C once that native call returns.
So a URL or device path is opened and read with ``timeout_s`` for both the connect and every
read, and the blocking open runs in a helper thread that the main thread waits on in short
slices, so Ctrl-C interrupts it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import time

import cv2

from vidseg.data.transforms import resize_short_side
from vidseg.io.source_base import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)

# Connect / read timeout of network sources: long enough for a camera on a slow network to
# answer, short enough that a dead one is noticed while the user still watches.
DEFAULT_TIMEOUT_S = 5.0
# How long close() waits for the reader thread; a read blocked on the network may take up to
# timeout_s to return, and the thread then releases the capture itself.
_CLOSE_GRACE_S = 0.5
# A failed open that took this fraction of the timeout or more was cut by the timeout.
_TIMED_OUT_FRACTION = 0.9
# An FFmpeg log line, "[tcp @ 0x55f8...] Connection to tcp://host:9 failed: Connection refused"
_FFMPEG_LINE = re.compile(r"^\[[^\]@]+ @ 0x[0-9a-fA-F]+\] (.+)$")


@contextlib.contextmanager
def _native_stderr_captured():
    """Collect what native code writes to file descriptor 2 while the block runs.

    OpenCV and its FFmpeg report a failed open as several log lines of their own on stderr,
    before and around vidseg's one-line error; the caller keeps the cause and drops the rest.
    Yields a list that holds the captured lines once the block has ended.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 to borrow: capture nothing
        yield lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def _ffmpeg_cause(lines: list[str]) -> str | None:
    """The last FFmpeg log message among `lines` (e.g. "... failed: Connection refused")."""
    causes = [m.group(1).strip() for m in map(_FFMPEG_LINE.match, lines) if m]
    return causes[-1] if causes else None


class CameraSource(FrameSource):
    """A live camera (device index) or stream URL (rtsp/http MJPEG) read with cv2.VideoCapture.

    A reader thread keeps only the newest frame; a frame overwritten before the consumer took it is
    counted in ``dropped``. When reads fail, the capture is reopened up to ``reconnect_attempts``
    times (``reconnect_delay_s`` apart); after that the stream stops cleanly with ``error`` set.
    Timestamps are seconds since the source started, taken at capture time. ``queue_size`` is
    accepted for a uniform ``open_source`` interface; a camera holds at most one pending frame.

    A URL or device path (not a device index) gets ``timeout_s`` as OpenCV's FFmpeg open and
    read timeouts: a server that stops sending ends the read after ``timeout_s``, which starts
    the reconnect attempts above. None keeps OpenCV's default (30 s).

    Raises:
        SourceError: at construction, if the device or URL does not open (the message says
            "timed out" when the open ran into ``timeout_s``).
        ValueError: ``timeout_s`` is not a positive finite number.
    """

    def __init__(
        self,
        device: int | str,
        stride: int = 1,
        max_frames: int | None = None,
        short_side: int | None = None,
        reconnect_attempts: int = 3,
        reconnect_delay_s: float = 0.5,
        queue_size: int = 1,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ):
        label = f"camera {device}" if isinstance(device, int) else str(device)
        super().__init__(label, stride, max_frames, short_side, queue_size)
        if timeout_s is not None and not 0 < timeout_s < float("inf"):
            raise ValueError(
                f"{label}: timeout_s must be a positive number or None, got {timeout_s}"
            )
        self.device = device
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.timeout_s = timeout_s
        self.reconnects = 0
        self._slot: Frame | None = None
        self._done = False
        self._cond = threading.Condition()
        start = time.monotonic()
        with _native_stderr_captured() as native:
            self._cap = self._open_interruptibly()
        if self._cap is not None:
            sys.stderr.write("".join(line + "\n" for line in native))  # not ours to drop
        else:
            log.debug("%s: OpenCV / FFmpeg said: %s", label, " | ".join(native))
            if isinstance(device, int):
                raise SourceError(
                    f"{label}: could not open device index (cv2.VideoCapture.isOpened() is False)"
                )
            waited = time.monotonic() - start
            if self.timeout_s is not None and waited >= _TIMED_OUT_FRACTION * self.timeout_s:
                raise SourceError(
                    f"{label}: could not open stream URL: timed out, no answer "
                    f"within {self.timeout_s:g} s"
                )
            cause = _ffmpeg_cause(native) or (
                "refused, not found or not a video stream: cv2.VideoCapture.isOpened() is False"
            )
            raise SourceError(f"{label}: could not open stream URL ({cause})")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None

    def _open_interruptibly(self):
        """`_open_capture` in a helper thread, waited on in slices so Ctrl-C gets through.

        On an interrupt the helper is abandoned; it releases the capture itself if the open
        still succeeds later.
        """
        box: dict = {}
        lock = threading.Lock()

        def work():
            try:
                cap, error = self._open_capture(), None
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
                cap, error = None, exc
            with lock:
                if box.get("abandoned"):
                    if cap is not None:
                        cap.release()
                else:
                    box["cap"], box["error"] = cap, error

        helper = threading.Thread(target=work, name=f"open:{self.name}", daemon=True)
        helper.start()
        try:
            while helper.is_alive():
                helper.join(0.1)
        except BaseException:
            with lock:
                box["abandoned"] = True
                cap = box.pop("cap", None)
            if cap is not None:
                cap.release()
            raise
        if box.get("error") is not None:
            raise box["error"]
        return box.get("cap")

    def _open_capture(self):
        if isinstance(self.device, int):
            cap = cv2.VideoCapture(self.device)
        elif self.timeout_s is None:
            cap = cv2.VideoCapture(self.device, cv2.CAP_FFMPEG)
        else:
            ms = max(1, round(1000 * self.timeout_s))
            cap = cv2.VideoCapture(
                self.device,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
            )
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
                    rgb = resize_short_side(
                        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.short_side, None
                    )
                    self.frames_decoded += 1
                    with self._cond:
                        if self._slot is not None:
                            self.dropped += 1
                        self._slot = (index, time.monotonic() - t0, rgb)
                        self._cond.notify_all()
                    continue
                if failures >= self.reconnect_attempts:
                    self.error = (
                        f"{self.name}: stream ended or disconnected after {captured} "
                        f"frames; {failures} reconnect attempts failed"
                    )
                    break
                failures += 1
                self.reconnects += 1
                log.warning(
                    "%s: read failed, reconnecting (%d/%d)",
                    self.name,
                    failures,
                    self.reconnect_attempts,
                )
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

    def close(self) -> None:
        """Stop the reader thread, waiting at most a moment for it: safe to call twice.

        A read blocked on the network returns within ``timeout_s``; the thread then releases
        the capture itself, so an interrupted run does not wait for it.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is None:
            self._release()
            return
        self._thread.join(_CLOSE_GRACE_S)
        if self._thread.is_alive():
            log.info(
                "%s: a read is still blocked; the capture is released when it returns", self.name
            )
