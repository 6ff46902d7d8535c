"""Training clips from video files given as `(video, mask folder)` pairs, sparse masks allowed.

Each video comes with a mask folder holding `<decoded frame index>.png` (0-based, the index of
the frame as decoded, any zero padding; `data_tools/video_to_frames.py` names frames the same
way). Only frames that have a mask are current frames, so sparse annotation works; history
frames are any decoded frames. A config reaches video files through `data.format: video`
(`vidseg.data.layouts`), which asks for one mask per frame; this class is the programmatic
entry for sparsely annotated files. Frames are read by random access through
`vidseg.data.frame_access.VideoFileReaders` (decord when its self-test passes, else PyAV).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from vidseg.data.clip_dataset import ClipDataset
from vidseg.data.frame_access import VideoFileReaders
from vidseg.data.layouts import mask_indices
from vidseg.data.videos import DataLayoutError, LabelledVideo


class VideoFileClips(ClipDataset):
    """Clips of `T = history + 1` frames from video files, labelled by mask PNG folders.

    Args:
        videos: `(video_path, mask_dir)` pairs; `mask_dir` None means unlabelled (labels all
            ignore, every frame is a current frame).
        history, stride, mode, transform, return_all_labels, seed, num_classes: as in
            `ClipDataset`.
        label_format: "vspw" (raw values 0..124/255, mapped to train ids) or "train_ids"
            (values already 0..123 with 255 = ignore).
        backend: "auto" (`$VIDSEG_VIDEO_READER` if set, else decord if it passes its self-test
            here, else PyAV with seeking), "decord" (an error if its self-test fails) or "pyav".
            The decision is `reader_decision` (choice and reason).

    Samples are those of `ClipDataset`; `video` is the file stem and `stem` the 8-digit frame
    index.
    """

    def __init__(
        self,
        videos: Sequence[tuple[str, str | None]],
        history: int = 2,
        stride: int = 1,
        mode: str = "train",
        transform: Callable | None = None,
        return_all_labels: bool = False,
        seed: int = 0,
        label_format: str = "vspw",
        backend: str = "auto",
        num_classes: int | None = None,
    ):
        readers = VideoFileReaders(backend)  # ValueError / SelfTestError before any file is opened
        self.reader_decision, self.backend = readers.decision, readers.backend
        indexed = []
        for path, mask_dir in videos:
            path = os.fspath(path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"video file {path} not found")
            num = readers.num_frames(path)
            masks = None if mask_dir is None else self._masks(os.fspath(mask_dir), num)
            indexed.append(
                LabelledVideo(
                    name=os.path.splitext(os.path.basename(path))[0],
                    stems=[f"{i:08d}" for i in range(num)],
                    mask_paths=masks,
                    video_path=path,
                )
            )
        if not indexed:
            raise ValueError("no videos given")
        super().__init__(
            indexed,
            history=history,
            stride=stride,
            mode=mode,
            transform=transform,
            return_all_labels=return_all_labels,
            seed=seed,
            label_format=label_format,
            num_classes=num_classes,
            readers=readers,
        )

    @staticmethod
    def _masks(mask_dir: str, num_frames: int) -> list[str | None]:
        if not os.path.isdir(mask_dir):
            raise FileNotFoundError(f"mask folder {mask_dir} not found")
        found = mask_indices(mask_dir)
        beyond = sorted(i for i in found if i >= num_frames)
        if beyond:
            names = [os.path.basename(found[i]) for i in beyond[:5]]
            raise DataLayoutError(
                f"mask folder {mask_dir}: masks {names} are past the last frame "
                f"of the video ({num_frames} frames, 0-based names)"
            )
        if not found:
            raise DataLayoutError(f"mask folder {mask_dir} holds no <frame index>.png")
        return [found.get(i) for i in range(num_frames)]

    def _reader(self, path: str):
        """The open random-access reader of `path` (opened on first use)."""
        return self.readers.reader(path)
