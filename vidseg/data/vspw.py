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

import os
from collections.abc import Callable, Sequence

from vidseg.data.clip_dataset import ClipDataset, clip_indices
from vidseg.data.image_files import (
    IGNORE_INDEX,
    NUM_RAW_CLASSES,
    UnreadableImageError,
    invalid_raw_values,
    read_frame,
    read_mask,
    to_train_ids,
)
from vidseg.data.videos import DataLayoutError, keep_usable
from vidseg.data.vspw_index import (
    CLASS_FILE,
    FRAME_EXTENSIONS,
    SPLITS,
    VSPWVideo,
    load_class_names,
    read_split,
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
