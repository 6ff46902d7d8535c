"""Frame sources: video files, frame folders and live cameras / URLs.

Every source yields ``(index, timestamp_s, rgb)`` with ``rgb`` a uint8 array ``(H, W, 3)``.
``index`` is the frame's position in the source before striding (a camera counts every frame it
captured, so gaps in the index show dropped frames). File and folder sources decode in a
background thread into a bounded queue, so decoding overlaps with the consumer's compute while
memory stays bounded; cameras keep only the newest frame (latest-frame policy).

The base class, ``Frame`` and ``SourceError`` live in ``vidseg.io.source_base`` and live sources
in ``vidseg.io.camera``; all are importable from here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from vidseg.data.transforms import resize_short_side
from vidseg.io.camera import DEFAULT_TIMEOUT_S, CameraSource
from vidseg.io.images import UnreadableImageError, read_rgb
from vidseg.io.orientation import UprightConverter, decord_refusal
from vidseg.io.source_base import Frame, FrameSource, SourceError, _expected_count

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
URL_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


class _DecordMisreads(Exception):
    """decord opens this file but would return wrong frames (not (H, W, 3), or not upright)."""


class VideoFileSource(FrameSource):
    """A video file decoded with PyAV (default thread type) or decord.

    ``backend`` is "pyav" (the default: sequential decoding needs nothing faster), "decord"
    (only if decord passes its self-test on this machine, see ``vidseg.io.selftest``) or "auto"
    (``$VIDSEG_VIDEO_READER`` if set, else decord if it passes, else PyAV). ``backend`` ends up
    as the reader used; ``reader_decision`` says why.

    Frames are upright: the display matrix (a phone's rotation, a mirror) is applied as a player
    does (``vidseg.io.orientation``), so a 90-degree file yields ``(W, H, 3)`` frames. decord's
    handling of the matrix differs between versions (3.4.0 rotates but does not mirror), so a
    file with a display matrix is read with PyAV.

    Raises:
        SourceError: at construction, if the file is missing or holds no decodable video stream,
            or if decord is required but fails its self-test or misreads this file.
    """

    def __init__(
        self,
        path: str | Path,
        stride: int = 1,
        max_frames: int | None = None,
        short_side: int | None = None,
        backend: str = "pyav",
        queue_size: int = 8,
    ):
        super().__init__(str(path), stride, max_frames, short_side, queue_size)
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        self._container = None
        self._reader = None
        if backend not in ("pyav", "decord", "auto"):
            raise ValueError(
                f"{self.path}: backend must be 'pyav', 'decord' or 'auto', got {backend!r}"
            )
        from vidseg.io.selftest import SelfTestError, video_reader

        try:
            self.reader_decision = video_reader(backend)
        except (SelfTestError, ValueError) as exc:
            raise SourceError(f"{self.path}: {exc}") from exc
        self.backend = self.reader_decision.choice
        if self.backend == "decord":
            try:
                self._open_decord()
            except _DecordMisreads as exc:
                if backend == "decord":
                    raise SourceError(str(exc)) from exc
                log.warning("%s; reading it with PyAV", exc)
                self.backend = "pyav"
        if self.backend == "pyav":
            self._open_pyav()

    def _open_pyav(self) -> None:
        import av

        try:
            self._container = av.open(str(self.path))
        except Exception as exc:  # noqa: BLE001 - av raises many FFmpegError kinds
            raise SourceError(f"{self.path}: not a readable video ({exc})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.path}: contains no video stream")
        stream = self._container.streams.video[0]
        self._total = stream.frames or None
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.num_frames = _expected_count(self._total, self.stride, self.max_frames)

    def _open_decord(self) -> None:
        import decord  # importable: it passed its self-test

        try:
            self._reader = decord.VideoReader(str(self.path))
        except Exception as exc:  # noqa: BLE001 - DECORDError is not exported consistently
            raise SourceError(f"{self.path}: not a readable video ({exc})") from exc
        self._total = len(self._reader)
        if self._total == 0:
            raise SourceError(f"{self.path}: contains no decodable frames")
        refusal = decord_refusal(self.path)
        if refusal is not None:
            self._reader = None
            raise _DecordMisreads(refusal)
        # decord 3.4.0 misreads some frame widths on some CPUs; the self-test cannot cover all
        shape = tuple(self._reader[0].shape)
        if len(shape) != 3 or shape[2] != 3:
            self._reader = None
            raise _DecordMisreads(
                f"{self.path}: decord returned frames of shape {shape}, expected (H, W, 3)"
            )
        self._reader.seek(0)
        self.fps = float(self._reader.get_avg_fps()) or None
        self.num_frames = _expected_count(self._total, self.stride, self.max_frames)

    def _produce(self) -> Iterator[Frame]:
        yield from (self._produce_pyav() if self.backend == "pyav" else self._produce_decord())
        if self.error is None and self.frames_decoded == 0:
            self.error = f"{self.path}: no frame could be decoded"
        # A container index promising more frames than were decoded means a cut-off file.
        elif self.error is None and self._total and self.max_frames is None:
            expected = _expected_count(self._total, self.stride, None)
            if self.frames_decoded < expected:
                self.error = (
                    f"{self.path}: truncated or corrupt, decoded {self.frames_decoded} "
                    f"of the {expected} frames the container index lists"
                )

    def _produce_pyav(self) -> Iterator[Frame]:
        stream = self._container.streams.video[0]
        upright = UprightConverter(str(self.path))
        n_out = 0
        for i, frame in enumerate(self._decode_pyav(stream)):
            if i % self.stride:
                continue
            ts = float(frame.time) if frame.time is not None else i / (self.fps or 1.0)
            yield i, ts, resize_short_side(upright(frame, stream), self.short_side, None)
            n_out += 1
            if self.max_frames is not None and n_out >= self.max_frames:
                return

    def _decode_pyav(self, stream):
        """Decode packet by packet so that a corrupt packet ends the stream at the last good frame."""
        import av

        try:
            for packet in self._container.demux(stream):
                yield from packet.decode()
        except av.error.FFmpegError as exc:
            self.error = f"{self.path}: corrupt data after {self.frames_decoded} frames ({exc})"
            try:  # frames already inside the decoder are good; drain them
                yield from stream.codec_context.decode(None)
            except av.error.FFmpegError:
                pass

    def _produce_decord(self) -> Iterator[Frame]:
        indices = range(0, self._total, self.stride)
        if self.max_frames is not None:
            indices = indices[: self.max_frames]
        for i in indices:
            rgb = self._reader[i].asnumpy()
            if rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(f"decord returned frame {i} with shape {rgb.shape}")
            ts = float(self._reader.get_frame_timestamp(i)[0])
            yield i, ts, resize_short_side(rgb, self.short_side, None)

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._reader = None


class FrameDirSource(FrameSource):
    """A folder of images (.jpg/.jpeg/.png/.bmp) in sorted file-name order.

    Images are read upright (EXIF orientation applied, ``vidseg.io.images.read_rgb``);
    grayscale and RGBA images are converted to RGB. An unreadable image (undecodable, empty, a
    truncated JPEG) is skipped with a warning naming it, counted in ``skipped`` and listed in
    ``skipped_paths``. Timestamps are ``index / fps``.

    Attributes:
        paths: the image files, sorted (before stride / max_frames).

    Raises:
        SourceError: at construction, if the folder is missing or holds no images.
    """

    def __init__(
        self,
        path: str | Path,
        stride: int = 1,
        max_frames: int | None = None,
        short_side: int | None = None,
        fps: float = 25.0,
        queue_size: int = 8,
    ):
        super().__init__(str(path), stride, max_frames, short_side, queue_size)
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: no such frame folder")
        self.paths = sorted(
            p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.paths:
            raise SourceError(
                f"{self.path}: frame folder holds no images "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.fps = fps
        self.num_frames = _expected_count(len(self.paths), stride, max_frames)
        self.skipped_paths: list[Path] = []

    def _produce(self) -> Iterator[Frame]:
        selected = list(range(0, len(self.paths), self.stride))
        if self.max_frames is not None:
            selected = selected[: self.max_frames]
        for i in selected:
            p = self.paths[i]
            try:
                rgb = read_rgb(p)
            except UnreadableImageError as exc:
                self.skipped += 1
                self.skipped_paths.append(p)
                log.warning("skipped: %s", exc)
                continue
            yield i, i / self.fps, resize_short_side(rgb, self.short_side, None)


def open_source(
    spec: str | int, timeout_s: float | None = DEFAULT_TIMEOUT_S, **opts
) -> FrameSource:
    """Open a source from a command-line string.

    An integer-like string is a camera index, an rtsp/http(s)/rtmp URL or a /dev/video* path is a
    camera, a directory is a frame folder, anything else a video file.

    Args:
        spec: device index, URL, folder or file path.
        timeout_s: connect and read timeout of URLs and device paths, in seconds (None: OpenCV's
            30 s); files, folders and device indices do not use it.
        **opts: keyword options of the chosen class (stride, max_frames, short_side, ...).

    Raises:
        SourceError: if the source does not open.
    """
    if isinstance(spec, int):
        return CameraSource(spec, **opts)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        return CameraSource(int(text), **opts)
    if text.lower().startswith(URL_PREFIXES) or text.startswith("/dev/video"):
        return CameraSource(text, timeout_s=timeout_s, **opts)
    if Path(text).is_dir():
        return FrameDirSource(text, **opts)
    return VideoFileSource(text, **opts)


__all__ = ["SourceError", "FrameSource", "VideoFileSource", "FrameDirSource", "open_source"]
