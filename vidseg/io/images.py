"""Reading one frame image: upright (EXIF orientation applied), truncated JPEGs refused.

Frame folders (`vidseg.io.sources.FrameDirSource`) and datasets
(`vidseg.data.image_files.read_frame`) read frames here, so both see the same pixels.

- EXIF orientation: a camera stores the sensor's pixels plus an orientation tag; viewers apply
  it, and so does OpenCV's ``IMREAD_COLOR`` decode used here. Frames are therefore upright, and
  label PNGs written for them (and masks read for training) are in that upright geometry. Masks
  are read as stored (``IMREAD_UNCHANGED`` ignores EXIF): a mask is the upright frame's label map.
- Truncation: OpenCV 4.x decodes a cut-off JPEG into an image whose missing part is grey, with
  only a libjpeg warning on stderr (5.x refuses it). A JPEG whose data ends before its
  end-of-image marker is refused here, whatever the OpenCV version, so a half-written frame is
  treated like any unreadable one instead of entering training or an overlay.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

# one error class for every unreadable image, whoever reads it (datasets catch this one)
from vidseg.data.image_files import UnreadableImageError

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA


def jpeg_is_truncated(data: bytes) -> bool:
    """True for a JPEG whose data ends before its end-of-image marker (FFD9).

    The header segments are walked by their lengths (an EXIF thumbnail inside APP1 has its own
    end marker, which must not count); from the first scan on, entropy-coded data cannot hold
    FFD9 (byte stuffing), so its first occurrence is the image's end. Bytes after it (Motion
    Photo videos, maker trailers) are allowed. Data that is not a JPEG returns False.
    """
    if data[:2] != b"\xff\xd8":
        return False
    i, n = 2, len(data)
    while True:
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:
            i += 1  # fill bytes before a marker
        if i + 1 >= n:
            return True
        if data[i] != 0xFF:  # not at a marker: a malformed header, the decoder judges it
            return False
        marker = data[i + 1]
        if marker == _EOI:
            return False  # a header without scans: the decoder judges it
        if marker == _SOI or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        if i + 4 > n:
            return True
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if end > n:
            return True
        if marker == _SOS:
            return data.find(b"\xff\xd9", end) < 0
        i = end


def read_rgb(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image file as upright RGB uint8 `(H, W, 3)`.

    Grayscale becomes three equal channels, alpha is dropped, 16-bit keeps its high byte.

    Args:
        path: the image (JPEG, PNG, BMP, ... anything OpenCV decodes).
        what: the word naming it in errors ("frame", "image").

    Raises:
        UnreadableImageError: (`vidseg.data.image_files`) the file cannot be read, is empty,
            is a truncated JPEG or does not decode; the message names `what` and the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UnreadableImageError(f"{what} {path} cannot be read ({exc.strerror or exc})") from exc
    if not data:
        raise UnreadableImageError(f"{what} {path} is empty (0 bytes)")
    if jpeg_is_truncated(data):
        raise UnreadableImageError(
            f"{what} {path} is a truncated JPEG (its data ends before the end-of-image marker)"
        )
    # IMREAD_COLOR applies the EXIF orientation; IMREAD_UNCHANGED would not
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UnreadableImageError(f"{what} {path} cannot be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
