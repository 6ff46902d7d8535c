"""VSPW on disk: splits, class list, label mapping, tolerant frame reading and clip sampling.

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
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from torch.utils.data import Dataset

from vidseg.errors import VidsegError

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
NUM_RAW_CLASSES = 124  # raw ids 1..124 are classes, 0 = "others", 255 = "void"
SPLITS = ("train", "val", "test")
CLASS_FILE = "label_num_dic_final.json"
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")

# raw value -> train id; _VALID marks the raw values VSPW may contain. Invalid raw values map to
# _INVALID, never a train id, so one table lookup both maps and detects them.
_INVALID = 254
_VALID = np.zeros(256, dtype=bool)
_VALID[:NUM_RAW_CLASSES + 1] = True
_VALID[255] = True
_TRAIN_ID_LUT = np.full(256, _INVALID, dtype=np.uint8)
_TRAIN_ID_LUT[[0, 255]] = IGNORE_INDEX
_TRAIN_ID_LUT[1:NUM_RAW_CLASSES + 1] = np.arange(NUM_RAW_CLASSES, dtype=np.uint8)


class UnreadableImageError(VidsegError, OSError):
    """An image file that is empty or cannot be decoded."""


def invalid_raw_values(raw: np.ndarray) -> np.ndarray:
    """Return the sorted distinct values of `raw` that are not valid VSPW raw labels."""
    raw = np.asarray(raw)
    if raw.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        return present[~_VALID[present]]
    values = np.unique(raw)
    ok = (values >= 0) & (values <= 255)
    ok[ok] = _VALID[values[ok].astype(np.int64)]
    return values[~ok]


def to_train_ids(raw: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Map raw VSPW mask values to train ids.

    Args:
        raw: raw mask `(H, W)` with values in {0..124, 255}.
        path: file the mask came from, used in the error message.

    Returns:
        `(H, W)` uint8: raw 0 and 255 -> 255 (ignore), raw 1..124 -> 0..123.

    Raises:
        ValueError: naming `path` and the values outside {0..124, 255}.
    """
    raw = np.asarray(raw)
    if raw.dtype == np.uint8:  # the common case: one lookup (OpenCV's is ~4x numpy's) maps and checks
        out = cv2.LUT(np.ascontiguousarray(raw), _TRAIN_ID_LUT).reshape(raw.shape)
        if not (out == _INVALID).any():
            return out
    bad = invalid_raw_values(raw)
    if bad.size:
        where = f"mask {path}" if path is not None else "mask"
        raise ValueError(f"{where}: raw values {bad[:10].tolist()} outside the VSPW range "
                         f"{{0..{NUM_RAW_CLASSES}, 255}}")
    return _TRAIN_ID_LUT[raw.astype(np.uint8)]


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Return the video names listed in `<root>/<split>.txt`, in file order.

    Raises:
        FileNotFoundError: the split file is missing, or it names video folders that do not
            exist under `<root>/data/` (all missing names are listed, up to 10).
    """
    split_file = os.path.join(root, f"{split}.txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(f"split file {split_file} not found (expected one of "
                                f"{', '.join(s + '.txt' for s in SPLITS)} in the VSPW root)")
    with open(split_file, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    missing = [n for n in names if not os.path.isdir(os.path.join(root, "data", n))]
    if missing:
        raise FileNotFoundError(
            f"{split_file} names {len(missing)} video(s) without a folder under "
            f"{os.path.join(root, 'data')}: {missing[:10]}")
    return names


def load_class_names(root: str | os.PathLike) -> list[str]:
    """Return the class names in train-id order (raw id k+1 -> train id k; "others" dropped).

    Raises:
        FileNotFoundError: `label_num_dic_final.json` is missing.
        ValueError: the file is not a {name: raw id} dict with ids 1..K each used once.
    """
    path = os.path.join(root, CLASS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class list {path} not found (VSPW ships {CLASS_FILE} in the "
                                f"dataset root: a dict class name -> raw id)")
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
        raise ValueError(f"{path}: raw ids must be 0 (others) and 1..K each used once, "
                         f"found {sorted(table.values())[:10]}...")
    return [by_id[k] for k in range(1, num + 1)]


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB uint8 `(H, W, 3)`; raise UnreadableImageError if empty/undecodable."""
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise UnreadableImageError(f"frame {path} is empty (0 bytes)")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise UnreadableImageError(f"frame {path} cannot be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a raw single-channel label PNG as uint8 `(H, W)` (values not remapped).

    Palette PNGs are read as their index array (not the colours). An RGB mask, a 16-bit mask or
    an undecodable file raises ValueError / UnreadableImageError naming the file.
    """
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise UnreadableImageError(f"mask {path} is empty (0 bytes)")
    mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UnreadableImageError(f"mask {path} cannot be decoded")
    if mask.ndim == 3:
        # OpenCV expands palette PNGs to colour; the palette indices are the labels.
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"mask {path} is a {im.mode} image with {mask.shape[2]} channels; "
                                 f"expected a single-channel (or palette) label PNG")
            mask = np.array(im)
    if mask.dtype != np.uint8:
        raise ValueError(f"mask {path} has dtype {mask.dtype}; expected 8-bit labels")
    return mask


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
class VSPWVideo:
    """One video: frame and mask paths in temporal (sorted stem) order.

    `mask_paths` is None for videos without annotations (the test split).
    """

    name: str
    stems: list[str]
    frame_paths: list[str]
    mask_paths: list[str] | None

    @classmethod
    def from_root(cls, root: str | os.PathLike, name: str, with_masks: bool = True) -> VSPWVideo:
        """Index `<root>/data/<name>`; with masks, the origin/ and mask/ stems must match."""
        video_dir = os.path.join(root, "data", name)
        frames = _stems(os.path.join(video_dir, "origin"), FRAME_EXTENSIONS)
        if not frames:
            raise FileNotFoundError(f"video {name}: no frames in {os.path.join(video_dir, 'origin')}")
        stems = sorted(frames)
        masks = None
        if with_masks:
            mask_dir = os.path.join(video_dir, "mask")
            found = _stems(mask_dir, (".png",))
            no_mask = [s for s in stems if s not in found]
            no_frame = sorted(set(found) - set(frames))
            if no_mask or no_frame:
                raise FileNotFoundError(
                    f"video {name}: origin/ and mask/ stems differ in {video_dir}: "
                    f"{len(no_mask)} frame(s) without mask {no_mask[:5]}, "
                    f"{len(no_frame)} mask(s) without frame {no_frame[:5]}")
            masks = [found[s] for s in stems]
        return cls(name=name, stems=stems, frame_paths=[frames[s] for s in stems], mask_paths=masks)

    def __len__(self) -> int:
        return len(self.stems)


def clip_indices(t: int, history: int, stride: int) -> list[int]:
    """Indices of a clip ending at frame `t`: `[t - h*stride, ..., t - stride, t]`, clamped at 0.

    Clamping repeats the earliest frame at the start of a video.
    """
    return [max(0, t - k * stride) for k in range(history, -1, -1)]


class VSPWClips(Dataset):
    """Clips of `T = history + 1` frames from a VSPW split (history first, current frame last).

    Args:
        root: VSPW root (the folder holding `data/` and the split files).
        split: "train", "val" or "test" (test has no masks; its labels are all ignore).
        history: number of previous frames h.
        stride: distance between clip frames in the sorted frame list.
        mode: "train" gives one random clip per video per epoch (length = number of videos);
            "eval" gives every frame of every video in order (length = number of frames).
        transform: callable `(frames, labels, rng) -> (frames (T, 3, H, W), labels (T', H, W))`,
            e.g. `ClipTransform`; None normalises at the native size.
        return_all_labels: also return `labels (T, H, W)`.
        seed: base seed; sample i of epoch e draws from a generator seeded with (seed, e, i).
        videos: optional subset of video names (default: the whole split file).

    A sample is a dict: `frames (T, 3, H, W)` float32, `label (H, W)` int64 train ids of the
    current frame, optional `labels (T, H, W)`, `video` str, `stem` str (current frame) and
    `substituted` int (clip frames that were unreadable and replaced by the nearest readable
    frame of the same video, with that frame's mask).
    """

    def __init__(self, root: str | os.PathLike, split: str, history: int = 2, stride: int = 1,
                 mode: str = "train", transform: Callable | None = None,
                 return_all_labels: bool = False, seed: int = 0,
                 videos: Sequence[str] | None = None):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode={mode!r}; expected 'train' or 'eval'")
        if history < 0 or stride < 1:
            raise ValueError(f"history={history}, stride={stride}; expected history >= 0, stride >= 1")
        self.root = os.fspath(root)
        self.split = split
        self.history = history
        self.stride = stride
        self.mode = mode
        self.return_all_labels = return_all_labels
        self.seed = seed
        self.epoch = 0
        if transform is None:
            from vidseg.data.transforms import ClipTransform

            transform = ClipTransform(train=False, short_side=None)
        self.transform = transform
        names = list(videos) if videos is not None else read_split(self.root, split)
        with_masks = split != "test"
        self.videos = [VSPWVideo.from_root(self.root, n, with_masks=with_masks) for n in names]
        if not self.videos:
            raise ValueError(f"split {split} of {self.root} lists no videos")
        self._index = [(v, t) for v, video in enumerate(self.videos) for t in range(len(video))]
        self._bad_paths: set[str] = set()
        self._lock = threading.Lock()
        self.substituted_total = 0  # in this process; DataLoader workers count their own

    def __getstate__(self) -> dict:
        # DataLoader workers started with "spawn" pickle the dataset; locks do not pickle
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def set_epoch(self, epoch: int) -> None:
        """Select the random clips of `epoch` (train mode); call before each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos) if self.mode == "train" else len(self._index)

    def _generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _load(self, video: VSPWVideo, t: int) -> tuple[np.ndarray, int]:
        """Return (frame, index actually read), substituting the nearest readable frame."""
        order = [t] + [i for d in range(1, len(video)) for i in (t - d, t + d) if 0 <= i < len(video)]
        for i in order:
            path = video.frame_paths[i]
            if path in self._bad_paths:
                continue
            try:
                return read_frame(path), i
            except (UnreadableImageError, OSError) as exc:
                with self._lock:
                    first = path not in self._bad_paths
                    self._bad_paths.add(path)
                if first:
                    logger.warning("unreadable frame, using the nearest readable frame of video %s "
                                   "instead: %s", video.name, exc)
        raise UnreadableImageError(f"video {video.name}: no readable frame in "
                                   f"{os.path.dirname(video.frame_paths[0])}")

    def _label(self, video: VSPWVideo, i: int, shape: tuple[int, int]) -> np.ndarray:
        if video.mask_paths is None:
            return np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        path = video.mask_paths[i]
        label = to_train_ids(read_mask(path), path)
        if label.shape != shape:
            raise ValueError(f"mask {path} is {label.shape[1]}x{label.shape[0]} but its frame "
                             f"{video.frame_paths[i]} is {shape[1]}x{shape[0]} (WxH)")
        return label

    def __getitem__(self, index: int) -> dict:
        rng = self._generator(index)
        if self.mode == "train":
            v = index
            t = int(rng.integers(len(self.videos[v])))
        else:
            v, t = self._index[index]
        video = self.videos[v]
        frames, labels, substituted = [], [], 0
        cache: dict[int, tuple[np.ndarray, int]] = {}
        for i in clip_indices(t, self.history, self.stride):
            if i not in cache:  # repeated start frames are read once
                cache[i] = self._load(video, i)
            frame, used = cache[i]
            substituted += int(used != i)
            frames.append(frame)
            labels.append((used, frame.shape[:2]))
        wanted = labels if self.return_all_labels else labels[-1:]
        label_maps = [self._label(video, used, shape) for used, shape in wanted]
        with self._lock:
            self.substituted_total += substituted
        frames_t, labels_t = self.transform(frames, label_maps, rng=rng)
        sample = {
            "frames": frames_t,
            "label": labels_t[-1].long(),
            "video": video.name,
            "stem": video.stems[t],
            "substituted": substituted,
        }
        if self.return_all_labels:
            sample["labels"] = labels_t.long()
        return sample

    def num_frames(self) -> int:
        """Total frames over all videos of the split."""
        return len(self._index)

