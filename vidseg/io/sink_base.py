"""What every output shares: its errors, the writable-folder check, the legend and FPS drawing."""

from __future__ import annotations

import errno
import logging
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vidseg.errors import EXIT_PARTIAL, VidsegError
from vidseg.io.palette import NUM_COLORS, PALETTE, label_counts

log = logging.getLogger(__name__)


class SinkError(VidsegError, RuntimeError):
    """An output that cannot be written; the message names the path and the cause."""


class SinkWriteError(SinkError):
    """A write failed part-way (full disk, file size limit, I/O error); earlier output is kept.

    Attributes:
        path: the file that could not be written.
        errno: the OS error number (``errno.ENOSPC``, ``errno.EFBIG``, ...), or None.
    """

    code = EXIT_PARTIAL

    def __init__(self, path: str | Path, exc: OSError):
        name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
        super().__init__(
            f"{path}: write failed: {exc.strerror or exc}" + (f" [{name}]" if name else "")
        )
        self.path, self.errno = Path(path), exc.errno


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by ``close_on_signal`` when SIGINT or SIGTERM arrives."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it is writable by creating a temporary file in it.

    Raises:
        SinkError: naming the folder and the OS error.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".vidseg-write-test"):
            pass
    except OSError as exc:
        raise SinkError(f"{path}: output folder is not writable ({exc.strerror or exc})") from exc
    return path


def _font_scale(height: int) -> float:
    return float(np.clip(height / 720.0 * 0.9, 0.35, 1.2))


def draw_legend(
    img: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    max_items: int = 10,
) -> np.ndarray:
    """Draw, in place, a top-left box listing the classes visible in ``labels`` (largest first).

    Args:
        img: RGB uint8 ``(H, W, 3)``, modified in place and returned.
        labels: uint8 ``(H, W)`` train ids (255 = ignore, not listed).
        class_names: name of each train id; ``class <id>`` when None or too short.
        max_items: at most this many rows, then a ``+N more`` row.
    """
    counts = label_counts(labels)[:NUM_COLORS]
    ids = np.nonzero(counts)[0]
    if ids.size == 0:
        return img
    order = ids[np.argsort(-counts[ids], kind="stable")]
    names = [
        class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"
        for k in order[:max_items]
    ]
    if order.size > max_items:
        names.append(f"+{order.size - max_items} more")
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, _font_scale(img.shape[0])
    (_, th), base = cv2.getTextSize("Ag", font, scale, 1)
    pad, row = max(2, th // 3), th + base + max(2, th // 3)
    box_w = pad * 3 + th + max(cv2.getTextSize(n, font, scale, 1)[0][0] for n in names)
    box_h = pad * 2 + row * len(names)
    h, w = img.shape[:2]
    x1, y1 = min(w, box_w), min(h, box_h)
    # Darken instead of painting an opaque box, so the scene under the legend stays visible.
    img[:y1, :x1] = (img[:y1, :x1].astype(np.uint16) * 2 // 5).astype(np.uint8)
    for r, name in enumerate(names):
        y = pad + r * row
        if r < max_items and r < order.size:
            color = tuple(int(c) for c in PALETTE[order[r]])
            cv2.rectangle(img, (pad, y), (pad + th, y + th), color, thickness=-1)
        cv2.putText(img, name, (pad * 2 + th, y + th), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def draw_fps(img: np.ndarray, fps_value: float) -> np.ndarray:
    """Draw ``<fps> FPS`` in the top-right corner of an RGB uint8 image, in place."""
    text = f"{fps_value:.1f} FPS"
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, _font_scale(img.shape[0])
    (tw, th), _ = cv2.getTextSize(text, font, scale, 2)
    org = (max(0, img.shape[1] - tw - th // 2), th + th // 2)
    cv2.putText(img, text, org, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img
