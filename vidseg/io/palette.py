"""A fixed class palette for label maps (VSPW train ids 0..123, ignore 255)."""

from __future__ import annotations

import cv2
import numpy as np

NUM_COLORS = 124
IGNORE_INDEX = 255
IGNORE_COLOR = (0, 0, 0)


def _build_palette(n: int) -> np.ndarray:
    # Greedy farthest-point picks from an RGB grid: every new colour is the one farthest from
    # all colours chosen so far, so any two classes differ clearly.
    # Channel weights roughly follow perceived brightness differences.
    levels = np.linspace(0, 255, 11)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    weights = np.array([2.0, 4.0, 3.0])
    # Start as if black (ignore) and white (legend text) were already taken.
    dist = np.minimum(
        (((grid - 0.0) ** 2) * weights).sum(1), (((grid - 255.0) ** 2) * weights).sum(1)
    )
    chosen = []
    for _ in range(n):
        k = int(np.argmax(dist))  # ties resolve to the lowest grid index: deterministic
        chosen.append(grid[k])
        dist = np.minimum(dist, (((grid - grid[k]) ** 2) * weights).sum(1))
    return np.round(np.array(chosen)).astype(np.uint8)


PALETTE = _build_palette(NUM_COLORS)
PALETTE.setflags(write=False)
_LUT = np.zeros((256, 3), np.uint8)
_LUT[:NUM_COLORS] = PALETTE
_LUT[IGNORE_INDEX] = IGNORE_COLOR


def label_counts(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every value 0..255, after checking the label map.

    Args:
        labels: uint8 ``(H, W)`` with values in 0..123 or 255.

    Returns:
        int64 ``(256,)``.

    Raises:
        ValueError: wrong dtype / shape, or values outside 0..123 and 255 (listed).
    """
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be uint8 (H, W), got {labels.dtype} {labels.shape}")
    # bincount is several times faster than np.unique and also feeds the legend.
    counts = np.bincount(labels.ravel(), minlength=256)
    bad = np.nonzero(counts[NUM_COLORS:IGNORE_INDEX])[0] + NUM_COLORS
    if bad.size:
        raise ValueError(
            f"labels hold values {bad[:8].tolist()}, expected train ids "
            f"0..{NUM_COLORS - 1} or {IGNORE_INDEX}"
        )
    return counts


def colorize(labels: np.ndarray) -> np.ndarray:
    """Map train ids to palette colours.

    Args:
        labels: uint8 ``(H, W)`` with values in 0..123 or 255 (ignore, drawn black).

    Returns:
        RGB uint8 ``(H, W, 3)``.
    """
    label_counts(labels)
    return np.take(_LUT, labels, axis=0)


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the class colours over a frame; ignore pixels keep the original frame.

    Args:
        rgb: uint8 ``(H, W, 3)``.
        labels: uint8 ``(H, W)``, same H and W.
        alpha: weight of the class colour, in [0, 1].

    Returns:
        RGB uint8 ``(H, W, 3)``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != labels.shape:
        raise ValueError(
            f"overlay: rgb {rgb.shape} and labels {labels.shape} must be (H, W, 3) and (H, W)"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    counts = label_counts(labels)
    colors = np.take(_LUT, labels, axis=0)
    out = cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, colors, alpha, 0.0)
    if counts[IGNORE_INDEX]:
        np.copyto(out, rgb, where=(labels == IGNORE_INDEX)[..., None])
    return out
