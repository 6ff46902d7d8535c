"""VSPW on disk: splits, class list, video index and the VSPW clip dataset.

Clip sampling, tolerant frame reading and the label mapping are shared with the other layouts
(`vidseg.data.clip_dataset`, `vidseg.data.image_files`).

Layout (vspw-metrics.md section 1)::

    <root>/train.txt val.txt test.txt      one video folder name per line
    <root>/label_num_dic_final.json        {"others": 0, "wall": 1, ..., "train": 124}
    <root>/data/<video>/origin/<8 digits>.jpg
    <root>/data/<video>/mask/<8 digits>.png (train/val only)

Frame names are source-frame indices (not 0-based, possibly with gaps); sorted stems are the
temporal order and clips follow that sorted list, never the numeric value of the stems.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vidseg.data.clip_dataset import (
    ClipDataset,
    DataLayoutError,
    LabelledVideo,
    clip_indices,
    keep_usable,
)
from vidseg.data.image_files import (
    IGNORE_INDEX,
    NUM_RAW_CLASSES,
    UnreadableImageError,
    invalid_raw_values,
    read_frame,
    read_mask,
    to_train_ids,
)

# the frame/mask readers and the label mapping live in image_files (shared with the other
# layouts); they stay importable from here, where VSPW users have always found them
__all__ = [
    "IGNORE_INDEX",
    "NUM_RAW_CLASSES",
    "SPLITS",
    "CLASS_FILE",
    "FRAME_EXTENSIONS",
    "UnreadableImageError",
    "invalid_raw_values",
    "to_train_ids",
    "read_frame",
    "read_mask",
    "read_split",
    "load_class_names",
    "clip_indices",
    "VSPWVideo",
    "VSPWClips",
]

SPLITS = ("train", "val", "test")
CLASS_FILE = "label_num_dic_final.json"
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Return the video names listed in `<root>/<split>.txt`, in file order.

    Raises:
        FileNotFoundError: the split file is missing, or it names video folders that do not
            exist under `<root>/data/` (all missing names are listed, up to 10).
    """
    split_file = os.path.join(root, f"{split}.txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"split file {split_file} not found (expected one of "
            f"{', '.join(s + '.txt' for s in SPLITS)} in the VSPW root)"
        )
    with open(split_file, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    missing = [n for n in names if not os.path.isdir(os.path.join(root, "data", n))]
    if missing:
        raise FileNotFoundError(
            f"{split_file} names {len(missing)} video(s) without a folder under "
            f"{os.path.join(root, 'data')}: {missing[:10]}"
        )
    return names


def load_class_names(root: str | os.PathLike) -> list[str]:
    """Return the class names in train-id order (raw id k+1 -> train id k; "others" dropped).

    Raises:
        FileNotFoundError: `label_num_dic_final.json` is missing.
        ValueError: the file is not a {name: raw id} dict with ids 1..K each used once.
    """
    path = os.path.join(root, CLASS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"class list {path} not found (VSPW ships {CLASS_FILE} in the "
            f"dataset root: a dict class name -> raw id)"
        )
    with open(path, encoding="utf-8") as f:
        try:
            table = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(table, dict) or not all(isinstance(v, int) for v in table.values()):
        raise ValueError(f"{path}: expected a dict class name -> integer raw id")
    by_id = {raw_id: name for name, raw_id in table.items() if raw_id != 0}
    num = len(by_id)
    if sorted(by_id) != list(range(1, num + 1)) or len(by_id) != len(table) - (0 in table.values()):
        raise ValueError(
            f"{path}: raw ids must be 0 (others) and 1..K each used once, "
            f"found {sorted(table.values())[:10]}..."
        )
    return [by_id[k] for k in range(1, num + 1)]


def _stems(folder: str, extensions: Sequence[str]) -> dict[str, str]:
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() in extensions:
            out[stem] = os.path.join(folder, name)
    return out


@dataclass
class VSPWVideo(LabelledVideo):
    """One VSPW video: frame and mask paths in temporal (sorted stem) order.

    `mask_paths` is None for videos without annotations (the test split).
    """

    @classmethod
    def from_root(cls, root: str | os.PathLike, name: str, with_masks: bool = True) -> VSPWVideo:
        """Index `<root>/data/<name>`; with masks, the origin/ and mask/ stems must match.

        Raises:
            DataLayoutError: no frames, or frames and masks whose stems differ (both listed).
        """
        video_dir = os.path.join(root, "data", name)
        frames = _stems(os.path.join(video_dir, "origin"), FRAME_EXTENSIONS)
        if not frames:
            raise DataLayoutError(f"video {name}: no frames in {os.path.join(video_dir, 'origin')}")
        stems = sorted(frames)
        masks = None
        if with_masks:
            mask_dir = os.path.join(video_dir, "mask")
            found = _stems(mask_dir, (".png",))
            no_mask = [s for s in stems if s not in found]
            no_frame = sorted(set(found) - set(frames))
            if no_mask or no_frame:
                raise DataLayoutError(
                    f"video {name}: origin/ and mask/ stems differ in {video_dir}: "
                    f"{len(no_mask)} frame(s) without mask {no_mask[:5]}, "
                    f"{len(no_frame)} mask(s) without frame {no_frame[:5]}"
                )
            masks = [found[s] for s in stems]
        return cls(name=name, stems=stems, frame_paths=[frames[s] for s in stems], mask_paths=masks)


class VSPWClips(ClipDataset):
    """Clips of `T = history + 1` frames from a VSPW split (history first, current frame last).

    Args:
        root: VSPW root (the folder holding `data/` and the split files).
        split: "train", "val" or "test" (test has no masks; its labels are all ignore).
        history, stride, mode, transform, return_all_labels, seed, num_classes: as in
            `ClipDataset` ("train" mode: one random clip per video per epoch; "eval": every
            frame of every video in order).
        videos: optional subset of video names (default: the whole split file).
        bad_videos: "refuse" (a video whose origin/ and mask/ do not pair up is an error) or
            "skip" (it is left out with a warning; `skipped_videos` names it).

    Samples are those of `ClipDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        history: int = 2,
        stride: int = 1,
        mode: str = "train",
        transform: Callable | None = None,
        return_all_labels: bool = False,
        seed: int = 0,
        videos: Sequence[str] | None = None,
        bad_videos: str = "refuse",
        num_classes: int | None = None,
    ):
        self.root = os.fspath(root)
        self.split = split
        names = list(videos) if videos is not None else read_split(self.root, split)
        if not names:
            raise DataLayoutError(f"split {split} of {self.root} lists no videos")
        with_masks = split != "test"
        indexed, self.skipped_videos = keep_usable(
            names,
            lambda n: VSPWVideo.from_root(self.root, n, with_masks=with_masks),
            bad_videos,
            self.root,
        )
        super().__init__(
            indexed,
            history=history,
            stride=stride,
            mode=mode,
            transform=transform,
            return_all_labels=return_all_labels,
            seed=seed,
            num_classes=num_classes,
        )
