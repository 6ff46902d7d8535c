"""Every metric of a split, accumulated one frame at a time: mIoU family, mVC_C and TC.

`SplitScorer` is fed by `vidseg eval` (live predictions) and by `vidseg score`
(`vidseg.metrics.scorer.score_prediction_dir`, prediction PNGs); its partial results merge
exactly across processes, in video order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vidseg.metrics.consistency import TemporalConsistency, VideoConsistency
from vidseg.metrics.segmentation import ConfusionMatrix, pair_counts

MAX_LISTED = 5  # missing files named in a result
NUM_RAW_LABELS = 124  # VSPW raw 1..124 = train ids 0..123; raw 0 and 255 are ignored


def raw_pair_counts_to_cm(counts: np.ndarray, num_classes: int) -> np.ndarray | None:
    """The (K, K) confusion-matrix increment from pair counts of (raw VSPW GT, prediction).

    Raw value r in 1..K is train id r - 1; raw 0 and 255 are ignored. Returns None when the
    counts contain anything else at a counted pixel (raw GT values above K other than 255,
    predictions >= K at a counted pixel): the caller takes the checking path for its error.

    Args:
        counts: (256, 256) int64 `pair_counts(gt_raw, pred)`.
        num_classes: K <= 124.
    """
    k = num_classes
    if counts[k + 1 : 255].any() or counts[1 : k + 1, k:].any():
        return None
    return counts[1 : k + 1, :k]


class SplitScorer:
    """Accumulates every metric of a split, one frame at a time, one video after another.

    Args:
        num_classes: K (124 for VSPW); predictions must be 0..K-1.
        class_names: K names in train-id order (for `per_class`).
        windows: mVC window lengths; result keys are `mvc<C>`.
        tc: compute TC at all.
        tc_videos: recorded in the result (which videos enter TC is decided per video through
            `start_video(..., in_tc)`); None = all videos.
        flow: TC flow backend, "dis", "raft" or a callable (see `metrics/flow.py`).
        include_last_window: mVC also counts the window ending at each video's last frame.
        raft_weights: local RAFT weights file for `flow="raft"`.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str],
        windows: Sequence[int] = (8, 16),
        tc: bool = True,
        tc_videos: int | None = None,
        flow: str | Callable = "dis",
        include_last_window: bool = False,
        raft_weights: str | None = None,
        device: str | None = None,
    ):
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.tc_videos = tc_videos
        self.include_last_window = bool(include_last_window)
        self.cm = ConfusionMatrix(num_classes)
        self.vc = VideoConsistency(windows, include_last_window=include_last_window)
        self.tc = (
            TemporalConsistency(num_classes, flow=flow, raft_weights=raft_weights, device=device)
            if tc
            else None
        )
        self.per_video: dict[str, dict] = {}
        self.frames = 0
        self.videos = 0
        self.tc_video_count = 0
        self.missing = 0
        self.missing_examples: list[str] = []
        self._video: str | None = None

    def start_video(self, name: str, in_tc: bool = True) -> None:
        self._video = name
        self._in_tc = bool(in_tc) and self.tc is not None
        self._video_cm = ConfusionMatrix(self.num_classes)
        self._video_frames = 0
        self.vc.start_video(name)
        if self._in_tc:
            self.tc.start_video(name)

    def add_frame(
        self,
        gt_raw: np.ndarray | None,
        pred: np.ndarray | None,
        rgb: np.ndarray | None = None,
        name: str | None = None,
        counts: np.ndarray | None = None,
    ) -> None:
        """Add the next frame of the current video.

        Args:
            gt_raw: (H, W) uint8 raw VSPW mask, or None for a frame without annotation.
            pred: (H, W) uint8 train ids 0..K-1, or None when the prediction is missing (counted;
                windows and flow pairs through this frame are not scored).
            rgb: (H, W, 3) uint8 frame, needed for TC videos.
            name: file name for error messages.
            counts: (256, 256) `segmentation.pair_counts(gt_raw, pred)` when the caller already
                has it (e.g. computed in a reader thread); computed here otherwise.
        """
        if self._video is None:
            raise RuntimeError("add_frame() called before start_video()")
        if pred is None:
            self.missing += 1
            if name and len(self.missing_examples) < MAX_LISTED:
                self.missing_examples.append(name)
            self.vc.skip()
            if self._in_tc:
                self.tc.skip()
            return
        if gt_raw is not None:
            self._update_cm(gt_raw, pred, name, counts)
            self.vc.add(gt_raw, pred)
            self._video_frames += 1
        if self._in_tc:
            if rgb is None:
                raise ValueError(f"video {self._video}: TC needs the RGB frame ({name or 'frame'})")
            self.tc.add(rgb, pred)

    def _update_cm(
        self,
        gt_raw: np.ndarray,
        pred: np.ndarray,
        name: str | None,
        counts: np.ndarray | None = None,
    ) -> None:
        from vidseg.data.image_files import to_train_ids

        fast = (
            self.num_classes <= NUM_RAW_LABELS
            and gt_raw.dtype == np.uint8
            and pred.dtype == np.uint8
            and gt_raw.shape == pred.shape
        )
        if fast:
            if counts is None:
                counts = pair_counts(gt_raw, pred)
            block = raw_pair_counts_to_cm(counts, self.num_classes)
            if block is not None:
                self._video_cm.matrix += block
                return
        # general path: maps and checks every pixel, raises naming the bad values

        self._video_cm.update(to_train_ids(gt_raw, name), pred, name=name)

    def end_video(self) -> dict:
        """Close the video; returns its entry of `per_video`."""
        vc = self.vc.end_video()
        entry = {"miou": self._video_cm.compute()["miou"], "frames": self._video_frames}
        entry.update({f"mvc{c}": v for c, v in vc.items()})
        if self._in_tc:
            entry["tc"] = self.tc.end_video()
            self.tc_video_count += 1
        self.cm.merge(self._video_cm)
        self.per_video[self._video] = entry
        self.frames += self._video_frames
        self.videos += 1
        self._video = None
        return entry

    def state(self) -> dict:
        """Picklable partial result (merge with `merge_state` in video order)."""
        return {
            "cm": self.cm.matrix,
            "tc_cm": self.tc.matrix.matrix if self.tc else None,
            "tc_pairs": self.tc.pairs if self.tc else 0,
            "vc": self.vc.state(),
            "per_video": self.per_video,
            "frames": self.frames,
            "videos": self.videos,
            "tc_video_count": self.tc_video_count,
            "missing": self.missing,
            "missing_examples": self.missing_examples,
        }

    def merge_state(self, state: dict) -> None:
        self.cm.matrix += state["cm"]
        if self.tc is not None and state["tc_cm"] is not None:
            self.tc.matrix.matrix += state["tc_cm"]
            self.tc.pairs += state["tc_pairs"]
        self.vc.merge_state(state["vc"])
        self.per_video.update(state["per_video"])
        self.frames += state["frames"]
        self.videos += state["videos"]
        self.tc_video_count += state["tc_video_count"]
        self.missing += state["missing"]
        room = MAX_LISTED - len(self.missing_examples)
        self.missing_examples += state["missing_examples"][: max(room, 0)]

    def result(self) -> dict:
        """All metrics as fractions in [0, 1] (NaN / None where undefined)."""
        seg = self.cm.compute()
        vc = self.vc.compute()
        out = {k: seg[k] for k in ("pixel_acc", "mean_class_acc", "miou", "miou_all_classes")}
        out.update({f"mvc{c}": v for c, v in vc.items()})
        out["tc"] = self.tc.compute() if self.tc is not None and self.tc.pairs else None
        out["tc_method"] = self.tc.method if self.tc is not None else None
        out["tc_videos"] = self.tc_video_count
        out["tc_pairs"] = self.tc.pairs if self.tc is not None else 0
        out["mvc_windows"] = {f"mvc{c}": n for c, n in self.vc.num_windows().items()}
        out["include_last_window"] = self.include_last_window
        out["classes_present"] = seg["classes_present"]
        out["per_class"] = [
            {
                "id": k,
                "name": self.class_names[k],
                "iou": seg["iou"][k],
                "acc": seg["acc"][k],
                "gt_pixels": seg["gt_pixels"][k],
            }
            for k in range(self.num_classes)
        ]
        out["per_video"] = self.per_video
        out["frames"] = self.frames
        out["videos"] = self.videos
        out["missing_predictions"] = self.missing
        out["missing_examples"] = self.missing_examples
        return out
