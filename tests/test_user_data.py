"""Users' own labelled data: `data.format: video | frames` read, checked, trained and evaluated.

The fixtures are the synthetic VSPW dataset rewritten in each layout (`vidseg.data.convert_layout`),
so every clip can be compared with the one `VSPWClips` reads from the source.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests._small_models import TINY_32PX
from vidseg.cli import main
from vidseg.data.clip_dataset import ClipDataset, DataLayoutError
from vidseg.data.convert_layout import convert_vspw
from vidseg.data.image_files import to_train_ids, to_vspw_raw
from vidseg.data.layouts import load_videos, natural_key, split_names
from vidseg.data.synthetic import make_synthetic_vspw
from vidseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from vidseg.data.vspw import VSPWClips

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "synthetic" / "tiny.yaml")
FRAMES, H, W = 12, 32, 48
SMALL = TINY_32PX


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A synthetic VSPW root (2 train, 1 val videos of 12 frames) and its video/frames copies."""
    base = tmp_path_factory.mktemp("user_data")
    make_synthetic_vspw(
        base / "vspw",
        num_train=2,
        num_val=1,
        num_test=0,
        frames=FRAMES,
        height=H,
        width=W,
        seed=4,
        write_mp4=False,
        workers=1,
    )
    out = {"vspw": str(base / "vspw")}
    for fmt in ("video", "frames"):
        convert_vspw(base / "vspw", base / fmt, fmt)
        out[fmt] = str(base / fmt)
    return out


def copy_root(roots, fmt, tmp_path) -> str:
    dst = str(tmp_path / fmt)
    shutil.copytree(roots[fmt], dst)
    return dst


def clips(root, fmt, split="train", **kwargs) -> ClipDataset:
    videos, _ = load_videos(root, fmt, split_names(root, fmt, split))
    return ClipDataset(videos, **kwargs)


def grey(frames: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation: `(T, 3, H, W)` -> uint8-scale floats."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((frames * std + mean) * 255).numpy()


def test_natural_order():
    names = ["frame10", "frame2", "frame1", "a_10_b", "a_9_c", "Frame3", "frame01"]
    assert sorted(names, key=natural_key) == [
        "a_9_c",
        "a_10_b",
        "frame01",
        "frame1",
        "frame2",
        "Frame3",
        "frame10",
    ]


def test_frames_layout_reads_the_vspw_clips_bit_for_bit(roots):
    ref = VSPWClips(
        roots["vspw"], "train", history=2, stride=2, mode="eval", return_all_labels=True
    )
    ds = clips(roots["frames"], "frames", history=2, stride=2, mode="eval", return_all_labels=True)
    assert len(ds) == len(ref) == 2 * FRAMES
    assert ds.videos[0].stems[:3] == ["frame0", "frame1", "frame2"]  # natural, not text, order
    assert ds.videos[0].stems[-1] == "frame11"
    for i in range(len(ds)):
        a, b = ds[i], ref[i]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["labels"], b["labels"])
    # the training clips too: the same sampling path draws the same frames, crops and flips
    transform = ClipTransform(train=True, short_side=32, crop_size=(24, 24))
    ref = VSPWClips(roots["vspw"], "train", history=1, mode="train", transform=transform, seed=3)
    ds = clips(roots["frames"], "frames", history=1, mode="train", transform=transform, seed=3)
    for epoch in (0, 1):
        ref.set_epoch(epoch)
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            a, b = ds[i], ref[i]
            assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["label"], b["label"])


def test_video_layout_masks_exact_frames_close(roots):
    ref = VSPWClips(roots["vspw"], "val", history=2, mode="eval", return_all_labels=True)
    ds = clips(roots["video"], "video", split="val", history=2, mode="eval", return_all_labels=True)
    assert len(ds) == len(ref) == FRAMES
    assert ds.videos[0].stems[:2] == ["000000", "000001"]  # prediction names = mask names
    worst = 0.0
    for i in range(len(ds)):
        a, b = ds[i], ref[i]
        assert torch.equal(a["labels"], b["labels"])
        worst = max(worst, float(np.abs(grey(a["frames"]) - grey(b["frames"])).mean()))
    assert worst < 6, worst  # H.264 at crf 12 against the source JPEGs, in grey levels
    pickled = __import__("pickle").loads(__import__("pickle").dumps(ds))  # DataLoader workers
    assert torch.equal(pickled[5]["frames"], ds[5]["frames"])


def test_masks_paired_by_order_when_no_name_is_shared(roots, tmp_path):
    root = copy_root(roots, "frames", tmp_path)
    name = split_names(root, "frames", "val")[0]
    masks = Path(root, name, "masks")
    for i in range(FRAMES):  # another naming scheme, zero-padded: pairs by natural order
        os.rename(masks / f"frame{i}.png", masks / f"label_{i:03d}.png")
    ref = VSPWClips(roots["vspw"], "val", history=0, mode="eval")
    ds = clips(root, "frames", split="val", history=0, mode="eval")
    assert all(torch.equal(ds[i]["label"], ref[i]["label"]) for i in range(FRAMES))
    os.rename(masks / "label_000.png", masks / "frame0.png")  # one shared name: ambiguous
    with pytest.raises(DataLayoutError, match="without a mask of the same name"):
        clips(root, "frames", split="val")


def test_mask_count_mismatch_is_refused_or_skipped_and_named_by_the_check(roots, tmp_path, capsys):
    root = copy_root(roots, "video", tmp_path)
    bad, good = split_names(root, "video", "train")
    os.remove(os.path.join(root, "masks", bad, f"{FRAMES - 1:06d}.png"))
    message = f"{bad}: {FRAMES - 1} masks for {FRAMES} frames"
    with pytest.raises(DataLayoutError, match=message + r".*data.bad_videos=skip"):
        load_videos(root, "video", [bad, good])
    videos, skipped = load_videos(root, "video", [bad, good], bad_videos="skip")
    assert [v.name for v in videos] == [good] and skipped == [bad]

    assert main(["data", "check", root, "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "data.format=video check" in out and message in out
    assert f"REFUSED 1 video(s), their masks do not pair with their frames: {bad}" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["refused_videos"] == [bad] and report["layout"] == "video"

    # training refuses before any work: one line naming the video, exit 2
    work = tmp_path / "run"
    code = main(
        [
            "train",
            TINY,
            "--work-dir",
            str(work),
            "--set",
            "data.format=video",
            f"data.root={root}",
            *SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not work.exists()


def test_check_names_every_other_problem(roots, tmp_path, capsys):
    frames = copy_root(roots, "frames", tmp_path)
    train = split_names(frames, "frames", "train")
    val = split_names(frames, "frames", "val")[0]
    masks = os.path.join(frames, train[0], "masks")
    cv2.imwrite(os.path.join(masks, "frame3.png"), np.zeros((H, W + 2), np.uint8))
    cv2.imwrite(os.path.join(masks, "frame4.png"), np.full((H, W), 200, np.uint8))
    shutil.rmtree(os.path.join(frames, train[1], "masks"))
    open(os.path.join(frames, val, "images", "frame5.jpg"), "wb").close()
    assert main(["data", "check", frames]) == 1
    out = capsys.readouterr().out
    assert "frame3.png: mask is 50x32 but the frame is 48x32 (WxH)" in out
    assert "frame4.png: values [200] outside {0..124, 255}" in out
    assert f"{train[1]}: mask folder" in out and "missing" in out
    assert "frame5.jpg: empty file (0 bytes)" in out
    assert f"REFUSED 1 video(s), their masks do not pair with their frames: {train[1]}" in out
    # the same values are fine as train ids only where they are train ids
    assert main(["data", "check", frames, "--labels", "train_ids"]) == 1
    assert "values [200] outside {0..123, 255} (data.labels: train_ids)" in capsys.readouterr().out

    video = copy_root(roots, "video", tmp_path)
    name = split_names(video, "video", "val")[0]
    with open(os.path.join(video, "videos", name + ".mp4"), "wb") as f:
        f.write(b"not a video at all")
    Path(video, "classes.txt").write_text("only\ntwo\n")  # classes beyond the list are errors
    assert main(["data", "check", video, "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "are classes beyond the 2 of classes.txt" in out and name not in out
    assert main(["data", "check", video, "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert f"{name}: video {video}" in out and "cannot be read" in out
    assert f"REFUSED 1 video(s), their masks do not pair with their frames: {name}" in out


def test_train_two_iterations_and_eval_on_each_format(roots, tmp_path, capsys):
    for fmt in ("video", "frames"):
        work = tmp_path / f"run_{fmt}"
        args = [
            "--set",
            f"data.format={fmt}",
            f"data.root={roots[fmt]}",
            *SMALL,
            "data.batch_size=1",
            "train.iters=2",
            "train.ckpt_interval=2",
            "train.validate=false",
        ]
        assert main(["train", TINY, "--work-dir", str(work), *args]) == 0, capsys.readouterr().err
        assert "trained 2 iterations" in capsys.readouterr().out
        out = tmp_path / f"eval_{fmt}"
        assert (
            main(
                [
                    "eval",
                    TINY,
                    "--checkpoint",
                    str(work),
                    "--out",
                    str(out),
                    "--set",
                    f"data.format={fmt}",
                    f"data.root={roots[fmt]}",
                    *SMALL,
                ]
            )
            == 0
        )
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["format"] == fmt and metrics["frames"] == FRAMES
        assert metrics["skipped_videos"] == [] and 0.0 <= metrics["pixel_acc"] <= 1.0
        video = split_names(roots[fmt], fmt, "val")[0]
        first = "000000.png" if fmt == "video" else "frame0.png"
        pred = cv2.imread(str(out / "pred" / video / first), cv2.IMREAD_UNCHANGED)
        assert pred.shape == (H, W)  # at mask resolution, named like the mask
        assert metrics["per_class"][0]["name"] == "sky"  # classes.txt written by the converter
    capsys.readouterr()


def test_train_id_masks_match_vspw_masks(roots, tmp_path):
    root = copy_root(roots, "frames", tmp_path)
    name = split_names(root, "frames", "val")[0]
    for path in Path(root, name, "masks").iterdir():  # rewrite as train ids (raw k -> k - 1)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), to_train_ids(raw))
        assert np.array_equal(
            to_vspw_raw(to_train_ids(raw), path, "train_ids"), np.where(raw == 0, 255, raw)
        )  # "others" (0) becomes plain ignore
    ref = VSPWClips(roots["vspw"], "val", history=0, mode="eval")
    ds = clips(root, "frames", split="val", history=0, mode="eval", label_format="train_ids")
    assert all(torch.equal(ds[i]["label"], ref[i]["label"]) for i in range(FRAMES))
    with pytest.raises(ValueError, match="model.num_classes=3"):
        clips(
            root,
            "frames",
            split="val",
            history=0,
            mode="eval",
            label_format="train_ids",
            num_classes=3,
        )[0]


def test_config_rejects_unknown_format():
    from vidseg.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data.format='vidoe'.*did you mean 'video'"):
        load_config(TINY, ["data.format=vidoe"])


def test_synth_and_convert_commands(tmp_path, capsys):
    out = tmp_path / "synth_frames"
    assert (
        main(
            [
                "data",
                "synth",
                "--format",
                "frames",
                "--out",
                str(out),
                "--train-videos",
                "1",
                "--val-videos",
                "1",
                "--test-videos",
                "0",
                "--frames",
                "3",
                "--height",
                "32",
                "--width",
                "48",
            ]
        )
        == 0
    )
    assert "vidseg data check" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(
        [
            "classes.txt",
            "train.txt",
            "val.txt",
            *Path(out, "train.txt").read_text().split(),
            *Path(out, "val.txt").read_text().split(),
        ]
    )
    assert main(["data", "check", str(out)]) == 0
    assert "OK: 0 error(s)" in capsys.readouterr().out
    assert (
        main(["data", "convert", str(out), "--out", str(tmp_path / "x"), "--format", "video"]) == 2
    )  # not a VSPW-format root: one line, exit 2
    assert "cannot convert" in capsys.readouterr().err


def test_phone_video_with_a_display_matrix_is_read_upright(tmp_path, capsys):
    """Masks are drawn on what a player shows: a 90-degree file is 32 wide and 48 tall."""
    import av

    from vidseg.data.frame_access import iter_video_frames

    root = tmp_path / "phone"
    (root / "masks" / "walk").mkdir(parents=True)
    (root / "videos").mkdir()
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:, :24] = 200  # bright left half as stored: the top or bottom half upright
    with av.open(str(root / "videos" / "walk.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=15, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv444p"
        stream.set_display_rotation(90)
        for _ in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        out.mux(stream.encode(None))
    for i in range(3):
        cv2.imwrite(str(root / "masks" / "walk" / f"{i}.png"), np.ones((48, 32), np.uint8))
    assert main(["data", "check", str(root)]) == 0, capsys.readouterr().out
    decoded = list(iter_video_frames(str(root / "videos" / "walk.mp4")))
    assert [f.shape for f in decoded] == [(48, 32, 3)] * 3
    ds = clips(str(root), "video", history=1, mode="eval")
    frames = grey(ds[2]["frames"])
    assert frames.shape == (2, 3, 48, 32)
    assert np.abs(frames[-1].transpose(1, 2, 0) - decoded[2]).max() < 1.5  # the same pixels
    assert abs(frames[-1, :, :24].mean() - frames[-1, :, 24:].mean()) > 150
