"""The frame-source base class and what every source shares: ``Frame``, ``SourceError``.

Its own module so that ``sources`` (files, folders, ``open_source``) and ``camera`` (live
sources) both build on it without importing each other.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import numpy as np

from vidseg.errors import VidsegError

# The base class's warnings keep the logger name they had before this module was split out,
# so logging filters set on "vidseg.io.sources" still see them.
log = logging.getLogger("vidseg.io.sources")

Frame = tuple[int, float, np.ndarray]
_END = object()


class SourceError(VidsegError, RuntimeError):
    """A source that cannot be opened; the message names the source and the cause."""


def _check_options(name: str, stride: int, max_frames: int | None, short_side: int | None) -> None:
    if stride < 1:
        raise ValueError(f"{name}: stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"{name}: max_frames must be >= 1 or None, got {max_frames}")
    if short_side is not None and short_side < 1:
        raise ValueError(f"{name}: short_side must be >= 1 or None, got {short_side}")


def _expected_count(total: int | None, stride: int, max_frames: int | None) -> int | None:
    if total is None:
        return max_frames
    n = (total + stride - 1) // stride
    return n if max_frames is None else min(n, max_frames)


class FrameSource:
    """Base class: a context manager and a one-shot iterator of ``(index, timestamp_s, rgb)``.

    Subclasses implement ``_produce()``, a generator run in a background thread that feeds a
    queue of at most ``queue_size`` frames (the thread blocks while the queue is full).

    Attributes:
        name: the source as given (path, device index or URL).
        num_frames: frames that will be yielded (an upper bound if some prove unreadable),
            None if unknown.
        fps: nominal frame rate, None if unknown.
        frames_read: frames yielded to the consumer so far.
        frames_decoded: frames produced by the background thread so far.
        dropped: frames discarded because the consumer was too slow (cameras only).
        skipped: unreadable frames that were skipped (frame folders).
        error: None, or why decoding stopped early (the frames before it are still yielded).
    """

    def __init__(
        self,
        name: str,
        stride: int = 1,
        max_frames: int | None = None,
        short_side: int | None = None,
        queue_size: int = 8,
    ):
        _check_options(name, stride, max_frames, short_side)
        if queue_size < 1:
            raise ValueError(f"{name}: queue_size must be >= 1, got {queue_size}")
        self.name = name
        self.stride = stride
        self.max_frames = max_frames
        self.short_side = short_side
        self.num_frames: int | None = None
        self.fps: float | None = None
        self.frames_read = 0
        self.frames_decoded = 0
        self.dropped = 0
        self.skipped = 0
        self.error: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._iterated = False

    def _produce(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _release(self) -> None:
        """Free decoder resources; called once, from the producer thread or from close()."""

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for frame in self._produce():
                if self._stop.is_set():
                    break
                self.frames_decoded += 1
                if not self._put(frame):
                    break
        except Exception as exc:  # noqa: BLE001 - any decoder failure ends the stream, not the run
            self.error = f"{self.name}: decoding stopped after {self.frames_decoded} frames: {exc}"
        finally:
            self._release()
            self._put(_END)

    def start(self) -> FrameSource:
        """Start the background decoder (iteration starts it implicitly)."""
        if self._closed:
            raise RuntimeError(f"{self.name}: source is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"decode:{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def _take(self) -> Frame | None:
        """Next frame from the background thread, None at the end of the stream."""
        item = self._queue.get()
        return None if item is _END else item

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError(f"{self.name}: a source can be iterated only once")
        self._iterated = True
        self.start()
        while self.max_frames is None or self.frames_read < self.max_frames:
            item = self._take()
            if item is None:
                break
            self.frames_read += 1
            yield item
        if self.error:
            log.warning(
                "%s (%d frames read, %d dropped, %d skipped)",
                self.error,
                self.frames_read,
                self.dropped,
                self.skipped,
            )

    def close(self) -> None:
        """Stop the background thread and free the decoder; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is None:
            self._release()
            return
        # Drain so a producer blocked on put() sees the stop flag promptly.
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
