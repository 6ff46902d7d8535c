"""Verify a `data.format: video` or `frames` root before training on it (`vidseg data check`).

Per video: the pairing that training needs (mask folder present, one mask per frame, names
that pair up: a video that fails it is listed as refused), then every file: unreadable or
truncated videos and images, mask values outside the label format (and outside `classes.txt`
when present), masks whose size differs from the frames. Each mask is decoded once; videos are
decoded in full only with `decode_frames` (otherwise their frame count and size come from the
container, as training reads them).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vidseg.data.check import CheckReport, Problem, frame_size
from vidseg.data.image_files import (
    IGNORE_INDEX,
    UnreadableImageError,
    invalid_raw_values,
    read_mask,
    to_train_ids,
    valid_values,
)
from vidseg.data.layouts import (
    CLASSES_FILE,
    SPLIT_NAMES,
    all_videos,
    index_frames_folder,
    index_video_file,
    video_file,
)
from vidseg.data.videos import DataLayoutError, LabelledVideo


def _classes(root: str, report: CheckReport) -> int | None:
    path = os.path.join(root, CLASSES_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        report.problems.append(Problem("error", path, "lists no class"))
        return None
    return len(names)


def _mask_problems(
    path: str, size: tuple[int, int] | None, label_format: str, num_classes: int | None
) -> list[Problem]:
    """Problems of one mask: unreadable, values, size against its frame's `(H, W)`."""
    try:
        mask = read_mask(path)
    except (UnreadableImageError, ValueError, OSError) as exc:
        return [Problem("error", path, str(exc).replace(f"mask {path} ", "").strip())]
    problems = []
    bad = invalid_raw_values(mask, label_format)
    if bad.size:
        problems.append(
            Problem(
                "error",
                path,
                f"values {bad[:10].tolist()} outside "
                f"{valid_values(label_format)} (data.labels: {label_format})",
            )
        )
    elif num_classes is not None:
        ids = to_train_ids(mask, path, label_format)
        over = (ids >= num_classes) & (ids != IGNORE_INDEX)
        if over.any():
            values = np.unique(mask[over])[:10].tolist()
            problems.append(
                Problem(
                    "error",
                    path,
                    f"values {values} are classes beyond the "
                    f"{num_classes} of {CLASSES_FILE} "
                    f"(data.labels: {label_format})",
                )
            )
    if size is not None and tuple(mask.shape) != tuple(size):
        problems.append(
            Problem(
                "error",
                path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the "
                f"frame is {size[1]}x{size[0]} (WxH)",
            )
        )
    return problems


def _refused_counts(root: str, fmt: str, name: str, backend: str) -> tuple[int, int]:
    """(frames, masks) of a video that does not index, counted as far as they can be."""
    if fmt == "frames":
        folder = os.path.join(root, name)
        count = [
            len(os.listdir(os.path.join(folder, sub)))
            if os.path.isdir(os.path.join(folder, sub))
            else 0
            for sub in ("images", "masks")
        ]
        return count[0], count[1]
    from vidseg.data.frame_access import VideoFileReaders

    mask_dir = os.path.join(root, "masks", name)
    masks = len(os.listdir(mask_dir)) if os.path.isdir(mask_dir) else 0
    try:
        return VideoFileReaders(backend).num_frames(video_file(root, name)), masks
    except Exception:  # noqa: BLE001 - the reason is already reported; only the count is lost
        return 0, masks


def _check_one(
    root: str,
    fmt: str,
    name: str,
    label_format: str,
    num_classes: int | None,
    decode: bool,
    backend: str,
) -> tuple[int, int, list[Problem], bool]:
    """Check one video; returns (frames, masks, problems, refused)."""
    from vidseg.data.frame_access import VideoFileReaders, iter_video_frames, video_frame_size

    where = os.path.join(root, name)
    try:
        if fmt == "video":
            where = video_file(root, name)
            video = index_video_file(root, name, VideoFileReaders(backend))
        else:
            video = index_frames_folder(root, name)
    except DataLayoutError as exc:
        frames, masks = _refused_counts(root, fmt, name, backend)
        return frames, masks, [Problem("error", where, str(exc))], True
    problems: list[Problem] = []
    sizes: list[tuple[int, int] | None]
    if fmt == "video":
        try:
            size = video_frame_size(video.video_path)
        except ValueError as exc:
            return len(video), len(video), [Problem("error", where, str(exc))], True
        sizes = [size] * len(video)
        if decode:
            problems += _decode_video(video, size, iter_video_frames)
    else:
        sizes = []
        for path in video.frame_paths:
            size, error, warning = frame_size(path, decode)
            sizes.append(size)
            problems += [
                Problem(kind, path, text)
                for kind, text in (("error", error), ("warning", warning))
                if text
            ]
        if (
            video.mask_paths
            and os.path.splitext(os.path.basename(video.mask_paths[0]))[0] != video.stems[0]
        ):
            problems.append(
                Problem(
                    "warning",
                    os.path.dirname(video.mask_paths[0]),
                    "no mask has the name of an image: masks paired with images "
                    f"by natural order ({video.stems[0]} with "
                    f"{os.path.basename(video.mask_paths[0])}, ...)",
                )
            )
    for path, size in zip(video.mask_paths, sizes):
        problems += _mask_problems(path, size, label_format, num_classes)
    return len(video), len(video.mask_paths), problems, False


def _decode_video(video: LabelledVideo, size: tuple[int, int], iter_video_frames) -> list[Problem]:
    """Decode every frame: count and size must match what the index and the header say."""
    count, odd = 0, None
    for rgb in iter_video_frames(video.video_path):
        if odd is None and rgb.shape[:2] != tuple(size):
            odd = (count, rgb.shape[:2])
        count += 1
    problems = []
    if count != len(video):
        problems.append(
            Problem(
                "error",
                video.video_path,
                f"decodes {count} frames but "
                f"{len(video)} are indexed (truncated or damaged file): the masks "
                "after the last decodable frame have no frame",
            )
        )
    if odd is not None:
        problems.append(
            Problem(
                "error",
                video.video_path,
                f"frame {odd[0]} is {odd[1][1]}x"
                f"{odd[1][0]}, the header says {size[1]}x{size[0]} (WxH)",
            )
        )
    return problems


def _split_lists(root: str, fmt: str, splits, report: CheckReport) -> dict[str, list[str]]:
    """split -> names; without split files one pseudo-split "all" holds every video."""
    found = all_videos(root, fmt)
    known = set(found)
    present = [s for s in SPLIT_NAMES if os.path.isfile(os.path.join(root, f"{s}.txt"))]
    if not present:
        return {"all": found}
    out = {}
    for split in splits or present:
        path = os.path.join(root, f"{split}.txt")
        if not os.path.isfile(path):
            report.problems.append(
                Problem(
                    "error",
                    path,
                    f"split file missing (the root has {', '.join(s + '.txt' for s in present)})",
                )
            )
            continue
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        missing = [n for n in names if n not in known]
        for n in missing:
            what = f"videos/{n}.<ext>" if fmt == "video" else f"{n}/images/"
            report.problems.append(Problem("error", path, f"lists {n}, but {what} does not exist"))
        out[split] = [n for n in names if n not in missing]
    return out


def check_layout(
    root: str | os.PathLike,
    fmt: str,
    splits=None,
    label_format: str = "vspw",
    decode_frames: bool = False,
    workers: int | None = None,
) -> CheckReport:
    """Check a `video` or `frames` root; `report.ok` is False when it is not usable as is.

    Args:
        root: the dataset root.
        fmt: "video" or "frames".
        splits: splits to check (their `<split>.txt` must exist); None = every split file
            present, or every video (one row "all") when the root has no split file.
        label_format: "vspw" or "train_ids" (`data.labels`).
        decode_frames: decode every frame (video files in full, images past their header).
        workers: thread-pool size (default: 2 x CPU count, at most 16).
    """
    from vidseg.data.frame_access import VideoFileReaders

    if fmt not in ("video", "frames"):
        raise ValueError(f"format={fmt!r}; expected video or frames (check_vspw checks vspw)")
    root = os.fspath(root)
    report = CheckReport(root=root, layout=fmt, expected_source="")
    backend = VideoFileReaders("auto").backend if fmt == "video" else "pyav"
    num_classes = _classes(root, report)
    lists = _split_lists(root, fmt, splits, report)
    if not any(lists.values()):
        where = "videos/<name>.mp4 with masks/<name>/" if fmt == "video" else "<name>/images/"
        report.problems.append(Problem("error", root, f"no videos found (expected {where})"))
    names = list(dict.fromkeys(n for group in lists.values() for n in group))
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(
            zip(
                names,
                pool.map(
                    lambda n: _check_one(
                        root, fmt, n, label_format, num_classes, decode_frames, backend
                    ),
                    names,
                ),
            )
        )
    for name, (_, _, problems, refused) in results.items():
        report.problems.extend(problems)
        if refused:
            report.refused.append(name)
    for split, group in lists.items():
        report.counts[split] = {
            "videos": len(group),
            "frames": sum(results[n][0] for n in group),
            "masks": sum(results[n][1] for n in group),
        }
    return report
