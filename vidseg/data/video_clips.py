"""Training clips straight from video files plus folders of mask PNGs (your own footage).

Each video comes with a mask folder holding `<8-digit decoded frame index>.png` (0-based, the
index of the frame as decoded, which is how `data_tools/video_to_frames.py` names frames). Only
frames that have a mask are used as current frames, so sparse annotation works; history frames
are any decoded frames. Frames are read by random access: decord when its self-test passes on
this machine (`vidseg.io.selftest.video_reader`), else PyAV seeking to the keyframe before the
clip (`vidseg.io.random_access`); `vidseg info` says which and why.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from vidseg.data.vspw import IGNORE_INDEX, clip_indices, read_mask, to_train_ids
from vidseg.io.random_access import PyAVFrameReader, open_frame_reader
from vidseg.io.selftest import video_reader

logger = logging.getLogger(__name__)

_MASK_NAME = re.compile(r"^(\d{8})\.png$")
# decord readers hold a file handle and decoder each; PyAV readers only their packet table
_MAX_OPEN_READERS = 32


class VideoFileClips(Dataset):
    """Clips of `T = history + 1` frames from video files, labelled by mask PNG folders.

    Args:
        videos: `(video_path, mask_dir)` pairs; `mask_dir` None means unlabelled (labels all
            ignore, every frame is a current frame).
        history, stride, mode, transform, return_all_labels, seed: as in `VSPWClips`.
        label_format: "vspw" (raw values 0..124/255, mapped to train ids) or "train_ids"
            (values already 0..K-1 with 255 = ignore).
        backend: "auto" (`$VIDSEG_VIDEO_READER` if set, else decord if it passes its self-test
            here, else PyAV with seeking), "decord" (an error if its self-test fails) or "pyav".
            The decision is `reader_decision` (choice and reason).

    Samples are dicts like `VSPWClips`: `frames (T, 3, H, W)`, `label (H, W)` int64, optional
    `labels (T, H, W)` (history frames without a mask are all ignore), `video` (file stem),
    `stem` (8-digit frame index), `substituted` (clip frames past the decodable end of a
    truncated file, replaced by the last decodable frame).
    """

    def __init__(self, videos: Sequence[tuple[str, str | None]], history: int = 2, stride: int = 1,
                 mode: str = "train", transform: Callable | None = None,
                 return_all_labels: bool = False, seed: int = 0, label_format: str = "vspw",
                 backend: str = "auto"):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode={mode!r}; expected 'train' or 'eval'")
        if label_format not in ("vspw", "train_ids"):
            raise ValueError(f"label_format={label_format!r}; expected 'vspw' or 'train_ids'")
        if history < 0 or stride < 1:
            raise ValueError(f"history={history}, stride={stride}; expected history >= 0, stride >= 1")
        self.reader_decision = video_reader(backend)  # ValueError / SelfTestError
        backend = self.reader_decision.choice
        self.history, self.stride, self.mode = history, stride, mode
        self.return_all_labels, self.seed, self.epoch = return_all_labels, seed, 0
        self.label_format, self.backend = label_format, backend
        if transform is None:
            from vidseg.data.transforms import ClipTransform

            transform = ClipTransform(train=False, short_side=None)
        self.transform = transform
        self._readers: OrderedDict[str, object] = OrderedDict()
        self._reader_pid = os.getpid()
        self.videos = []  # (path, mask_dir, name, num_frames, current frame indices)
        for path, mask_dir in videos:
            path = os.fspath(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"video file {path} not found")
            num = len(self._reader(path))
            current = self._mask_indices(mask_dir, num) if mask_dir is not None else list(range(num))
            if not current:
                raise ValueError(f"video {path}: no usable frames (mask folder {mask_dir} holds no "
                                 f"<8-digit index>.png)")
            name = os.path.splitext(os.path.basename(path))[0]
            self.videos.append((path, None if mask_dir is None else os.fspath(mask_dir), name, num, current))
        if not self.videos:
            raise ValueError("no videos given")
        self._index = [(v, t) for v, item in enumerate(self.videos) for t in item[4]]

    @staticmethod
    def _mask_indices(mask_dir, num_frames: int) -> list[int]:
        if not os.path.isdir(mask_dir):
            raise FileNotFoundError(f"mask folder {mask_dir} not found")
        indices = sorted(int(m.group(1)) for m in map(_MASK_NAME.match, os.listdir(mask_dir)) if m)
        beyond = [i for i in indices if i >= num_frames]
        if beyond:
            raise ValueError(f"mask folder {mask_dir}: masks {[f'{i:08d}.png' for i in beyond[:5]]} "
                             f"are past the last frame of the video ({num_frames} frames, 0-based names)")
        return indices

    def _open(self, path: str):
        return open_frame_reader(path, self.backend)

    def _reader(self, path: str):
        # decord readers hold native handles that must not cross a DataLoader fork
        if os.getpid() != self._reader_pid:
            self._readers, self._reader_pid = OrderedDict(), os.getpid()
        if path in self._readers:
            self._readers.move_to_end(path)
        else:
            self._readers[path] = self._open(path)
            if len(self._readers) > _MAX_OPEN_READERS:
                self._readers.popitem(last=False)
        return self._readers[path]

    def __getstate__(self) -> dict:
        # open decord readers are native handles: each process reopens its own
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state

    def set_epoch(self, epoch: int) -> None:
        """Select the random clips of `epoch` (train mode)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos) if self.mode == "train" else len(self._index)

    def _read_frames(self, path: str, indices: list[int]) -> dict[int, np.ndarray]:
        reader = self._reader(path)
        try:
            return reader.get(indices)
        except Exception as exc:
            if isinstance(reader, PyAVFrameReader):
                raise
            # decord refuses the whole batch on a damaged stream; PyAV keeps what decodes
            logger.warning("decord failed on %s (%s); reading it with PyAV", path,
                           str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            self._readers[path] = PyAVFrameReader(path)
            return self._readers[path].get(indices)

    def _label(self, mask_dir: str | None, t: int, shape) -> np.ndarray:
        path = None if mask_dir is None else os.path.join(mask_dir, f"{t:08d}.png")
        if path is None or not os.path.isfile(path):
            return np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        raw = read_mask(path)
        label = to_train_ids(raw, path) if self.label_format == "vspw" else raw
        if label.shape != tuple(shape):
            raise ValueError(f"mask {path} is {label.shape[1]}x{label.shape[0]} but the video frames "
                             f"are {shape[1]}x{shape[0]} (WxH)")
        return label

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.mode == "train":
            v = index
            current = self.videos[v][4]
            t = current[int(rng.integers(len(current)))]
        else:
            v, t = self._index[index]
        path, mask_dir, name, _, _ = self.videos[v]
        indices = clip_indices(t, self.history, self.stride)
        decoded = self._read_frames(path, indices)
        if not decoded:
            raise RuntimeError(f"video {path}: no frame up to index {max(indices)} could be decoded")
        frames, substituted = [], 0
        for i in indices:
            if i not in decoded:
                nearest = min(decoded, key=lambda j: abs(j - i))
                logger.warning("video %s: frame %d not decodable, using frame %d", path, i, nearest)
                frames.append(decoded[nearest])
                substituted += 1
            else:
                frames.append(decoded[i])
        shape = frames[-1].shape[:2]
        wanted = indices if self.return_all_labels else indices[-1:]
        labels = [self._label(mask_dir, i, shape) for i in wanted]
        frames_t, labels_t = self.transform(frames, labels, rng=rng)
        sample = {"frames": frames_t, "label": labels_t[-1].long(), "video": name,
                  "stem": f"{t:08d}", "substituted": substituted}
        if self.return_all_labels:
            sample["labels"] = labels_t.long()
        return sample
