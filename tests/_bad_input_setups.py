"""Setups that plant one bad input in a case's folder, and checks of what a stopped run keeps,
for the bad-input matrix (test_bad_inputs.py).

A setup takes the case's environment `e` (the shared fixtures as paths, and `e.tmp`, the case's
own folder) and returns extra placeholders for the case's texts, e.g. {"culprit": path}. A `kept`
check takes the same `e` after the command ran.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from tests._video_fixtures import count_frames


def _val_video(root: Path, k: int = 0) -> Path:
    return root / "data" / (root / "val.txt").read_text().split()[k]


def _data_copy(e) -> Path:
    return Path(shutil.copytree(e.data, e.tmp / "data"))


def truncated_frame(e) -> dict:
    frame = sorted((_val_video(_data_copy(e)) / "origin").glob("*.jpg"))[1]
    frame.write_bytes(frame.read_bytes()[:-200])
    return {"culprit": frame}


def missing_mask(e) -> dict:
    video = _val_video(_data_copy(e))
    sorted((video / "mask").glob("*.png"))[1].unlink()
    return {"culprit": video.name}


def bad_label(e) -> dict:
    mask = sorted((_val_video(_data_copy(e)) / "mask").glob("*.png"))[1]
    cv2.imwrite(str(mask), np.full((48, 64), 200, np.uint8))
    return {"culprit": mask}


def empty_split(split: str) -> Callable:
    def setup(e) -> dict:
        (_data_copy(e) / f"{split}.txt").write_text("")
        return {}

    return setup


def predictions(spoil: str | None = None, data: Callable | None = None) -> Callable:
    """Prediction PNGs for the val split (all zeros), one spoiled: missing, value, size, notpng."""

    def setup(e) -> dict:
        extra = data(e) if data else {}
        for name in (e.data / "val.txt").read_text().split():
            (e.tmp / "pred" / name).mkdir(parents=True)
            for mask in sorted((e.data / "data" / name / "mask").glob("*.png")):
                cv2.imwrite(str(e.tmp / "pred" / name / mask.name), np.zeros((48, 64), np.uint8))
        culprit = sorted((e.tmp / "pred").glob("*/*.png"))[1]
        if spoil == "missing":
            culprit.unlink()
        elif spoil == "value":
            cv2.imwrite(str(culprit), np.full((48, 64), 200, np.uint8))
        elif spoil == "size":
            cv2.imwrite(str(culprit), np.zeros((20, 20), np.uint8))
        elif spoil == "notpng":
            culprit.write_bytes(b"not a png")
        return {"culprit": culprit, **extra}

    return setup


def blocked_predictions(e) -> dict:
    """The second val video's prediction folder is a file: its PNGs cannot be written."""
    blocked = e.tmp / "o" / "pred" / (e.data / "val.txt").read_text().split()[1]
    blocked.parent.mkdir(parents=True)
    blocked.write_text("in the way\n")
    return {"culprit": blocked}


def metrics_folder(e) -> dict:
    (e.tmp / "o" / "metrics.json").mkdir(parents=True)
    return {}


def existing_file(name: str) -> Callable:
    def setup(e) -> dict:
        (e.tmp / name).write_text("earlier work\n")
        return {}

    return setup


def folder(name: str) -> Callable:
    def setup(e) -> dict:
        (e.tmp / name).mkdir()
        return {}

    return setup


def garbage_scalars(e) -> dict:
    (e.tmp / "r").mkdir()
    (e.tmp / "r" / "scalars.jsonl").write_text('garbage\n{"iter": 1\n')
    return {}


def strip_frame(e) -> dict:
    (e.tmp / "strip").mkdir()
    cv2.imwrite(str(e.tmp / "strip" / "00000.png"), np.zeros((8, 1200, 3), np.uint8))
    return {}


def cut_video(e) -> dict:
    whole = e.video.read_bytes()
    (e.tmp / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    return {}


def broken_video(content: bytes) -> Callable:
    def setup(e) -> dict:
        (e.tmp / "bad.mp4").write_bytes(content)
        return {}

    return setup


def bad_frames(e) -> dict:
    """Frames 0 and 1 fine, 2 a truncated JPEG, 3 an empty file."""
    (e.tmp / "f").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        cv2.imwrite(str(e.tmp / "f" / f"{k:05d}.jpg"), rng.integers(0, 255, (48, 64, 3), np.uint8))
    jpg = (e.tmp / "f" / "00002.jpg").read_bytes()
    (e.tmp / "f" / "00002.jpg").write_bytes(jpg[: len(jpg) // 2])
    (e.tmp / "f" / "00003.jpg").write_bytes(b"")
    return {}


def kept_partial_stream(e) -> None:
    """A truncated video: the frames before the cut are processed and every output holds them."""
    summary = json.loads((e.tmp / "s.json").read_text())
    n = summary["frames"]
    assert summary["stopped_early"] and 0 < n < 30 and summary["frames_written"]["labels"] == n
    assert count_frames(e.tmp / "o" / "cut_overlay.mp4") == (n, (48, 64))
    assert len(list((e.tmp / "o" / "labels" / "cut").glob("*.png"))) == n


def kept_good_frames(e) -> None:
    assert count_frames(e.tmp / "o" / "f_overlay.mp4") == (2, (48, 64))
    assert len(list((e.tmp / "o" / "labels" / "f").glob("*.png"))) == 2


def kept_metrics_with_unreadable(e) -> None:
    metrics = json.loads((e.tmp / "o" / "metrics.json").read_text())
    assert metrics["unreadable_frames"] == 1 and metrics["frames"] == 8


def kept_first_video_predictions(e) -> None:
    first = (e.data / "val.txt").read_text().split()[0]
    assert len(list((e.tmp / "o" / "pred" / first).glob("*.png"))) == 4
    assert not (e.tmp / "o" / "metrics.json").exists()


def kept_no_metrics(e) -> None:
    assert not (e.tmp / "o" / "metrics.json").exists()


def kept_checkpoint(e) -> None:
    """Validation failed after iteration 1: its checkpoint is written, whole, and `latest`."""
    run = e.tmp / "run"
    assert (run / "latest").read_text().strip() == "iter_0000001.pth"
    ckpt = torch.load(run / "iter_0000001.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 1
