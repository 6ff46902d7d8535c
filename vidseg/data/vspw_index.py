"""The VSPW index: split files, the class list and one `VSPWVideo` per video folder.

Free of torch (the clip dataset is `vidseg.data.vspw.VSPWClips`), so that scoring, which only
indexes the dataset, and its worker processes, which receive `VSPWVideo`s, start quickly. Every
name here stays importable from `vidseg.data.vspw`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from vidseg.data.videos import DataLayoutError, LabelledVideo

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
