"""Score a folder of prediction PNGs: mIoU family, mVC_C and TC from one pass over each video.

`score_prediction_dir` (`vidseg score`) scores VSPW-format prediction PNGs produced by any
method against a dataset in any layout (`vidseg.data.layouts`: VSPW, video files + mask
folders, image sequences) with a `SplitScorer` (`vidseg.metrics.split_scorer`, also the
accumulator of `vidseg eval`), optionally across several processes with an exact,
order-preserving merge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from vidseg.io.label_png import PNG_COLOUR_TYPES, PNG_SIGNATURE, decode_label_png
from vidseg.metrics.segmentation import pair_counts
from vidseg.metrics.split_scorer import MAX_LISTED, NUM_RAW_LABELS, SplitScorer

__all__ = [
    "SplitScorer",
    "dataset_classes",
    "read_prediction",
    "resolve_format",
    "score_prediction_dir",
]


def read_prediction(path: str) -> np.ndarray:
    """Read a prediction PNG as its label array (H, W) uint8.

    Accepts 8-bit grayscale and palette PNGs (palette indices are the labels, as in the official
    submission format); anything else (RGB, alpha, 16-bit, not a PNG) raises ValueError.
    """
    import cv2

    with open(path, "rb") as f:
        data = f.read()
    fast = decode_label_png(data)
    if fast is not None:
        return fast
    head = data[:33]
    if len(head) < 26 or head[:8] != PNG_SIGNATURE:
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
        kind = PNG_COLOUR_TYPES.get(colour, f"colour type {colour}")
        raise ValueError(
            f"{path}: {bit_depth}-bit {kind} PNG; expected a single-channel 8-bit "
            f"label PNG (grayscale or palette) of train ids"
        )
    if arr is None:
        raise ValueError(f"{path}: PNG cannot be decoded")
    return arr.astype(np.uint8, copy=False)


def _problems_error(problems: list[str], total: int, what: str) -> ValueError:
    shown = "; ".join(problems[:MAX_LISTED])
    more = f" (showing {MAX_LISTED} of {total})" if total > MAX_LISTED else ""
    return ValueError(f"{total} {what}{more}: {shown}")


def _read_raw_mask(path: str, label_format: str) -> tuple[np.ndarray, bool]:
    """A mask in VSPW raw values and whether its values are checked already.

    VSPW-format label PNGs go through `decode_label_png` unchecked (the caller checks them from
    the pair counts it computes anyway); everything else through `image_files.read_mask` and
    `to_vspw_raw`, which check and name the file.
    """
    from vidseg.data.image_files import read_mask, to_vspw_raw

    if label_format == "vspw":
        with open(path, "rb") as f:
            fast = decode_label_png(f.read())
        if fast is not None:
            return fast, False
    return to_vspw_raw(read_mask(path), path, label_format), True


def _load_frame(
    pred_path: str,
    mask_path: str | None,
    frame_path: str | None,
    label_format: str,
    num_classes: int = NUM_RAW_LABELS,
):
    """Read one frame's files: `(gt, pred, rgb, counts, problem, missing)`.

    `gt` is the mask in VSPW raw values (None for a frame without one), `rgb` the image when
    `frame_path` is given (TC), `counts` the (256, 256) `pair_counts(gt, pred)` when both are
    there (the confusion-matrix update, done here in the reader thread); `missing` marks an
    absent prediction, `problem` any bad one. A mask with values outside the label format
    raises `MaskError` naming it.
    """
    from vidseg.data.image_files import read_frame, to_vspw_raw

    if not os.path.isfile(pred_path):
        return None, None, None, None, f"{pred_path}: missing", True
    gt, checked = (None, True) if mask_path is None else _read_raw_mask(mask_path, label_format)
    try:
        pred = read_prediction(pred_path)
    except ValueError as exc:
        pred = None
        problem = str(exc)
    else:
        problem = None
    counts = None
    if gt is not None and pred is not None and gt.shape == pred.shape:
        counts = pair_counts(gt, pred)
        # raw 125..254 are not VSPW labels: the checking path raises naming the mask
        checked = checked or not counts[NUM_RAW_LABELS + 1 : 255].any()
    if not checked:
        to_vspw_raw(gt, mask_path, label_format)
    if problem is not None:
        return gt, None, None, None, problem, False
    rgb = read_frame(frame_path) if frame_path is not None else None
    return gt, pred, rgb, counts, None, False


def _out_of_range(pred: np.ndarray, counts: np.ndarray | None, k: int) -> list[int]:
    """Up to 5 prediction values >= k (from the pair counts when given)."""
    if counts is not None:
        return (np.flatnonzero(counts[:, k:].any(axis=0))[:5] + k).tolist()
    if int(pred.max()) < k:
        return []
    return np.unique(pred[pred >= k])[:5].tolist()


def default_io_threads() -> int:
    """Reader threads by default: one per CPU (PNG decoding releases the GIL)."""
    return max(os.cpu_count() or 1, 1)


def _decoded_frames(video, in_tc: bool):
    """RGB frames of a video file in order for TC (decoded once), else an endless None."""
    from vidseg.data.frame_access import iter_labelled_frames

    if not in_tc or video.video_path is None:
        while True:
            yield None
    for rgb, problem in iter_labelled_frames(video):
        if rgb is None:
            raise ValueError(f"{problem}; TC needs every frame (--no-tc scores without them)")
        yield rgb


def _score_video(
    scorer: SplitScorer,
    video,
    pred_dir: str,
    in_tc: bool,
    allow_missing: bool,
    label_format: str = "vspw",
    io_threads: int | None = None,
    prefetch: int | None = None,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    io_threads = default_io_threads() if io_threads is None else io_threads
    prefetch = 2 * io_threads + 1 if prefetch is None else prefetch

    name, k = video.name, scorer.num_classes
    problems: list[str] = []
    scorer.start_video(name, in_tc)
    # TC reads image files with the masks; a video file is decoded in this thread, in order
    images = video.frame_paths if scorer._in_tc and video.video_path is None else None
    decoded = _decoded_frames(video, scorer._in_tc)
    jobs = [
        (
            os.path.join(pred_dir, name, stem + ".png"),
            video.mask_paths[i],
            images[i] if images else None,
            label_format,
            k,
        )
        for i, stem in enumerate(video.stems)
    ]
    # PNG/JPEG decoding releases the GIL: reader threads decode the next frames (and count their
    # pixel pairs) while this one does the in-order mVC / TC work; the look-ahead is bounded so
    # memory stays flat.
    if io_threads <= 0:
        prefetch = 0
    with ThreadPoolExecutor(max_workers=max(io_threads, 1)) as pool:
        pending = [pool.submit(_load_frame, *job) for job in jobs[:prefetch]]
        for i, job in enumerate(jobs):
            if prefetch:
                gt, pred, rgb, counts, problem, missing = pending.pop(0).result()
                if i + prefetch < len(jobs):
                    pending.append(pool.submit(_load_frame, *jobs[i + prefetch]))
            else:
                gt, pred, rgb, counts, problem, missing = _load_frame(*job)
            rgb = next(decoded) if rgb is None else rgb
            pred_path, mask_path = job[0], job[1]
            if missing:
                if not allow_missing:
                    problems.append(problem)
                scorer.add_frame(None, None, name=pred_path)
                continue
            if problem is not None:
                problems.append(problem)
            elif gt is not None and pred.shape != gt.shape:
                problems.append(
                    f"{pred_path}: size {pred.shape[1]}x{pred.shape[0]} (WxH) but mask "
                    f"{mask_path} is {gt.shape[1]}x{gt.shape[0]}"
                )
            elif bad := _out_of_range(pred, counts, k):
                problems.append(
                    f"{pred_path}: values {bad} > {k - 1} (expected train ids 0..{k - 1})"
                )
            if problems:  # the video fails below: only look for a few more bad files
                if len(problems) >= MAX_LISTED:
                    for future in pending:
                        future.cancel()
                    break
                continue
            scorer.add_frame(gt, pred, rgb, name=pred_path, counts=counts)
    if problems:
        what = (
            f"bad prediction file(s) in video {name}"
            if len(problems) < MAX_LISTED
            else f"or more bad prediction files in video {name} (stopped looking)"
        )
        raise _problems_error(problems, len(problems), what)
    scorer.end_video()


def _worker(args: tuple) -> dict:
    *job, config = args
    scorer = SplitScorer(**config)
    _score_video(scorer, *job)
    return scorer.state()


def _check_predictions_exist(pred_dir: str, videos: list) -> None:
    problems: list[str] = []
    total = 0
    for video in videos:
        folder = os.path.join(pred_dir, video.name)
        if not os.path.isdir(folder):
            total += len(video.stems)
            problems.append(f"{folder}/: prediction folder missing ({len(video.stems)} frames)")
            continue
        present = set(os.listdir(folder))
        missing = [s for s in video.stems if s + ".png" not in present]
        total += len(missing)
        problems += [
            f"{os.path.join(folder, s + '.png')}: missing "
            f"({len(missing)} of {len(video.stems)} in this video)"
            for s in missing[:2]
        ]
    if total:
        raise _problems_error(
            problems,
            total,
            f"prediction file(s) missing under {pred_dir} "
            f"(pass allow_missing / --allow-missing to score the rest)",
        )


def dataset_classes(root: str, fmt: str) -> list[str]:
    """Class names of a dataset root in train-id order: VSPW's `label_num_dic_final.json`, the
    other layouts' `classes.txt`, else the 124 train ids the label formats allow, `class_<id>`."""
    from vidseg.data.image_files import NUM_RAW_CLASSES
    from vidseg.data.layouts import CLASSES_FILE, class_names
    from vidseg.data.vspw_index import load_class_names

    if fmt == "vspw":
        return load_class_names(root)
    path = os.path.join(root, CLASSES_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if names:
            return names
    return class_names(root, fmt, NUM_RAW_CLASSES)


def resolve_format(root: str, data_format: str = "auto") -> str:
    """`data_format`, or for "auto" the layout `root` looks like (`layouts.detect_format`).

    Raises:
        FileNotFoundError: `root` is not a folder.
        ValueError: an unknown format, or "auto" and no layout fits.
    """
    from vidseg.data.layouts import FORMATS, detect_format

    if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root} not found")
    if data_format == "auto":
        found = detect_format(root)
        if found is None:
            raise ValueError(
                f"{root}: not a dataset root of a known layout (vspw: data/, video: "
                "videos/, frames: <video>/images/; docs/DATA.md)"
            )
        return found
    if data_format not in FORMATS:
        raise ValueError(f"format={data_format!r}; expected auto or one of {', '.join(FORMATS)}")
    return data_format


def score_prediction_dir(
    data_root: str,
    pred_dir: str,
    split: str = "val",
    tc_videos: int | None = None,
    allow_missing: bool = False,
    flow: str | Callable = "dis",
    num_workers: int = 0,
    *,
    tc: bool = True,
    windows: Sequence[int] = (8, 16),
    include_last_window: bool = False,
    raft_weights: str | None = None,
    progress: bool = False,
    io_threads: int | None = None,
    data_format: str = "auto",
    label_format: str = "vspw",
) -> dict:
    """Score `<pred_dir>/<video>/<stem>.png` against a split of the dataset at `data_root`.

    Args:
        data_root: dataset root in any layout (`vidseg.data.layouts`): VSPW (`<split>.txt`,
            `label_num_dic_final.json`, `data/`), video files + mask folders, image sequences.
        pred_dir: folder of prediction PNGs, train ids 0..K-1 at mask size; `<stem>` is the
            frame's stem as the layout names it (VSPW and frames: the image's, video: the mask's).
        split: split name (`<split>.txt`; the video and frames layouts without split files
            score every video).
        tc_videos: TC on the first N videos of the split (100 = the official protocol);
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
            (0: read in the scoring thread; None: one per CPU, `os.cpu_count()`).
        data_format: "auto" (judged from the folders), "vspw", "video" or "frames".
        label_format: mask values of the video / frames layouts, "vspw" or "train_ids"
            (`data.labels`); the metrics see VSPW raw values either way.

    Returns:
        `SplitScorer.result()` plus `split`, `format`, `data_root`, `pred_dir`.

    Raises:
        FileNotFoundError: the root / split / class list / a video folder is missing.
        ValueError: missing, unreadable, mis-sized or out-of-range predictions (first few
            listed), or videos whose frames and masks do not pair up (`DataLayoutError`).
    """
    from vidseg.data.layouts import load_videos, split_names

    data_root, pred_dir = os.fspath(data_root), os.fspath(pred_dir)
    fmt = resolve_format(data_root, data_format)
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f"prediction folder {pred_dir} not found")
    if tc_videos is not None and tc_videos < 0:
        raise ValueError(f"tc_videos must be >= 0 or None, got {tc_videos}")
    names = dataset_classes(data_root, fmt)
    videos, _ = load_videos(data_root, fmt, split_names(data_root, fmt, split), "refuse")
    if not allow_missing:
        _check_predictions_exist(pred_dir, videos)
    n_tc = len(videos) if tc_videos is None else min(tc_videos, len(videos))
    config = dict(
        num_classes=len(names),
        class_names=names,
        windows=tuple(windows),
        tc=tc,
        tc_videos=tc_videos,
        flow=flow,
        include_last_window=include_last_window,
        raft_weights=raft_weights,
    )
    scorer = SplitScorer(**config)
    # Callables and GPU models stay in this process; DIS is cheap to rebuild per worker.
    parallel = num_workers > 1 and len(videos) > 1 and isinstance(flow, str) and flow == "dis"
    if io_threads is None and parallel:
        # the CPUs are shared by the workers: reader threads only where a worker has a spare
        # core (on 2 cores, 2 workers with a reader thread each took 1.9-2.1 s against 1.74 s
        # without, for 20 videos x 60 frames: the threads mostly wait for the GIL)
        per_worker = default_io_threads() // num_workers
        io_threads = per_worker if per_worker > 1 else 0
    jobs = [
        (v, pred_dir, tc and i < n_tc, allow_missing, label_format, io_threads)
        for i, v in enumerate(videos)
    ]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="video", desc=f"score {split}")
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
    result.update({"split": split, "format": fmt, "data_root": data_root, "pred_dir": pred_dir})
    return result
