"""Split-level confusion matrix and the per-pixel segmentation metrics derived from it.

The VSPW protocol accumulates ONE confusion matrix over every annotated frame of the split (not a
mean over videos) and averages IoU over the classes that occur in the ground truth. The matrix is
integer (int64), so merging partial matrices from several processes is exact.
"""

from __future__ import annotations

import numpy as np


def _lookup(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """lut[values] for uint8 values; OpenCV's table lookup is about 4x faster than numpy's."""
    try:
        import cv2
    except ImportError:  # opencv is a dependency, but keep the metric usable without it
        return lut[values]
    return cv2.LUT(np.ascontiguousarray(values), lut).reshape(values.shape)


def pair_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Joint histogram of two uint8 label maps: `out[u, v]` = number of pixels with a == u, b == v.

    Label maps are piecewise constant, so the pixels are first grouped into runs (in raster
    order) over which both maps are constant, and only one entry per run is counted. This is an
    exact count whatever the content (a noisy map just has more runs) and several times faster
    than `np.bincount` or `cv2.calcHist` over every pixel of a 480p frame.

    Args:
        a, b: (H, W) uint8 arrays of one shape.

    Returns:
        (256, 256) int64 counts summing to H * W.
    """
    fa = np.ascontiguousarray(a).ravel()
    fb = np.ascontiguousarray(b).ravel()
    if fa.dtype != np.uint8 or fb.dtype != np.uint8 or fa.shape != fb.shape:
        raise ValueError(
            f"pair_counts needs two uint8 arrays of one shape, got {a.shape}, {b.shape}"
        )
    if fa.size == 0:
        return np.zeros((256, 256), dtype=np.int64)
    change = fa[1:] != fa[:-1]
    change |= fb[1:] != fb[:-1]
    starts = np.flatnonzero(change)
    starts += 1
    starts = np.concatenate(([0], starts))
    lengths = np.diff(starts, append=fa.size)
    codes = fa[starts].astype(np.intp) * 256 + fb[starts]
    counts = np.bincount(codes, weights=lengths, minlength=256 * 256)
    return counts.astype(np.int64).reshape(256, 256)  # float64 sums of ints < 2**53: exact


class ConfusionMatrix:
    """Integer confusion matrix, rows = ground truth, columns = prediction.

    Args:
        num_classes: number of classes K; valid labels are 0..K-1.
        ignore_index: ground-truth value whose pixels are not counted.
    """

    def __init__(self, num_classes: int = 124, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray, name: str | None = None) -> None:
        """Add one frame (or any batch of pixels).

        Args:
            gt: (H, W) integer train ids 0..K-1, `ignore_index` for pixels that do not count.
            pred: (H, W) integer predictions; must be 0..K-1 wherever `gt` is valid.
            name: optional file name used in error messages.
        """
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        where = f" ({name})" if name else ""
        if gt.shape != pred.shape:
            raise ValueError(
                f"ground truth shape {gt.shape} != prediction shape {pred.shape}{where}"
            )
        if self._fast_update(gt, pred):
            return
        g = gt.ravel()
        p = pred.ravel()
        valid = g != self.ignore_index
        if not valid.all():
            g = g[valid]
            p = p[valid]
        if g.size == 0:
            return
        k = self.num_classes
        # Checking min and max once is much cheaper than a per-pixel range mask.
        if int(g.min()) < 0 or int(g.max()) >= k:
            bad = np.unique(g[(g < 0) | (g >= k)])[:8].tolist()
            raise ValueError(
                f"ground truth values {bad} outside 0..{k - 1} and != ignore "
                f"{self.ignore_index}{where}"
            )
        if int(p.min()) < 0 or int(p.max()) >= k:
            bad = np.unique(p[(p < 0) | (p >= k)])[:8].tolist()
            raise ValueError(f"prediction values {bad} outside the expected 0..{k - 1}{where}")
        flat = g.astype(np.int64) * k + p.astype(np.int64)
        self.matrix += np.bincount(flat, minlength=k * k).reshape(k, k)

    def _fast_update(self, gt: np.ndarray, pred: np.ndarray) -> bool:
        """uint8 fast path: one lookup gives the flat row offset, no boolean compaction.

        The lookup sends ignored pixels to a dump block and out-of-range GT to an error block
        after the K x K cells; returns False (general path, which also builds the error
        message) when the inputs do not fit or something is out of range.
        """
        k = self.num_classes
        if gt.dtype != np.uint8 or pred.dtype != np.uint8 or (k + 2) * k > 65535:
            return False
        if int(pred.max()) >= k:
            return False  # may still be fine if only at ignored pixels: general path decides
        lut = getattr(self, "_lut", None)
        if lut is None:
            lut = np.full(256, (k + 1) * k, dtype=np.uint16)  # error block
            lut[:k] = np.arange(k, dtype=np.uint16) * k
            if 0 <= self.ignore_index < 256:
                lut[self.ignore_index] = k * k  # dump block
            self._lut = lut
        flat = _lookup(gt, lut).ravel()
        flat += pred.ravel()
        counts = np.bincount(flat, minlength=(k + 2) * k)
        if counts[(k + 1) * k :].any():
            return False
        self.matrix += counts[: k * k].reshape(k, k)
        return True

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix (e.g. from another process) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix into a "
                f"{self.num_classes}-class one"
            )
        self.matrix += other.matrix
        return self

    def state(self) -> dict:
        """Picklable / JSON-able state for multi-process merging."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "matrix": self.matrix.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> ConfusionMatrix:
        cm = cls(state["num_classes"], state.get("ignore_index", 255))
        matrix = np.asarray(state["matrix"], dtype=np.int64)
        if matrix.shape != cm.matrix.shape:
            raise ValueError(f"state matrix shape {matrix.shape} != {cm.matrix.shape}")
        cm.matrix = matrix.copy()
        return cm

    def compute(self) -> dict:
        """Metrics of the accumulated matrix (fractions in [0, 1]; NaN where undefined).

        Returns:
            dict with `pixel_acc`, `mean_class_acc`, `miou` (VSPW: mean IoU over classes present
            in the ground truth), `miou_all_classes` (mmseg-style: mean over classes with
            union > 0, so a class predicted but absent from GT counts as 0), `iou` and `acc`
            (K floats, NaN for classes absent from GT), `gt_pixels` and `pred_pixels` (K ints),
            `classes_present` (number of classes with GT pixels).
        """
        m = self.matrix.astype(np.float64)
        inter = np.diag(m)
        gt_pixels = m.sum(axis=1)
        pred_pixels = m.sum(axis=0)
        union = gt_pixels + pred_pixels - inter
        present = gt_pixels > 0
        total = m.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            iou_any = inter / union
            acc_any = inter / gt_pixels
        iou = np.where(present, iou_any, np.nan)
        acc = np.where(present, acc_any, np.nan)
        n_present = int(present.sum())
        has_union = union > 0
        return {
            "pixel_acc": float(inter.sum() / total) if total > 0 else float("nan"),
            # Same reductions as the official Evaluator (nanmean / nansum over all K entries), so
            # the floats agree bit for bit, not only to rounding.
            "mean_class_acc": float(np.nanmean(acc_any)) if n_present else float("nan"),
            "miou": float(np.nansum(iou_any * present) / n_present) if n_present else float("nan"),
            "miou_all_classes": (
                float(iou_any[has_union].sum() / has_union.sum())
                if has_union.any()
                else float("nan")
            ),
            "iou": iou.tolist(),
            "acc": acc.tolist(),
            "gt_pixels": self.matrix.sum(axis=1).tolist(),
            "pred_pixels": self.matrix.sum(axis=0).tolist(),
            "classes_present": n_present,
        }
