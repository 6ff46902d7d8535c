"""Reading the frames of a video file: by index for training clips, in order for evaluation.

Random access uses decord when its self-test passes on this machine, else PyAV seeking to the
keyframe before the wanted frame (`vidseg.io.selftest.video_reader` decides; `vidseg info`
says which and why). Evaluation reads every frame once, so it decodes in order with PyAV.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np

from vidseg.io.random_access import PyAVFrameReader, open_frame_reader
from vidseg.io.selftest import video_reader

logger = logging.getLogger(__name__)

# decord readers hold a file handle and decoder each; PyAV readers only their packet table
MAX_OPEN_READERS = 32


class VideoFileReaders:
    """Random-access readers of video files, opened on demand, at most `MAX_OPEN_READERS` open.

    Args:
        backend: "auto" (`$VIDSEG_VIDEO_READER` if set, else decord if it passes its self-test,
            else PyAV with seeking), "decord" (an error if its self-test fails) or "pyav".

    Attributes:
        decision: the `Decision` (choice and reason) of `vidseg.io.selftest.video_reader`.
        backend: "decord" or "pyav".

    Raises:
        ValueError: unknown backend. SelfTestError: decord required but failing its self-test.
    """

    def __init__(self, backend: str = "auto"):
        self.decision = video_reader(backend)
        self.backend = self.decision.choice
        self._readers: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # open decord readers are native handles: each process reopens its own
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state

    def reader(self, path: str):
        """The open reader of `path` (`len()`, `get(indices)`), opening it if needed."""
        if os.getpid() != self._pid:  # native handles must not cross a DataLoader fork
            self._readers, self._pid = OrderedDict(), os.getpid()
        if path in self._readers:
            self._readers.move_to_end(path)
        else:
            self._readers[path] = open_frame_reader(path, self.backend)
            if len(self._readers) > MAX_OPEN_READERS:
                self._readers.popitem(last=False)
        return self._readers[path]

    def num_frames(self, path: str) -> int:
        """Frames in the file as the chosen reader counts them (decoded index 0..n-1)."""
        return len(self.reader(path))

    def get(self, path: str, indices: Sequence[int]) -> dict[int, np.ndarray]:
        """RGB uint8 `(H, W, 3)` frames by decoded index; frames that do not decode are left out."""
        reader = self.reader(path)
        try:
            return reader.get(indices)
        except Exception as exc:
            if isinstance(reader, PyAVFrameReader):
                raise
            # decord refuses the whole batch on a damaged stream; PyAV keeps what decodes
            logger.warning(
                "decord failed on %s (%s); reading it with PyAV",
                path,
                str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
            )
            self._readers[path] = PyAVFrameReader(path)
            return self._readers[path].get(indices)


def iter_video_frames(path: str) -> Iterator[np.ndarray]:
    """Every decodable frame of `path` in decode order, upright RGB uint8 `(H, W, 3)`.

    Upright as the random-access readers give them (the display matrix applied,
    `vidseg.io.orientation`), so training and evaluation see the same pixels. Stops early (with
    a warning naming the file) where the stream stops decoding.

    Raises:
        ValueError: the file does not open or holds no video stream.
    """
    import av

    from vidseg.io.orientation import UprightConverter

    upright = UprightConverter(path)
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"video {path} cannot be opened: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"video {path} holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield upright(frame, stream)
        except av.error.FFmpegError as exc:  # corrupt data: keep what decoded
            logger.warning("decoding %s stopped early: %s", path, exc)


def video_frame_size(path: str) -> tuple[int, int]:
    """Upright `(H, W)` of the first video stream: the header's size, swapped for a file whose
    display matrix turns it by 90 or 270 degrees (decodes one frame to see the matrix).

    Raises:
        ValueError: the file does not open or holds no video stream.
    """
    import av

    from vidseg.io.orientation import probe_orientation

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"video {path} holds no video stream")
            ctx = container.streams.video[0].codec_context
            size = int(ctx.height), int(ctx.width)
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"video {path} cannot be opened: {exc}") from exc
    orientation = probe_orientation(path)
    return size[::-1] if orientation is not None and orientation.transpose else size


def iter_labelled_frames(video) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """One item per frame of a `LabelledVideo`, in order: `(rgb, None)` or `(None, reason)`.

    Image files are read one by one; a video file is decoded once, in order, and frames past
    the point where it stops decoding are reported unreadable.
    """
    from vidseg.data.image_files import read_frame

    if video.video_path is None:
        for path in video.frame_paths:
            try:
                yield read_frame(path), None
            except OSError as exc:
                yield None, str(exc)
        return
    with contextlib.closing(iter_video_frames(video.video_path)) as decoded:
        for i in range(len(video)):
            rgb = next(decoded, None)
            yield (
                (rgb, None)
                if rgb is not None
                else (None, f"video {video.video_path}: frame {i} does not decode")
            )
