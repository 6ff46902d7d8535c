"""Frames of a video file by decoded index: PyAV with keyframe seeking, or decord.

A frame's decoded index is its position in presentation order (how
`data_tools/video_to_frames.py` names frames and `VideoFileClips` names masks). Which reader to
use is decided by `vidseg.io.selftest.video_reader`; readers here only read.

Frames are upright: the file's display matrix (phone rotation, mirror) is applied as a player
does (`vidseg.io.orientation`), so masks are drawn on what a player shows. decord's handling of
the matrix differs between its versions, so it refuses files that carry one (PyAV reads them).
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np

from vidseg.io.orientation import UprightConverter, decord_refusal

log = logging.getLogger(__name__)


class _LostTrack(Exception):
    """A decoded frame's pts is not in the packet table (the index would be a guess)."""


class _LandedLate(Exception):
    """A seek went past the wanted keyframe's packet."""


class PyAVFrameReader:
    """Random access through PyAV: seek to the keyframe at or before a wanted frame, decode on.

    Construction reads only the header. The first `get()` demuxes the packets once, without
    decoding, to list every frame's pts and keyframe flag; the sorted pts map index <-> pts
    exactly, whatever the first pts and even at a variable frame rate. Files without packet
    timestamps, or whose decoded frames carry pts missing from that table, are read by decoding
    from the start (always exact). The file is opened per `get()` call, so many readers hold no
    file handles.

    Attributes:
        path: the video file.
        frames_decoded: frames decoded by this reader so far (all calls).
        seeks: seeks made so far.
    """

    def __init__(self, path: str | os.PathLike):
        import av

        self.path = os.fspath(path)
        self.frames_decoded = 0
        self.seeks = 0
        self._upright = UprightConverter(self.path)
        with av.open(self.path) as container:
            if not container.streams.video:
                raise ValueError(f"{self.path}: contains no video stream")
            self._claimed = int(container.streams.video[0].frames or 0)
        self._scanned = False
        self._pts: list[int] | None = None
        self._dts: list[int | None] = []
        self._keys: list[int] = []
        self._index: dict[int, int] | None = None
        self._length: int | None = None

    def _ensure_table(self) -> None:
        if not self._scanned:
            import av

            with av.open(self.path) as container:
                self._pts, self._dts, self._keys = self._scan(container, container.streams.video[0])
            self._index = None if self._pts is None else {p: i for i, p in enumerate(self._pts)}
            self._scanned = True

    def _scan(self, container, stream) -> tuple[list[int] | None, list[int | None], list[int]]:
        import av

        entries = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packet / before an edit list
                    continue
                if packet.pts is None:
                    return None, [], []
                entries.append((int(packet.pts), packet.dts, bool(packet.is_keyframe)))
        except av.error.FFmpegError as exc:  # a cut-off file: index what is readable
            log.warning("%s: packets unreadable after %d frames (%s)", self.path, len(entries), exc)
        entries.sort()
        pts = [p for p, _, _ in entries]
        if len(set(pts)) != len(pts):
            return None, [], []
        return pts, [d for _, d, _ in entries], [i for i, (_, _, key) in enumerate(entries) if key]

    @property
    def seekable(self) -> bool:
        """False when this file is read by decoding from the start."""
        self._ensure_table()
        return self._pts is not None

    def __len__(self) -> int:
        """Frames the container lists; if it lists none, those indexed (or decoded)."""
        if self._claimed:
            return self._claimed
        self._ensure_table()
        if self._pts is not None:
            return len(self._pts)
        if self._length is None:
            import av

            with av.open(self.path) as container:
                self._length = sum(1 for _ in container.decode(container.streams.video[0]))
        return self._length

    def get(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        """Decode the wanted frames, RGB uint8 `(H, W, 3)` by index.

        Indices past the end of a truncated file, or that fail to decode, are left out.
        """
        import av

        wanted = sorted({int(i) for i in indices if int(i) >= 0})
        out: dict[int, np.ndarray] = {}
        if not wanted:
            return out
        self._ensure_table()
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            try:
                if self._pts is not None:
                    try:
                        self._get_seeking(container, stream, wanted, out)
                        return out
                    except _LostTrack as exc:
                        log.warning(
                            "%s: %s; reading this file from the start from now on", self.path, exc
                        )
                        self._pts = self._index = None
                    container.seek(0)
                    self.seeks += 1
                self._get_sequential(container, stream, wanted, out)
            except av.error.FFmpegError as exc:  # corrupt data: keep what decoded
                log.warning("decoding %s stopped early: %s", self.path, exc)
        return out

    def _get_sequential(self, container, stream, wanted: list[int], out: dict) -> None:
        wanted_set, last = set(wanted), wanted[-1]
        for i, frame in enumerate(container.decode(stream)):
            self.frames_decoded += 1
            if i in wanted_set:
                out[i] = self._upright(frame, stream)
            if i >= last:
                return

    def _key_before(self, target: int) -> int:
        """Index of the latest keyframe at or before `target` (0 if none: decode from the start)."""
        k = bisect.bisect_right(self._keys, target) - 1
        return self._keys[k] if k >= 0 else 0

    def _frames_from(self, container, stream, start: int) -> Iterator[tuple[int, object]]:
        """Seek to frame `start` (a keyframe, or the first frame); yield `(index, frame)`.

        Decoding starts at the packet of frame `start` itself: demuxers without an index
        (MPEG-TS) land near, not on, it. Raises `_LandedLate` if the seek went past it.
        """
        if start == 0:
            container.seek(0)
        else:  # demuxers seek by decode time, at or before the presentation time
            dts = self._dts[start]
            container.seek(self._pts[start] if dts is None else dts, stream=stream, backward=True)
        self.seeks += 1
        wanted_pts, started = self._pts[start], False
        for packet in container.demux(stream):
            if not started:
                if packet.pts is None or packet.pts != wanted_pts:
                    if packet.is_keyframe and packet.pts is not None and packet.pts > wanted_pts:
                        raise _LandedLate
                    if packet.size:
                        continue
                started = True
            for frame in packet.decode():
                self.frames_decoded += 1
                index = self._index.get(frame.pts)
                if index is None:
                    raise _LostTrack(f"a decoded frame's pts {frame.pts} is not in the packets")
                if index >= start:  # earlier ones are open-GOP leading frames without references
                    yield index, frame
        if not started:
            raise _LandedLate

    def _seek(self, container, stream, target: int) -> Iterator[tuple[int, object]]:
        """Frames from the latest keyframe at or before `target`, in presentation order."""
        start = self._key_before(target)
        while True:
            frames = self._frames_from(container, stream, start)
            try:
                first = next(frames, None)
            except _LandedLate:
                if start == 0:
                    raise _LostTrack("seeking to the first frame lands past it") from None
                start = self._key_before(start - 1)
                continue
            return iter(()) if first is None else _prepend(first, frames)

    def _get_seeking(self, container, stream, wanted: list[int], out: dict) -> None:
        wanted = [i for i in wanted if i < len(self._pts)]
        wanted_set = set(wanted)
        frames, pos = None, -1
        for target in wanted:
            if target in out:
                continue
            key = self._key_before(target)
            # Decode on from the current position unless a keyframe lets us skip frames.
            if frames is None or pos >= target or key > pos + 1:
                frames = self._seek(container, stream, target)
            for pos, frame in frames:
                if pos in wanted_set and pos not in out:
                    out[pos] = self._upright(frame, stream)
                if pos >= target:
                    break
            else:
                return  # end of stream: later frames are not decodable


def _prepend(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


class DecordFrameReader:
    """Random access through decord (used only after its self-test passed on this machine).

    Raises:
        ValueError: decord returns frames that are not `(H, W, 3)` for this file (decord 3.4.0
            does so for some frame widths, depending on the CPU), or the file has a display
            matrix (decord 3.4.0 rotates but does not mirror).
    """

    def __init__(self, path: str | os.PathLike):
        import decord

        self.path = os.fspath(path)
        self.reader = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=1)
        shape = tuple(self.reader[0].shape)
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(
                f"{self.path}: decord returned frames of shape {shape}, expected (H, W, 3)"
            )
        refusal = decord_refusal(self.path)
        if refusal is not None:
            raise ValueError(refusal)
        self.reader.seek(0)

    def __len__(self) -> int:
        return len(self.reader)

    def get(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        unique = sorted({int(i) for i in indices if 0 <= int(i) < len(self.reader)})
        if not unique:
            return {}
        batch = self.reader.get_batch(unique).asnumpy()
        if batch.ndim != 4 or batch.shape[3] != 3:
            raise ValueError(
                f"{self.path}: decord get_batch returned shape {batch.shape}, expected (N, H, W, 3)"
            )
        return {i: batch[k] for k, i in enumerate(unique)}


def open_frame_reader(path: str | os.PathLike, reader: str = "pyav"):
    """A reader with `len()` and `get(indices) -> {index: rgb (H, W, 3) uint8}`.

    Args:
        path: the video file.
        reader: "pyav" or "decord" (as decided by `vidseg.io.selftest.video_reader`); a file
            that decord misreads is read with PyAV, with a warning naming the file.
    """
    if reader == "decord":
        try:
            return DecordFrameReader(path)
        except Exception as exc:  # noqa: BLE001 - DECORDError is not exported consistently
            log.warning(
                "decord cannot read %s (%s); reading it with PyAV",
                path,
                str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
            )
    elif reader != "pyav":
        raise ValueError(f"reader={reader!r}; expected 'pyav' or 'decord'")
    return PyAVFrameReader(path)
