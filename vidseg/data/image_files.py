"""Frame images and label masks on disk, and the mapping of mask values to train ids.

Shared by every dataset layout (VSPW, video files + mask folders, image-sequence folders), so
it sits below them: `vidseg.data.vspw` re-exports these names as part of its reader API.

Two mask conventions (`label_format`):
    "vspw"       VSPW raw values: 0 ("others") and 255 (void) are ignored, raw k in 1..124 is
                 train id k - 1.
    "train_ids"  the value is the train id (0..123), 255 is ignored.
Train ids stop at 123 in both, because the scorer reads raw VSPW masks (raw = train id + 1).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from vidseg.data.formats import LABEL_FORMATS  # noqa: F401  (re-exported)
from vidseg.errors import VidsegError

IGNORE_INDEX = 255
NUM_RAW_CLASSES = 124  # raw ids 1..124 are classes, 0 = "others", 255 = "void"

# value -> train id per label format; invalid values map to _INVALID (never a train id), so one
# table lookup both maps and detects them.
_INVALID = 254
_VALID = {"vspw": np.zeros(256, dtype=bool), "train_ids": np.zeros(256, dtype=bool)}
_VALID["vspw"][: NUM_RAW_CLASSES + 1] = True
_VALID["train_ids"][:NUM_RAW_CLASSES] = True
for _valid in _VALID.values():
    _valid[IGNORE_INDEX] = True
_LUT = {
    "vspw": np.full(256, _INVALID, dtype=np.uint8),
    "train_ids": np.full(256, _INVALID, dtype=np.uint8),
}
_LUT["vspw"][[0, IGNORE_INDEX]] = IGNORE_INDEX
_LUT["vspw"][1 : NUM_RAW_CLASSES + 1] = np.arange(NUM_RAW_CLASSES, dtype=np.uint8)
_LUT["train_ids"][:NUM_RAW_CLASSES] = np.arange(NUM_RAW_CLASSES, dtype=np.uint8)
_LUT["train_ids"][IGNORE_INDEX] = IGNORE_INDEX
_RAW_FROM_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_RAW_FROM_TRAIN_ID[:NUM_RAW_CLASSES] = np.arange(1, NUM_RAW_CLASSES + 1, dtype=np.uint8)


class UnreadableImageError(VidsegError, OSError):
    """An image file that is empty or cannot be decoded."""


class MaskError(VidsegError, ValueError):
    """A mask that cannot be used: unreadable, wrong size, values outside the label range."""


def _check_format(label_format: str) -> None:
    if label_format not in LABEL_FORMATS:
        raise ValueError(
            f"label_format={label_format!r}; expected one of {', '.join(LABEL_FORMATS)}"
        )


def valid_values(label_format: str = "vspw") -> str:
    """The valid mask values of a label format, as text for messages."""
    _check_format(label_format)
    top = NUM_RAW_CLASSES if label_format == "vspw" else NUM_RAW_CLASSES - 1
    return f"{{0..{top}, 255}}"


def invalid_raw_values(raw: np.ndarray, label_format: str = "vspw") -> np.ndarray:
    """Return the sorted distinct values of `raw` that are not valid mask values of the format."""
    _check_format(label_format)
    valid = _VALID[label_format]
    raw = np.asarray(raw)
    if raw.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        return present[~valid[present]]
    values = np.unique(raw)
    ok = (values >= 0) & (values <= 255)
    ok[ok] = valid[values[ok].astype(np.int64)]
    return values[~ok]


def to_train_ids(
    raw: np.ndarray, path: str | os.PathLike | None = None, label_format: str = "vspw"
) -> np.ndarray:
    """Map mask values to train ids.

    Args:
        raw: mask `(H, W)`; values in {0..124, 255} ("vspw") or {0..123, 255} ("train_ids").
        path: file the mask came from, used in the error message.
        label_format: "vspw" or "train_ids" (see the module docstring).

    Returns:
        `(H, W)` uint8 train ids 0..123, 255 = ignore.

    Raises:
        MaskError: naming `path` and the values outside the format's range.
    """
    _check_format(label_format)
    lut = _LUT[label_format]
    raw = np.asarray(raw)
    # the common case: one lookup (OpenCV's is ~4x numpy's) both maps and checks
    if raw.dtype == np.uint8:
        out = cv2.LUT(np.ascontiguousarray(raw), lut).reshape(raw.shape)
        if not (out == _INVALID).any():
            return out
    bad = invalid_raw_values(raw, label_format)
    if bad.size:
        where = f"mask {path}" if path is not None else "mask"
        kind = "raw values" if label_format == "vspw" else "values"
        name = "VSPW" if label_format == "vspw" else "train-id"
        raise MaskError(
            f"{where}: {kind} {bad[:10].tolist()} outside the {name} range "
            f"{valid_values(label_format)}"
        )
    return lut[raw.astype(np.uint8)]


def to_vspw_raw(
    mask: np.ndarray, path: str | os.PathLike | None = None, label_format: str = "vspw"
) -> np.ndarray:
    """A mask in the VSPW raw convention (what the scorer reads), from either label format.

    "vspw" masks are checked and returned as they are; "train_ids" masks are checked, then
    id k -> raw k + 1 and 255 -> 255, a bijection, so mIoU and the raw-equality mVC are unchanged.
    Checked here, where the mask's file is known, so that a bad value is reported with its path.

    Raises:
        MaskError: naming `path` and the values outside the format's range.
    """
    if label_format == "vspw":
        to_train_ids(mask, path, label_format)
        return np.asarray(mask)
    ids = to_train_ids(mask, path, label_format)
    return cv2.LUT(ids, _RAW_FROM_TRAIN_ID).reshape(ids.shape)


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read an image as upright RGB uint8 `(H, W, 3)` (EXIF orientation applied).

    The same reader as frame folders (`vidseg.io.images.read_rgb`). Raises UnreadableImageError
    naming the file if it is empty, a truncated JPEG or undecodable.
    """
    from vidseg.io.images import read_rgb  # imported here: vidseg.io.images uses our error class

    return read_rgb(path, "frame")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a raw single-channel label PNG as uint8 `(H, W)` (values not remapped).

    Palette PNGs are read as their index array (not the colours). An RGB mask, a 16-bit mask or
    an undecodable file raises MaskError / UnreadableImageError naming the file.
    """
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise UnreadableImageError(f"mask {path} is empty (0 bytes)")
    mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UnreadableImageError(f"mask {path} cannot be decoded")
    if mask.ndim == 3:
        # OpenCV expands palette PNGs to colour; the palette indices are the labels.
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise MaskError(
                    f"mask {path} is a {im.mode} image with {mask.shape[2]} channels; "
                    f"expected a single-channel (or palette) label PNG"
                )
            mask = np.array(im)
    if mask.dtype != np.uint8:
        raise MaskError(f"mask {path} has dtype {mask.dtype}; expected 8-bit labels")
    return mask
