"""Dataset layouts on disk (`data.format`): VSPW, video files + mask folders, image sequences.

    vspw    <root>/data/<video>/origin/*.jpg + mask/*.png, <split>.txt, label_num_dic_final.json
            (`vidseg.data.vspw`)
    video   <root>/videos/<video>.<mp4|mkv|avi|mov|webm>
            <root>/masks/<video>/<frame index>.png   one per decoded frame, 0-based decode
                                                     order, any zero padding (7.png, 000007.png)
    frames  <root>/<video>/images/<any name>.<jpg|jpeg|png|bmp|tif|tiff|webp>
            <root>/<video>/masks/<any name>.png      paired with the image of the same name, or,
                                                     when no name is shared, by natural order
For `video` and `frames`: optional `<root>/<split>.txt` (one video name per line; when any
split file exists, every split used must have one, otherwise every split is all the videos) and
optional `<root>/classes.txt` (class names in train-id order, one per line). Frames are in the
natural order of their names (`frame2` before `frame10`); see docs/DATA.md.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from vidseg.data.formats import FORMATS  # noqa: F401  (re-exported)
from vidseg.data.videos import DataLayoutError, LabelledVideo, keep_usable

logger = logging.getLogger(__name__)


VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLASSES_FILE = "classes.txt"
SPLIT_NAMES = ("train", "val", "test")
_DIGITS = re.compile(r"(\d+)")
_INTEGER = re.compile(r"^\d+$")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: `frame2` < `frame10`, `a_9_b` < `a_10_a`.

    Ties (`frame1` and `frame01`) fall back to the plain string, so the order is total.
    """
    parts = _DIGITS.split(name)  # text, digits, text, ...: digit runs at the odd positions
    return tuple(int(p) if k % 2 else p.lower() for k, p in enumerate(parts)), name


def _files(folder: str, extensions: Sequence[str]) -> dict[str, str]:
    """stem -> path of the files in `folder` with one of `extensions` (two with one stem: error)."""
    out: dict[str, str] = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        stem, ext = os.path.splitext(name)
        if ext.lower() not in extensions:
            continue
        if stem in out:
            raise DataLayoutError(
                f"{folder}: {os.path.basename(out[stem])} and {name} have the "
                "same name; expected one file per frame"
            )
        out[stem] = os.path.join(folder, name)
    return out


def detect_format(root: str) -> str | None:
    """The layout of `root` judged from its folders, or None when it looks like none of them."""
    if os.path.isdir(os.path.join(root, "data")):
        return "vspw"
    if os.path.isdir(os.path.join(root, "videos")):
        return "video"
    if any(os.path.isdir(os.path.join(root, n, "images")) for n in _listdir(root)):
        return "frames"
    return None


def _listdir(folder: str) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def all_videos(root: str, fmt: str) -> list[str]:
    """Every video of a `video` or `frames` root, in natural order of the names."""
    if fmt == "video":
        names = list(_files(os.path.join(root, "videos"), VIDEO_EXTENSIONS))
    elif fmt == "frames":
        names = [n for n in _listdir(root) if os.path.isdir(os.path.join(root, n, "images"))]
    else:
        raise ValueError(f"format={fmt!r}; expected video or frames")
    return sorted(names, key=natural_key)


def split_names(root: str, fmt: str, split: str) -> list[str]:
    """Video names of `split`: the split file if the root has split files, else every video.

    Raises:
        FileNotFoundError: the root has split files but not this one, or the file names videos
            that do not exist.
        DataLayoutError: the root holds no video of the format.
    """
    if fmt == "vspw":
        from vidseg.data.vspw_index import read_split

        return read_split(root, split)
    found = all_videos(root, fmt)
    where = "videos/<name>.mp4" if fmt == "video" else "<name>/images/"
    if not found:
        raise DataLayoutError(f"{root}: no videos of format {fmt} (expected {where})")
    split_file = os.path.join(root, f"{split}.txt")
    present = [s for s in SPLIT_NAMES if os.path.isfile(os.path.join(root, f"{s}.txt"))]
    if not present:
        return found
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"split file {split_file} not found: the root has "
            f"{', '.join(s + '.txt' for s in present)}, so every split needs "
            "its list (remove them all to use every video in every split)"
        )
    with open(split_file, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    missing = sorted(set(names) - set(found))
    if missing:
        raise FileNotFoundError(
            f"{split_file} names {len(missing)} video(s) not in {root} "
            f"(expected {where}): {missing[:10]}"
        )
    return names


def video_file(root: str, name: str) -> str:
    """Path of `<root>/videos/<name>.<ext>`."""
    files = _files(os.path.join(root, "videos"), VIDEO_EXTENSIONS)
    if name not in files:
        kinds = "|".join(e[1:] for e in VIDEO_EXTENSIONS)
        raise DataLayoutError(f"video {name}: no file videos/{name}.<{kinds}> in {root}")
    return files[name]


def mask_indices(mask_dir: str) -> dict[int, str]:
    """frame index -> path of the `<integer>.png` masks in `mask_dir` (any zero padding).

    Raises:
        DataLayoutError: a PNG whose name is not an integer, or two names for one index.
    """
    out: dict[int, str] = {}
    for stem, path in _files(mask_dir, (".png",)).items():
        if not _INTEGER.match(stem):
            raise DataLayoutError(
                f"mask {path}: the name must be the frame index (0-based decode "
                "order, e.g. 0.png or 000000.png)"
            )
        index = int(stem)
        if index in out:
            raise DataLayoutError(
                f"{mask_dir}: {os.path.basename(out[index])} and "
                f"{os.path.basename(path)} both name frame {index}"
            )
        out[index] = path
    return out


def index_video_file(root: str, name: str, readers) -> LabelledVideo:
    """Index `videos/<name>.*` with `masks/<name>/`: exactly one mask per decoded frame.

    Raises:
        DataLayoutError: missing mask folder, unreadable video, mask count or names that do not
            match the frames (the message says "<name>: 40 masks for 42 frames").
    """
    import av

    path = video_file(root, name)
    mask_dir = os.path.join(root, "masks", name)
    if not os.path.isdir(mask_dir):
        raise DataLayoutError(
            f"{name}: mask folder {mask_dir} missing (expected "
            f"masks/{name}/<frame index>.png, one per frame)"
        )
    masks = mask_indices(mask_dir)
    try:
        n = readers.num_frames(path)
    except (ValueError, OSError, av.error.FFmpegError) as exc:
        raise DataLayoutError(f"{name}: video {path} cannot be read ({exc})") from None
    if len(masks) != n or set(masks) != set(range(n)):
        no_mask = [i for i in range(n) if i not in masks]
        extra = sorted(i for i in masks if not 0 <= i < n)
        details = [
            f"{len(no_mask)} frame(s) without mask {no_mask[:5]}" if no_mask else "",
            f"{len(extra)} mask(s) past the last frame {extra[:5]}" if extra else "",
        ]
        raise DataLayoutError(
            f"{name}: {len(masks)} masks for {n} frames in {mask_dir} (expected "
            f"{'0..' if n > 1 else ''}{n - 1}.png, one per decoded frame; "
            f"{', '.join(d for d in details if d)})"
        )
    stems = [os.path.splitext(os.path.basename(masks[i]))[0] for i in range(n)]
    return LabelledVideo(
        name=name, stems=stems, mask_paths=[masks[i] for i in range(n)], video_path=path
    )


def index_frames_folder(root: str, name: str, with_masks: bool = True) -> LabelledVideo:
    """Index `<name>/images/` (natural order) with `<name>/masks/`.

    Masks pair with the image of the same name; when no name is shared, by natural order.

    Raises:
        DataLayoutError: no images, missing mask folder, counts that differ, or names that
            pair only partly.
    """
    folder = os.path.join(root, name)
    images = _files(os.path.join(folder, "images"), IMAGE_EXTENSIONS)
    if not images:
        raise DataLayoutError(
            f"{name}: no images in {os.path.join(folder, 'images')} "
            f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})"
        )
    order = sorted(images, key=natural_key)
    frame_paths = [images[s] for s in order]
    if not with_masks:
        return LabelledVideo(name=name, stems=order, mask_paths=None, frame_paths=frame_paths)
    mask_dir = os.path.join(folder, "masks")
    if not os.path.isdir(mask_dir):
        raise DataLayoutError(f"{name}: mask folder {mask_dir} missing (one PNG per image)")
    masks = _files(mask_dir, (".png",))
    if len(masks) != len(images):
        no_mask = [s for s in order if s not in masks]
        raise DataLayoutError(
            f"{name}: {len(masks)} masks for {len(images)} frames in {mask_dir} "
            f"(images without a mask of the same name: {no_mask[:5]})"
        )
    shared = set(images) & set(masks)
    if shared == set(images):
        mask_paths = [masks[s] for s in order]
    elif not shared:  # another naming scheme (img_0001.jpg, mask_0001.png): pair by order
        mask_paths = [masks[s] for s in sorted(masks, key=natural_key)]
    else:
        no_mask = [s for s in order if s not in masks]
        raise DataLayoutError(
            f"{name}: {len(no_mask)} image(s) without a mask of the same name in "
            f"{mask_dir}: {no_mask[:5]} (masks pair with images by name, or by "
            "order when no name is shared)"
        )
    return LabelledVideo(name=name, stems=order, mask_paths=mask_paths, frame_paths=frame_paths)


def load_videos(
    root: str,
    fmt: str,
    names: Sequence[str],
    bad_videos: str = "refuse",
    with_masks: bool = True,
    readers=None,
) -> tuple[list[LabelledVideo], list[str]]:
    """Index the named videos of a root in any format, applying the bad-video policy.

    Args:
        root: dataset root.
        fmt: "vspw", "video" or "frames".
        names: video names (e.g. from `split_names`).
        bad_videos: "refuse" or "skip" (`keep_usable`).
        with_masks: False for unlabelled videos (VSPW test split, frames without masks/).
        readers: `VideoFileReaders` counting the frames of video files (default: "auto").

    Returns:
        `(videos, skipped names)`.
    """
    if fmt == "vspw":
        from vidseg.data.vspw_index import VSPWVideo

        def build(name):
            return VSPWVideo.from_root(root, name, with_masks=with_masks)
    elif fmt == "video":
        if not with_masks:
            raise ValueError("format video: every video needs its mask folder")
        if readers is None:
            from vidseg.data.frame_access import VideoFileReaders

            readers = VideoFileReaders("auto")

        def build(name):
            return index_video_file(root, name, readers)
    elif fmt == "frames":

        def build(name):
            return index_frames_folder(root, name, with_masks=with_masks)
    else:
        raise ValueError(f"format={fmt!r}; expected one of {', '.join(FORMATS)}")
    return keep_usable(names, build, bad_videos, root)


def class_names(root: str, fmt: str, num_classes: int) -> list[str]:
    """Names of the `num_classes` classes in train-id order.

    VSPW reads `label_num_dic_final.json`; the other formats read `classes.txt` if present,
    else name them `class_0 ... class_{K-1}`.

    Raises:
        ValueError: `classes.txt` lists another number of classes than `num_classes`.
    """
    if fmt == "vspw":
        from vidseg.data.vspw_index import load_class_names

        return load_class_names(root)
    path = os.path.join(root, CLASSES_FILE)
    if not os.path.isfile(path):
        return [f"class_{k}" for k in range(num_classes)]
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes:
        raise ValueError(f"{path} lists {len(names)} classes but model.num_classes={num_classes}")
    return names
