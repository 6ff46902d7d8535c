"""Score a split: mIoU family, mVC_C and TC from one pass over each video's files.

`SplitScorer` is the in-memory accumulator (used by `vidseg eval` on live predictions);
`score_prediction_dir` scores a folder of VSPW-format prediction PNGs produced by any method
(`vidseg score`), optionally across several processes with an exact, order-preserving merge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from vidseg.metrics.consistency import TemporalConsistency, VideoConsistency
from vidseg.metrics.segmentation import ConfusionMatrix

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
MAX_LISTED = 5


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

    def __init__(self, num_classes: int, class_names: Sequence[str], windows: Sequence[int] = (8, 16),
                 tc: bool = True, tc_videos: int | None = None, flow: str | Callable = "dis",
                 include_last_window: bool = False, raft_weights: str | None = None,
                 device: str | None = None):
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.tc_videos = tc_videos
        self.include_last_window = bool(include_last_window)
        self.cm = ConfusionMatrix(num_classes)
        self.vc = VideoConsistency(windows, include_last_window=include_last_window)
        self.tc = TemporalConsistency(num_classes, flow=flow, raft_weights=raft_weights,
                                      device=device) if tc else None
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

    def add_frame(self, gt_raw: np.ndarray | None, pred: np.ndarray | None,
                  rgb: np.ndarray | None = None, name: str | None = None) -> None:
        """Add the next frame of the current video.

        Args:
            gt_raw: (H, W) uint8 raw VSPW mask, or None for a frame without annotation.
            pred: (H, W) uint8 train ids 0..K-1, or None when the prediction is missing (counted;
                windows and flow pairs through this frame are not scored).
            rgb: (H, W, 3) uint8 frame, needed for TC videos.
            name: file name for error messages.
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
            self._update_cm(gt_raw, pred, name)
            self.vc.add(gt_raw, pred)
            self._video_frames += 1
        if self._in_tc:
            if rgb is None:
                raise ValueError(f"video {self._video}: TC needs the RGB frame ({name or 'frame'})")
            self.tc.add(rgb, pred)

    def _update_cm(self, gt_raw: np.ndarray, pred: np.ndarray, name: str | None) -> None:
        from vidseg.data.vspw import to_train_ids

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
        return {"cm": self.cm.matrix, "tc_cm": self.tc.matrix.matrix if self.tc else None,
                "tc_pairs": self.tc.pairs if self.tc else 0, "vc": self.vc.state(),
                "per_video": self.per_video, "frames": self.frames, "videos": self.videos,
                "tc_video_count": self.tc_video_count, "missing": self.missing,
                "missing_examples": self.missing_examples}

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
        self.missing_examples += state["missing_examples"][:max(room, 0)]

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
            {"id": k, "name": self.class_names[k], "iou": seg["iou"][k], "acc": seg["acc"][k],
             "gt_pixels": seg["gt_pixels"][k]} for k in range(self.num_classes)]
        out["per_video"] = self.per_video
        out["frames"] = self.frames
        out["videos"] = self.videos
        out["missing_predictions"] = self.missing
        out["missing_examples"] = self.missing_examples
        return out


def read_prediction(path: str) -> np.ndarray:
    """Read a prediction PNG as its label array (H, W) uint8.

    Accepts 8-bit grayscale and palette PNGs (palette indices are the labels, as in the official
    submission format); anything else (RGB, alpha, 16-bit, not a PNG) raises ValueError.
    """
    import cv2

    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE:
        raise ValueError(f"{path}: not a PNG file (expected a single-channel label PNG)")
    bit_depth, colour = head[24], head[25]
    if colour == 0 and bit_depth == 8:
        arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    elif colour in (0, 3) and bit_depth <= 8:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.array(im)
        if colour == 0 and arr.dtype == bool:
            arr = arr.astype(np.uint8)
    else:
        kind = _PNG_COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise ValueError(f"{path}: {bit_depth}-bit {kind} PNG; expected a single-channel 8-bit "
                         f"label PNG (grayscale or palette) of train ids")
    if arr is None:
        raise ValueError(f"{path}: PNG cannot be decoded")
    return arr.astype(np.uint8, copy=False)


def _problems_error(problems: list[str], total: int, what: str) -> ValueError:
    shown = "; ".join(problems[:MAX_LISTED])
    more = f" (showing {MAX_LISTED} of {total})" if total > MAX_LISTED else ""
    return ValueError(f"{total} {what}{more}: {shown}")


def _load_frame(pred_path: str, mask_path: str, frame_path: str, with_rgb: bool):
    """Read one frame's files; returns (gt, pred or None, rgb or None, problem or None)."""
    from vidseg.data.vspw import read_frame, read_mask

    if not os.path.isfile(pred_path):
        return None, None, None, f"{pred_path}: missing"
    gt = read_mask(mask_path)
    try:
        pred = read_prediction(pred_path)
    except ValueError as exc:
        return gt, None, None, str(exc)
    rgb = read_frame(frame_path) if with_rgb else None
    return gt, pred, rgb, None


def _score_video(scorer: SplitScorer, root: str, pred_dir: str, name: str, in_tc: bool,
                 allow_missing: bool, io_threads: int = 2, prefetch: int = 3) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from vidseg.data.vspw import VSPWVideo

    video = VSPWVideo.from_root(root, name, with_masks=True)
    k = scorer.num_classes
    problems: list[str] = []
    scorer.start_video(name, in_tc)
    jobs = [(os.path.join(pred_dir, name, stem + ".png"), mask_path, frame_path, scorer._in_tc)
            for stem, frame_path, mask_path in zip(video.stems, video.frame_paths, video.mask_paths)]
    # PNG/JPEG decoding releases the GIL: a couple of threads decode the next frames while this
    # one scores the current frame; the look-ahead is bounded so memory stays flat.
    if io_threads <= 0:
        prefetch = 0
    with ThreadPoolExecutor(max_workers=max(io_threads, 1)) as pool:
        pending = [pool.submit(_load_frame, *job) for job in jobs[:prefetch]]
        for i, job in enumerate(jobs):
            if prefetch:
                gt, pred, rgb, problem = pending.pop(0).result()
                if i + prefetch < len(jobs):
                    pending.append(pool.submit(_load_frame, *jobs[i + prefetch]))
            else:
                gt, pred, rgb, problem = _load_frame(*job)
            pred_path, mask_path = job[0], job[1]
            if problem is not None and gt is None:  # missing prediction
                if not allow_missing:
                    problems.append(problem)
                scorer.add_frame(None, None, name=pred_path)
                continue
            if problem is not None:
                problems.append(problem)
            elif pred.shape != gt.shape:
                problems.append(f"{pred_path}: size {pred.shape[1]}x{pred.shape[0]} (WxH) but mask "
                                f"{mask_path} is {gt.shape[1]}x{gt.shape[0]}")
            elif int(pred.max()) >= k:
                bad = np.unique(pred[pred >= k])[:5].tolist()
                problems.append(f"{pred_path}: values {bad} > {k - 1} (expected train ids "
                                f"0..{k - 1})")
            if problems:  # the video fails below: only look for a few more bad files
                if len(problems) >= MAX_LISTED:
                    for future in pending:
                        future.cancel()
                    break
                continue
            scorer.add_frame(gt, pred, rgb, name=pred_path)
    if problems:
        what = (f"bad prediction file(s) in video {name}" if len(problems) < MAX_LISTED else
                f"or more bad prediction files in video {name} (stopped looking)")
        raise _problems_error(problems, len(problems), what)
    scorer.end_video()


def _worker(args: tuple) -> dict:
    root, pred_dir, name, in_tc, allow_missing, io_threads, config = args
    scorer = SplitScorer(**config)
    _score_video(scorer, root, pred_dir, name, in_tc, allow_missing, io_threads)
    return scorer.state()


def _check_predictions_exist(root: str, pred_dir: str, videos: list[str]) -> None:
    from vidseg.data.vspw import VSPWVideo

    problems: list[str] = []
    total = 0
    for name in videos:
        video = VSPWVideo.from_root(root, name, with_masks=True)
        folder = os.path.join(pred_dir, name)
        if not os.path.isdir(folder):
            total += len(video.stems)
            problems.append(f"{folder}/: prediction folder missing ({len(video.stems)} frames)")
            continue
        present = set(os.listdir(folder))
        missing = [s for s in video.stems if s + ".png" not in present]
        total += len(missing)
        problems += [f"{os.path.join(folder, s + '.png')}: missing "
                     f"({len(missing)} of {len(video.stems)} in this video)" for s in missing[:2]]
    if total:
        raise _problems_error(problems, total, f"prediction file(s) missing under {pred_dir} "
                              f"(pass allow_missing / --allow-missing to score the rest)")


def score_prediction_dir(data_root: str, pred_dir: str, split: str = "val",
                         tc_videos: int | None = None, allow_missing: bool = False,
                         flow: str | Callable = "dis", num_workers: int = 0, *, tc: bool = True,
                         windows: Sequence[int] = (8, 16), include_last_window: bool = False,
                         raft_weights: str | None = None, progress: bool = False,
                         io_threads: int = 2) -> dict:
    """Score `<pred_dir>/<video>/<stem>.png` against the VSPW split at `data_root`.

    Args:
        data_root: VSPW root (with `<split>.txt`, `label_num_dic_final.json`, `data/`).
        pred_dir: folder of prediction PNGs, train ids 0..K-1 at mask size.
        split: split file name without `.txt`.
        tc_videos: TC on the first N videos of the split file (100 = the official protocol);
            None = all videos.
        allow_missing: count missing predictions instead of failing.
        flow: TC flow backend ("dis", "raft" or a callable).
        num_workers: processes scoring videos in parallel (<= 1: in this process). The merge is
            in split order, so the numbers do not depend on it.
        tc: compute TC at all.
        windows: mVC window lengths.
        include_last_window: see `VideoConsistency`.
        raft_weights: local RAFT weights for `flow="raft"`.
        progress: show a tqdm bar over videos.
        io_threads: threads decoding the next frames while the current one is scored
            (0: read in the scoring thread).

    Returns:
        `SplitScorer.result()` plus `split`, `data_root`, `pred_dir`.

    Raises:
        FileNotFoundError: the split / class list / a video folder is missing.
        ValueError: missing, unreadable, mis-sized or out-of-range predictions (first few listed).
    """
    from vidseg.data.vspw import load_class_names, read_split

    data_root, pred_dir = os.fspath(data_root), os.fspath(pred_dir)
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f"prediction folder {pred_dir} not found")
    if tc_videos is not None and tc_videos < 0:
        raise ValueError(f"tc_videos must be >= 0 or None, got {tc_videos}")
    names = load_class_names(data_root)
    videos = read_split(data_root, split)
    if not allow_missing:
        _check_predictions_exist(data_root, pred_dir, videos)
    n_tc = len(videos) if tc_videos is None else min(tc_videos, len(videos))
    config = dict(num_classes=len(names), class_names=names, windows=tuple(windows), tc=tc,
                  tc_videos=tc_videos, flow=flow, include_last_window=include_last_window,
                  raft_weights=raft_weights)
    scorer = SplitScorer(**config)
    jobs = [(data_root, pred_dir, v, tc and i < n_tc, allow_missing, io_threads)
            for i, v in enumerate(videos)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="video", desc=f"score {split}")
    # Callables and GPU models stay in this process; DIS is cheap to rebuild per worker.
    parallel = num_workers > 1 and len(jobs) > 1 and isinstance(flow, str) and flow == "dis"
    try:
        if parallel:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context("spawn" if os.name == "nt" else "forkserver")
            with ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx) as pool:
                for state in pool.map(_worker, [j + (config,) for j in jobs], chunksize=1):
                    scorer.merge_state(state)
                    if bar is not None:
                        bar.update(1)
        else:
            for job in jobs:
                _score_video(scorer, *job)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    result = scorer.result()
    result.update({"split": split, "data_root": data_root, "pred_dir": pred_dir})
    return result
