"""Training clips straight from video files plus folders of mask PNGs (your own footage).

Each video comes with a mask folder holding `<8-digit decoded frame index>.png` (0-based, the
index of the frame as decoded, which is how `data_tools/video_to_frames.py` names frames). Only
frames that have a mask are used as current frames, so sparse annotation works; history frames
are any decoded frames. decord gives fast random access; without decord, PyAV decodes from the
start of the video up to the last frame needed (correct but slower on long videos).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from vidseg.data.vspw import IGNORE_INDEX, clip_indices, read_mask, to_train_ids

logger = logging.getLogger(__name__)

_MASK_NAME = re.compile(r"^(\d{8})\.png$")


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except Exception:  # decord wheels can fail at import (missing FFmpeg libs), not just be absent
        return False
    return True


class _PyAVReader:
    """Frame access by decoded index through PyAV (sequential decode, no seeking)."""

    def __init__(self, path: str):
        self.path = path

    def __len__(self) -> int:
        import av

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))

    def get(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        """Decode the wanted frames; indices past the end of a truncated file are left out."""
        import av

        wanted, last, out = set(indices), max(indices), {}
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        out[i] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
            except av.error.FFmpegError as exc:  # corrupt tail: keep what decoded
                logger.warning("decoding %s stopped early: %s", self.path, exc)
        return out


class _DecordReader:
    def __init__(self, path: str):
        import decord

        self.path = path
        self.reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)

    def __len__(self) -> int:
        return len(self.reader)

    def get(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        unique = sorted(set(indices))
        batch = self.reader.get_batch(unique).asnumpy()
        return {i: batch[k] for k, i in enumerate(unique)}


class VideoFileClips(Dataset):
    """Clips of `T = history + 1` frames from video files, labelled by mask PNG folders.

    Args:
        videos: `(video_path, mask_dir)` pairs; `mask_dir` None means unlabelled (labels all
            ignore, every frame is a current frame).
        history, stride, mode, transform, return_all_labels, seed: as in `VSPWClips`.
        label_format: "vspw" (raw values 0..124/255, mapped to train ids) or "train_ids"
            (values already 0..K-1 with 255 = ignore).
        backend: "auto" (decord if it imports, else PyAV), "decord" or "pyav".

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
        if backend == "auto":
            backend = "decord" if _decord_available() else "pyav"
        if backend not in ("decord", "pyav"):
            raise ValueError(f"backend={backend!r}; expected 'auto', 'decord' or 'pyav'")
        if history < 0 or stride < 1:
            raise ValueError(f"history={history}, stride={stride}; expected history >= 0, stride >= 1")
        self.history, self.stride, self.mode = history, stride, mode
        self.return_all_labels, self.seed, self.epoch = return_all_labels, seed, 0
        self.label_format, self.backend = label_format, backend
        if transform is None:
            from vidseg.data.transforms import ClipTransform

            transform = ClipTransform(train=False, short_side=None)
        self.transform = transform
        self.videos = []  # (path, mask_dir, name, num_frames, current frame indices)
        for path, mask_dir in videos:
            path = os.fspath(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"video file {path} not found")
            num = len(self._open(path))
            current = self._mask_indices(mask_dir, num) if mask_dir is not None else list(range(num))
            if not current:
                raise ValueError(f"video {path}: no usable frames (mask folder {mask_dir} holds no "
                                 f"<8-digit index>.png)")
            name = os.path.splitext(os.path.basename(path))[0]
            self.videos.append((path, None if mask_dir is None else os.fspath(mask_dir), name, num, current))
        if not self.videos:
            raise ValueError("no videos given")
        self._index = [(v, t) for v, item in enumerate(self.videos) for t in item[4]]
        self._readers: dict[str, object] = {}
        self._reader_pid = os.getpid()

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
        return _DecordReader(path) if self.backend == "decord" else _PyAVReader(path)

    def _reader(self, path: str):
        # decord readers hold native handles that must not cross a DataLoader fork
        if os.getpid() != self._reader_pid:
            self._readers, self._reader_pid = {}, os.getpid()
        if path not in self._readers:
            self._readers[path] = self._open(path)
        return self._readers[path]

    def __getstate__(self) -> dict:
        # open decord readers are native handles: each process reopens its own
        state = self.__dict__.copy()
        state["_readers"] = {}
        return state

    def set_epoch(self, epoch: int) -> None:
        """Select the random clips of `epoch` (train mode)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos) if self.mode == "train" else len(self._index)

    def _read_frames(self, path: str, indices: list[int]) -> dict[int, np.ndarray]:
        try:
            return self._reader(path).get(indices)
        except Exception as exc:
            if self.backend != "decord":
                raise
            # decord refuses the whole batch on a damaged stream; PyAV keeps what decodes
            logger.warning("decord failed on %s (%s); decoding with PyAV", path, exc)
            return _PyAVReader(path).get(indices)

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
