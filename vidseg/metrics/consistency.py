"""Video consistency metrics, fed one frame at a time so that each file is read once.

- `VideoConsistency`: mVC_C of the official VSPW `VC_perclip.py` (raw-mask equality inside
  sliding windows of C frames; see docs/METRICS.md for the exact window rule).
- `TemporalConsistency`: TC of the official `TC_cal.py` (flow-warped agreement of consecutive
  predictions, scored as an mIoU), with a pluggable optical-flow function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vidseg.metrics.segmentation import ConfusionMatrix

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan")
    return float(np.nanmean(arr))


class VideoConsistency:
    """mVC_C for several window lengths C at once, in one streaming pass per video.

    A pixel is "GT-constant" over a window when its raw GT value (0 and 255 included) is equal in
    all C frames; the window score is the fraction of GT-constant pixels whose prediction is also
    equal in all C frames (NaN when no pixel is GT-constant). mVC_C is the NaN-skipping mean over
    the windows of all videos, pooled (each window weighs 1).

    Instead of comparing C frames per window, we keep per pixel the length of the current run of
    equal values (capped at max C) for the GT and for the prediction; the window that ends at the
    new frame is constant exactly where the run length is >= C. Each frame therefore costs
    O(pixels) whatever C, and only the previous frame is kept in memory.

    Official window rule (kept by default): windows start at 0..N-C-1, i.e. the last full window
    (start N-C) is never used, and videos with N <= C frames contribute nothing. With
    `include_last_window=True` every full window counts (starts 0..N-C), so a video of exactly C
    frames gives one window.

    Args:
        windows: the window lengths C (each >= 2).
        include_last_window: also score the window that ends at the last frame.
    """

    def __init__(self, windows: Sequence[int] = (8, 16), include_last_window: bool = False):
        windows = tuple(int(c) for c in windows)
        if not windows or min(windows) < 2:
            raise ValueError(f"mVC window lengths must be >= 2, got {windows}")
        self.windows = windows
        self.include_last_window = bool(include_last_window)
        self._cap = max(windows)
        self._dtype = np.uint8 if self._cap < 255 else np.uint16
        self.scores: dict[int, list[float]] = {c: [] for c in windows}
        self.per_video: dict[str, dict[int, float]] = {}
        self._video: str | None = None

    def start_video(self, name: str) -> None:
        if self._video is not None:
            raise RuntimeError(f"start_video({name!r}) before end_video() of {self._video!r}")
        self._video = name
        self._prev_gt = self._prev_pred = None
        self._run_gt = self._run_pred = None
        self._pending: dict[int, float] = {}
        self._video_scores: dict[int, list[float]] = {c: [] for c in self.windows}

    def add(self, gt_raw: np.ndarray, pred: np.ndarray) -> None:
        """Add the next frame of the current video.

        Args:
            gt_raw: (H, W) raw GT mask (any integer labels; only equality is used).
            pred: (H, W) prediction (any integer labels; only equality is used).
        """
        if self._video is None:
            raise RuntimeError("add() called before start_video()")
        gt_raw = np.asarray(gt_raw)
        pred = np.asarray(pred)
        if gt_raw.shape != pred.shape:
            raise ValueError(
                f"video {self._video}: GT shape {gt_raw.shape} != prediction shape {pred.shape}"
            )
        if self._prev_gt is None:
            self._frames = 0
            self._run_gt = np.ones(gt_raw.shape, dtype=self._dtype)
            self._run_pred = np.ones(gt_raw.shape, dtype=self._dtype)
        else:
            if gt_raw.shape != self._prev_gt.shape:
                raise ValueError(
                    f"video {self._video}: frame shape {gt_raw.shape} differs from "
                    f"the previous frame's {self._prev_gt.shape}"
                )
            self._extend(self._run_gt, gt_raw == self._prev_gt)
            self._extend(self._run_pred, pred == self._prev_pred)
        self._prev_gt, self._prev_pred = gt_raw, pred
        self._frames += 1
        # A new frame proves the pending windows were not the video's last: commit them.
        self._commit_pending()
        for c in self.windows:
            if self._frames < c:  # no full window ends here yet
                continue
            gt_const = self._run_gt >= c
            n_const = int(np.count_nonzero(gt_const))
            both = int(np.count_nonzero(gt_const & (self._run_pred >= c)))
            self._pending[c] = both / n_const if n_const else float("nan")

    def skip(self) -> None:
        """Mark a missing frame: windows that would span it are not scored."""
        if self._video is None:
            raise RuntimeError("skip() called before start_video()")
        self._commit_pending()
        self._prev_gt = self._prev_pred = None

    def _extend(self, run: np.ndarray, same: np.ndarray) -> None:
        # run = same ? min(run + 1, cap) : 1, in place. For uint8 runs, same-type operations
        # (bool viewed as uint8, OpenCV's saturating min) cost ~20x less than numpy's mixed-type
        # multiply and its minimum against a scalar.
        if run.dtype == np.uint8 and same.dtype == np.bool_:
            import cv2

            np.multiply(run, same.view(np.uint8), out=run)
            run += 1
            cv2.min(run, self._cap, dst=run)
            return
        np.multiply(run, same, out=run, casting="unsafe")
        run += 1
        np.minimum(run, self._cap, out=run)

    def _commit_pending(self) -> None:
        for c, score in self._pending.items():
            self.scores[c].append(score)
            self._video_scores[c].append(score)
        self._pending = {}

    def end_video(self) -> dict[int, float]:
        """Close the current video; returns its own mVC per window length (NaN if no window)."""
        if self._video is None:
            raise RuntimeError("end_video() called before start_video()")
        if self.include_last_window:
            self._commit_pending()
        self._pending = {}
        result = {c: _nanmean(self._video_scores[c]) for c in self.windows}
        self.per_video[self._video] = result
        self._video = None
        self._prev_gt = self._prev_pred = self._run_gt = self._run_pred = None
        return result

    def state(self) -> dict:
        return {
            "windows": list(self.windows),
            "scores": {c: list(v) for c, v in self.scores.items()},
        }

    def merge_state(self, state: dict) -> None:
        """Append another process's window scores (merge in video order for identical floats)."""
        for c in self.windows:
            self.scores[c].extend(state["scores"][c])

    def compute(self) -> dict[int, float]:
        """mVC_C per window length: pooled NaN-skipping mean over all windows (NaN if none)."""
        return {c: _nanmean(self.scores[c]) for c in self.windows}

    def num_windows(self) -> dict[int, int]:
        return {c: len(self.scores[c]) for c in self.windows}


def warp_nearest_official(pred_next: np.ndarray, flow: np.ndarray, fill: int = 0) -> np.ndarray:
    """Backward-warp `pred_next` onto the current frame exactly as the official `flowwarp`.

    The official code normalises x + F_x by (W - 1) but samples with `grid_sample(mode="nearest",
    align_corners=False)`; the pixel read is therefore rint((x + F_x) * W / (W - 1) - 0.5) (half
    to even), same for y with H, and anything out of range reads `fill` (train id 0). We repeat
    the same float32 operations so that ties at .5 round the same way.

    Args:
        pred_next: (H, W) integer labels of frame t+1.
        flow: (H, W, 2) float flow from frame t to t+1 (x then y component).
        fill: value read outside the image.

    Returns:
        (H, W) array of the same dtype as `pred_next`.
    """
    h, w = pred_next.shape
    if flow.shape != (h, w, 2):
        raise ValueError(f"flow shape {flow.shape} does not match labels {(h, w)} + (2,)")
    flow = flow.astype(np.float32, copy=False)
    xs = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    ix = _unnormalise(_normalise(xs, w), w)
    iy = _unnormalise(_normalise(ys, h), h)
    np.rint(ix, out=ix)
    np.rint(iy, out=iy)
    inside = (ix >= 0) & (ix <= w - 1) & (iy >= 0) & (iy <= h - 1)
    # One gather from the labels with the fill value appended, instead of boolean indexing.
    flat = np.where(
        inside, iy.astype(np.int32) * np.int32(w) + ix.astype(np.int32), np.int32(h * w)
    )
    table = np.append(pred_next.ravel(), np.asarray(fill, dtype=pred_next.dtype))
    return np.take(table, flat)


def _normalise(coord: np.ndarray, size: int) -> np.ndarray:
    # 2 * v / max(size - 1, 1) - 1, in float32 like the torch code
    return np.float32(2.0) * coord / np.float32(max(size - 1, 1)) - np.float32(1.0)


def _unnormalise(grid: np.ndarray, size: int) -> np.ndarray:
    # grid_sample with align_corners=False: ((g + 1) * size - 1) / 2
    return ((grid + np.float32(1.0)) * np.float32(size) - np.float32(1.0)) / np.float32(2.0)


class TemporalConsistency:
    """TC: agreement between P_t and P_{t+1} warped onto frame t with optical flow.

    One confusion matrix over all consecutive pairs of all videos, rows = P_t, columns = the
    warped P_{t+1}; TC = its mean IoU over the classes present in the P_t rows.

    Args:
        num_classes: K; predictions must be 0..K-1.
        flow: "dis" (OpenCV DIS, medium preset), "raft" (needs `raft_weights`), or a callable
            `(rgb_t (H, W, 3) uint8, rgb_t1) -> flow (H, W, 2)` float, flow from t to t+1.
        raft_weights: local torchvision `raft_large` state-dict file, for `flow="raft"`.
        device: torch device for RAFT.
    """

    def __init__(
        self,
        num_classes: int = 124,
        flow: str | FlowFn = "dis",
        raft_weights: str | None = None,
        device: str | None = None,
    ):
        from vidseg.metrics.flow import build_flow

        self.num_classes = int(num_classes)
        self.flow_fn, self.method = build_flow(flow, raft_weights=raft_weights, device=device)
        self.matrix = ConfusionMatrix(self.num_classes, ignore_index=-1)
        self.pairs = 0
        self._video: str | None = None
        self._video_matrix: ConfusionMatrix | None = None
        self.per_video: dict[str, float] = {}

    def start_video(self, name: str) -> None:
        if self._video is not None:
            raise RuntimeError(f"start_video({name!r}) before end_video() of {self._video!r}")
        self._video = name
        self._prev_rgb = self._prev_pred = None
        self._video_matrix = ConfusionMatrix(self.num_classes, ignore_index=-1)

    def add(self, rgb: np.ndarray, pred: np.ndarray) -> None:
        """Add the next frame: rgb (H, W, 3) uint8 and its prediction (H, W) in 0..K-1."""
        if self._video is None:
            raise RuntimeError("add() called before start_video()")
        if rgb.shape[:2] != pred.shape:
            raise ValueError(
                f"video {self._video}: frame size {rgb.shape[:2]} != prediction size {pred.shape}"
            )
        if self._prev_rgb is not None:
            flow = np.asarray(self.flow_fn(self._prev_rgb, rgb))
            warped = warp_nearest_official(pred, flow, fill=0)
            self._video_matrix.update(self._prev_pred, warped, name=f"video {self._video}")
            self.pairs += 1
        self._prev_rgb, self._prev_pred = rgb, pred

    def skip(self) -> None:
        """Mark a missing frame: the pairs around it are not scored."""
        self._prev_rgb = self._prev_pred = None

    def end_video(self) -> float:
        """Close the current video; returns its own TC (NaN if it had no pair)."""
        if self._video is None:
            raise RuntimeError("end_video() called before start_video()")
        tc = self._video_matrix.compute()["miou"]
        self.matrix.merge(self._video_matrix)
        self.per_video[self._video] = tc
        self._video = None
        self._prev_rgb = self._prev_pred = None
        return tc

    def compute(self) -> float:
        return self.matrix.compute()["miou"]
