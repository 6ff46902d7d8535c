"""Upright video frames: the display matrix (phone rotation, mirroring) applied to decoded pixels.

A phone records in the sensor's orientation and stores how to turn the picture upright as a
display matrix (MP4/MOV ``tkhd``; FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``). Players apply it, so
every reader here does too: frames, overlays and label PNGs are in the upright geometry (width
and height swapped for 90 and 270 degrees), matching what a player shows.

The matrix maps a stored pixel ``(x, y)`` (y down) to the displayed ``(a*x + c*y, b*x + d*y)``
with ``[a, b, u, c, d, v, tx, ty, w] = matrix`` (a..d in 16.16 fixed point). Only right angles
and mirrors are exact pixel permutations; any other angle is reported and left as stored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# Entries below this fraction of the largest one count as zero: fixed-point rounding of
# cos / sin leaves such residues, and FFmpeg also treats angles within about 1 degree as exact.
_ZERO = 0.02


@dataclass(frozen=True)
class Orientation:
    """How to turn stored pixels upright: transpose, then mirror left-right, then top-bottom.

    The eight combinations are the eight right-angle rotations and mirrors (the EXIF
    orientations), e.g. a 90-degree clockwise turn is ``transpose`` then ``hflip``.
    """

    transpose: bool = False
    hflip: bool = False
    vflip: bool = False

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.hflip or self.vflip)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Stored `(H, W, ...)` -> upright `(H', W', ...)` (H' = W, W' = H if transposed).

        Returns the input itself when nothing changes, else a C-contiguous copy (OpenCV and
        torch need one).
        """
        if self.identity:
            return image
        out = image.swapaxes(0, 1) if self.transpose else image
        if self.hflip:
            out = out[:, ::-1]
        if self.vflip:
            out = out[::-1]
        return np.ascontiguousarray(out)

    def __str__(self) -> str:
        return _NAMES[(self.transpose, self.hflip, self.vflip)]


_NAMES = {
    (False, False, False): "upright",
    (False, True, False): "mirrored left-right",
    (False, True, True): "rotated 180 degrees",
    (False, False, True): "mirrored top-bottom",
    (True, False, False): "transposed",
    (True, True, False): "rotated 90 degrees clockwise",
    (True, True, True): "anti-transposed",
    (True, False, True): "rotated 90 degrees counter-clockwise",
}

UPRIGHT = Orientation()


def from_display_matrix(matrix) -> Orientation | None:
    """The orientation a 3x3 display matrix (9 ints, FFmpeg layout) asks for.

    Returns:
        the `Orientation`, or None when the matrix is not a right-angle rotation / mirror
        (an arbitrary angle, a degenerate matrix), which callers leave as stored.
    """
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if scale == 0:
        return None
    a, b, c, d = (v if abs(v) >= _ZERO * scale else 0.0 for v in (a, b, c, d))
    if b == 0 and c == 0 and a and d:  # x' = a x, y' = d y
        return Orientation(False, a < 0, d < 0)
    if a == 0 and d == 0 and b and c:  # x' = c y, y' = b x: transposed
        return Orientation(True, c < 0, b < 0)
    return None


def _rotate_tag(value: str) -> Orientation | None:
    """FFmpeg before 7 exported the matrix as a clockwise ``rotate`` tag ("90", "270", ...)."""
    try:
        degrees = int(float(value)) % 360
    except ValueError:
        return None
    return {
        0: UPRIGHT,
        90: Orientation(True, True, False),
        180: Orientation(False, True, True),
        270: Orientation(True, False, True),
    }.get(degrees)


def frame_orientation(frame, stream=None) -> Orientation | None:
    """The orientation a decoded PyAV frame carries (its display-matrix side data).

    Args:
        frame: an `av.VideoFrame`.
        stream: its stream, whose ``rotate`` metadata tag is read when the frame carries no
            matrix (older FFmpeg builds).

    Returns:
        the `Orientation` (`UPRIGHT` without any matrix), or None for a matrix that is not a
        right-angle rotation / mirror.
    """
    import av.sidedata.sidedata as sd

    side = frame.side_data.get(sd.Type.DISPLAYMATRIX)
    if side is not None:
        raw = bytes(side)
        if len(raw) >= 36:
            return from_display_matrix(np.frombuffer(raw[:36], dtype=np.int32))
    if stream is not None and "rotate" in stream.metadata:
        return _rotate_tag(stream.metadata["rotate"])
    return UPRIGHT


class UprightConverter:
    """Decoded PyAV frames -> upright RGB uint8 `(H, W, 3)`; warns once about an unusual matrix.

    Args:
        name: the file, for the warning.
    """

    def __init__(self, name: str):
        self.name = name
        self._warned = False

    def __call__(self, frame, stream=None) -> np.ndarray:
        """`frame` (an `av.VideoFrame` of `stream`) as upright RGB; see `frame_orientation`."""
        rgb = frame.to_ndarray(format="rgb24")
        orientation = frame_orientation(frame, stream)
        if orientation is None:
            if not self._warned:
                log.warning(
                    "%s: the display matrix is not a right-angle rotation or mirror; "
                    "frames are used as stored",
                    self.name,
                )
                self._warned = True
            return rgb
        return orientation.apply(rgb)


def probe_orientation(path: str | os.PathLike) -> Orientation | None:
    """The orientation of a video file's first decodable frame (PyAV), `UPRIGHT` if none decodes.

    Used by readers that cannot see the display matrix themselves (decord).
    """
    import av

    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                return frame_orientation(frame, stream)
    except (av.error.FFmpegError, IndexError):
        pass
    return UPRIGHT


def decord_refusal(path: str | os.PathLike) -> str | None:
    """Why decord must not read this video, or None: it must not when the file has a matrix.

    decord's handling of the display matrix differs between versions (3.4.0 rotates but does
    not mirror: a mirrored file comes out turned 180 degrees), so such files are read with PyAV.
    """
    orientation = probe_orientation(path)
    if orientation is not None and orientation.identity:
        return None
    what = orientation or "not a right-angle rotation"
    return f"{os.fspath(path)}: decord cannot be trusted with this file's display matrix ({what})"
