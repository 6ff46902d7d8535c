"""What every dataset layout lists: `LabelledVideo`s, and the bad-video policy.

Free of torch, so that processes that only score predictions (`vidseg.metrics.scorer` workers,
which receive `LabelledVideo`s) start in a fraction of a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vidseg.errors import VidsegError

logger = logging.getLogger(__name__)

BAD_VIDEO_POLICIES = ("refuse", "skip")


class DataLayoutError(VidsegError, ValueError):
    """A video whose frames and masks do not pair up (count, names, missing folder)."""


@dataclass
class LabelledVideo:
    """One video of any layout, frames in temporal order.

    Exactly one of `frame_paths` (an image per frame) and `video_path` (frame i = decoded
    index i of the file) is set. `mask_paths` is None for a video without annotation; an entry
    None is a frame without a mask (it can be a history frame, never the current frame).
    """

    name: str
    stems: list[str]
    mask_paths: list[str | None] | None
    frame_paths: list[str] | None = None
    video_path: str | None = None

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def current(self) -> list[int]:
        """Indices that can be a clip's current frame: those with a mask (all when unlabelled)."""
        if self.mask_paths is None:
            return list(range(len(self.stems)))
        return [i for i, path in enumerate(self.mask_paths) if path is not None]

    def describe_frame(self, i: int) -> str:
        """Frame i for messages: its image file, or the video file and index."""
        if self.frame_paths is not None:
            return self.frame_paths[i]
        return f"{self.video_path} frame {i}"


def keep_usable(
    names: Sequence[str], build: Callable[[str], LabelledVideo], bad_videos: str, root: str
) -> tuple[list[LabelledVideo], list[str]]:
    """Index every named video; apply the bad-video policy to those that fail.

    Args:
        names: video names in order.
        build: `name -> LabelledVideo`, raising `DataLayoutError` for an unusable video.
        bad_videos: "refuse" (raise one error listing them) or "skip" (warn for each, keep the
            rest).
        root: the dataset root, for messages.

    Returns:
        `(videos, skipped names)`.

    Raises:
        DataLayoutError: a bad video under "refuse", or no usable video at all.
    """
    if bad_videos not in BAD_VIDEO_POLICIES:
        raise ValueError(
            f"bad_videos={bad_videos!r}; expected one of {', '.join(BAD_VIDEO_POLICIES)}"
        )
    videos, problems = [], []
    for name in names:
        try:
            videos.append(build(name))
        except DataLayoutError as exc:
            problems.append((name, str(exc)))
    hint = f"`vidseg data check {root}` lists every problem"
    if problems and bad_videos == "refuse":
        listed = "; ".join(message for _, message in problems[:3])
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise DataLayoutError(
            f"{root}: {len(problems)} unusable video(s), refused: {listed}{more} "
            f"({hint}; data.bad_videos=skip leaves such videos out)"
        )
    for name, message in problems:
        logger.warning("skipping video %s (data.bad_videos=skip): %s", name, message)
    if names and not videos:
        raise DataLayoutError(f"{root}: none of the {len(names)} video(s) is usable ({hint})")
    return videos, [name for name, _ in problems]
