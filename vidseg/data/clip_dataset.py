"""The one clip-sampling path of every dataset layout (VSPW, video files, image-sequence folders).

A layout only lists its videos as `LabelledVideo`s (frame i: a stem, an image file or a decoded
index of a video file, and a mask file or none); `ClipDataset` samples clips from them, reads
frames tolerantly and maps the masks to train ids, whatever the layout.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from vidseg.data.image_files import (
    IGNORE_INDEX,
    LABEL_FORMATS,
    MaskError,
    UnreadableImageError,
    read_frame,
    read_mask,
    to_train_ids,
)
from vidseg.data.videos import (  # noqa: F401  (re-exported: the layouts' common types)
    BAD_VIDEO_POLICIES,
    DataLayoutError,
    LabelledVideo,
    keep_usable,
)

logger = logging.getLogger(__name__)

# candidates read per step when looking for the nearest readable frame (one seek for a video)
_SEARCH_BATCH = 8


def clip_indices(t: int, history: int, stride: int) -> list[int]:
    """Indices of a clip ending at frame `t`: `[t - h*stride, ..., t - stride, t]`, clamped at 0.

    Clamping repeats the earliest frame at the start of a video.
    """
    return [max(0, t - k * stride) for k in range(history, -1, -1)]


class ClipDataset(Dataset):
    """Clips of `T = history + 1` frames (history first, current frame last) from labelled videos.

    Args:
        videos: the videos (`LabelledVideo`), in order.
        history: number of previous frames h.
        stride: distance between clip frames in the video's frame list.
        mode: "train" gives one random clip per video per epoch (length = number of videos);
            "eval" gives every current frame of every video in order.
        transform: callable `(frames, labels, rng) -> (frames (T, 3, H, W), labels (T', H, W))`,
            e.g. `ClipTransform`; None normalises at the native size.
        return_all_labels: also return `labels (T, H, W)`.
        seed: base seed; sample i of epoch e draws from a generator seeded with (seed, e, i).
        label_format: mask convention, "vspw" or "train_ids" (`vidseg.data.image_files`).
        num_classes: when given, a mask with a train id >= num_classes (other than 255) is an
            error naming the file, instead of a failure deep in the loss.
        readers: `VideoFileReaders` for videos stored as files (default: decided by the
            self-test, created only when a video is a file).

    A sample is a dict: `frames (T, 3, H, W)` float32, `label (H, W)` int64 train ids of the
    current frame, optional `labels (T, H, W)` (a frame without a mask is all ignore), `video`
    str, `stem` str (current frame) and `substituted` int (clip frames that were unreadable and
    replaced by the nearest readable frame of the same video, with that frame's mask).
    """

    def __init__(
        self,
        videos: Sequence[LabelledVideo],
        history: int = 2,
        stride: int = 1,
        mode: str = "train",
        transform: Callable | None = None,
        return_all_labels: bool = False,
        seed: int = 0,
        label_format: str = "vspw",
        num_classes: int | None = None,
        readers=None,
    ):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode={mode!r}; expected 'train' or 'eval'")
        if history < 0 or stride < 1:
            raise ValueError(
                f"history={history}, stride={stride}; expected history >= 0, stride >= 1"
            )
        if label_format not in LABEL_FORMATS:
            raise ValueError(
                f"label_format={label_format!r}; expected one of {', '.join(LABEL_FORMATS)}"
            )
        self.videos = list(videos)
        if not self.videos:
            raise DataLayoutError("no videos to read clips from")
        self.history, self.stride, self.mode = history, stride, mode
        self.return_all_labels, self.seed, self.epoch = return_all_labels, seed, 0
        self.label_format, self.num_classes = label_format, num_classes
        if transform is None:
            from vidseg.data.transforms import ClipTransform

            transform = ClipTransform(train=False, short_side=None)
        self.transform = transform
        if readers is None and any(v.video_path is not None for v in self.videos):
            from vidseg.data.frame_access import VideoFileReaders

            readers = VideoFileReaders("auto")
        self.readers = readers
        self._current = [video.current for video in self.videos]
        for video, current in zip(self.videos, self._current):
            if not current:
                raise DataLayoutError(
                    f"video {video.name}: no frame has a mask, so no clip can "
                    "end on a labelled frame"
                )
        self._index = [(v, t) for v, current in enumerate(self._current) for t in current]
        self._bad: set[tuple[int, int]] = set()
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

    def num_frames(self) -> int:
        """Current (labelled) frames over all videos."""
        return len(self._index)

    def _mark_bad(self, v: int, indices: list[int], reason: str) -> None:
        with self._lock:
            new = [i for i in indices if (v, i) not in self._bad]
            self._bad.update((v, i) for i in indices)
        if new:
            logger.warning(
                "unreadable frame, using the nearest readable frame of video %s instead: %s",
                self.videos[v].name,
                reason,
            )

    def _read(self, v: int, indices: Sequence[int]) -> dict[int, np.ndarray]:
        """The readable frames among `indices`, RGB uint8 `(H, W, 3)`; the others are marked bad."""
        video = self.videos[v]
        todo = [i for i in indices if (v, i) not in self._bad]
        if not todo:
            return {}
        if video.video_path is not None:
            got = self.readers.get(video.video_path, todo)
            missing = [i for i in todo if i not in got]
            if missing:
                self._mark_bad(
                    v, missing, f"video {video.video_path}: frame(s) {missing[:5]} do not decode"
                )
            return got
        got = {}
        for i in todo:
            try:
                got[i] = read_frame(video.frame_paths[i])
            except (UnreadableImageError, OSError) as exc:
                self._mark_bad(v, [i], str(exc))
        return got

    def _nearest(self, v: int, i: int, got: dict[int, np.ndarray]) -> int:
        """Index of the readable frame nearest to `i` (adds what it reads to `got`)."""
        n = len(self.videos[v])
        order = [j for d in range(1, n) for j in (i - d, i + d) if 0 <= j < n]
        for start in range(0, len(order), _SEARCH_BATCH):
            batch = order[start : start + _SEARCH_BATCH]
            got.update(self._read(v, [j for j in batch if j not in got]))
            for j in batch:
                if j in got:
                    return j
        video = self.videos[v]
        raise UnreadableImageError(
            f"video {video.name}: no readable frame in "
            f"{video.video_path or os.path.dirname(video.frame_paths[0])}"
        )

    def _label(self, video: LabelledVideo, i: int, shape: tuple[int, int]) -> np.ndarray:
        """Train ids `(H, W)` uint8 of frame i (all ignore without a mask)."""
        path = video.mask_paths[i] if video.mask_paths is not None else None
        if path is None:
            return np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        try:  # an unreadable file raises UnreadableImageError (already a VidsegError)
            label = to_train_ids(read_mask(path), path, self.label_format)
        except ValueError as exc:  # RGB / 16-bit mask, values outside the label format
            raise MaskError(str(exc)) from None
        if label.shape != tuple(shape):
            raise MaskError(
                f"mask {path} is {label.shape[1]}x{label.shape[0]} but its frame "
                f"{video.describe_frame(i)} is {shape[1]}x{shape[0]} (WxH)"
            )
        if self.num_classes is not None:
            bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
            if bad.any():
                raise MaskError(
                    f"mask {path}: train ids {np.unique(label[bad])[:10].tolist()} "
                    f">= model.num_classes={self.num_classes} (label format "
                    f"{self.label_format})"
                )
        return label

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.mode == "train":
            v = index
            current = self._current[v]
            t = current[int(rng.integers(len(current)))]
        else:
            v, t = self._index[index]
        video = self.videos[v]
        indices = clip_indices(t, self.history, self.stride)
        got = self._read(v, sorted(set(indices)))  # repeated start frames are read once
        used = [i if i in got else self._nearest(v, i, got) for i in indices]
        substituted = sum(int(j != i) for i, j in zip(indices, used))
        frames = [got[j] for j in used]
        wanted = used if self.return_all_labels else used[-1:]
        label_maps = [self._label(video, j, got[j].shape[:2]) for j in wanted]
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
