"""VSPW layout reading, label mapping, clip sampling and tolerant frame reading."""

from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from vidseg.data.clip_dataset import DataLayoutError
from vidseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from vidseg.data.vspw import (
    VSPWClips,
    VSPWVideo,
    clip_indices,
    load_class_names,
    read_mask,
    read_split,
    to_train_ids,
)

H, W = 32, 48
# stems with a gap (379 missing) and a start that is not 0, as in the real release
VIDEOS = {
    "1_vid-a_b": ["00000377", "00000378", "00000380", "00000381"],
    "2_vidB": ["00000010", "00000011", "00000012"],
    "3_test": ["00000005", "00000006"],
    "4_val": ["00000100", "00000101", "00000102"],
}
SPLITS = {"train": ["1_vid-a_b", "2_vidB"], "val": ["4_val"], "test": ["3_test"]}
CLASSES = {"others": 0, "wall": 1, "sky": 2, "person": 3}


def frame_value(video_idx: int, t: int) -> int:
    """Grey level of frame t of video video_idx, so a loaded frame can be identified."""
    return 20 + 60 * video_idx + 10 * t


def make_vspw_root(root, splits=SPLITS, videos=VIDEOS, classes=CLASSES):
    """Write a tiny VSPW-format dataset: constant-grey JPEG frames, raw masks {0, 1, 2, 3, 255}."""
    os.makedirs(root, exist_ok=True)
    for split, names in splits.items():
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.write("".join(n + "\n" for n in names))
    if classes is not None:
        with open(os.path.join(root, "label_num_dic_final.json"), "w") as f:
            json.dump(classes, f)
    for v, (name, stems) in enumerate(videos.items()):
        os.makedirs(os.path.join(root, "data", name, "origin"))
        with_masks = name not in splits.get("test", [])
        if with_masks:
            os.makedirs(os.path.join(root, "data", name, "mask"))
        for t, stem in enumerate(stems):
            frame = np.full((H, W, 3), frame_value(v, t), np.uint8)
            cv2.imwrite(os.path.join(root, "data", name, "origin", stem + ".jpg"), frame)
            if with_masks:
                mask = np.zeros((H, W), np.uint8)
                mask[:, : W // 2] = 1 + (t % 3)
                mask[:4] = 255
                cv2.imwrite(os.path.join(root, "data", name, "mask", stem + ".png"), mask)
    return str(root)


@pytest.fixture
def vspw_root(tmp_path):
    return make_vspw_root(tmp_path / "VSPW_480p")


def grey_levels(frames: torch.Tensor) -> list[int]:
    """Undo the ImageNet normalisation of `(T, 3, H, W)` and return each frame's grey level."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (frames * std + mean) * 255
    return [int(round(v)) for v in rgb.mean(dim=(1, 2, 3)).tolist()]


def test_label_mapping():
    raw = np.array([[0, 1, 2], [124, 255, 50]], np.uint8)
    out = to_train_ids(raw)
    assert out.dtype == np.uint8
    assert out.tolist() == [[255, 0, 1], [123, 255, 49]]


def test_label_mapping_rejects_invalid_values_naming_the_file():
    raw = np.array([[1, 200, 125]], np.uint8)
    with pytest.raises(ValueError, match=r"bad\.png.*\[125, 200\]"):
        to_train_ids(raw, "bad.png")
    with pytest.raises(ValueError, match=r"-1"):
        to_train_ids(np.array([[-1, 3]], np.int32))


def test_read_split_and_missing_video(vspw_root):
    assert read_split(vspw_root, "train") == ["1_vid-a_b", "2_vidB"]
    with open(os.path.join(vspw_root, "val.txt"), "a") as f:
        f.write("9_ghost\n")
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*9_ghost"):
        read_split(vspw_root, "val")
    with pytest.raises(FileNotFoundError, match=r"nosuch\.txt"):
        read_split(vspw_root, "nosuch")


def test_class_names_and_missing_json(vspw_root, tmp_path):
    assert load_class_names(vspw_root) == ["wall", "sky", "person"]
    os.remove(os.path.join(vspw_root, "label_num_dic_final.json"))
    with pytest.raises(FileNotFoundError, match="label_num_dic_final.json"):
        load_class_names(vspw_root)


def test_video_index_sorted_and_stems_must_match(vspw_root):
    video = VSPWVideo.from_root(vspw_root, "1_vid-a_b")
    assert video.stems == VIDEOS["1_vid-a_b"]
    assert [os.path.basename(p) for p in video.mask_paths] == [s + ".png" for s in video.stems]
    os.remove(os.path.join(vspw_root, "data", "1_vid-a_b", "mask", "00000380.png"))
    with pytest.raises(DataLayoutError, match="00000380"):
        VSPWVideo.from_root(vspw_root, "1_vid-a_b")
    assert VSPWVideo.from_root(vspw_root, "1_vid-a_b", with_masks=False).mask_paths is None


def test_read_mask_rejects_rgb(tmp_path):
    path = str(tmp_path / "rgb.png")
    cv2.imwrite(path, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb.png.*single-channel"):
        read_mask(path)


def test_read_mask_reads_palette_indices(tmp_path):
    from PIL import Image

    idx = np.array([[0, 3], [124, 255]], np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([(i * 7) % 256 for i in range(768)])
    path = str(tmp_path / "pal.png")
    im.save(path)
    assert read_mask(path).tolist() == idx.tolist()


def test_clip_indices_repeat_start_and_stride():
    assert clip_indices(0, 2, 1) == [0, 0, 0]
    assert clip_indices(1, 2, 1) == [0, 0, 1]
    assert clip_indices(3, 2, 1) == [1, 2, 3]
    assert clip_indices(3, 2, 2) == [0, 1, 3]
    assert clip_indices(5, 0, 3) == [5]


def test_eval_mode_enumerates_every_frame_in_order_with_gaps(vspw_root):
    ds = VSPWClips(vspw_root, "train", history=2, stride=1, mode="eval")
    assert len(ds) == 7
    got = [(ds[i]["video"], ds[i]["stem"]) for i in range(len(ds))]
    assert got == [(n, s) for n in SPLITS["train"] for s in VIDEOS[n]]
    # start of video: earliest frame repeated; clips follow the sorted list across the 379 gap
    assert grey_levels(ds[0]["frames"]) == [frame_value(0, 0)] * 3
    assert grey_levels(ds[1]["frames"]) == [frame_value(0, t) for t in (0, 0, 1)]
    assert grey_levels(ds[3]["frames"]) == [frame_value(0, t) for t in (1, 2, 3)]
    assert grey_levels(ds[4]["frames"]) == [frame_value(1, 0)] * 3  # new video: no leak
    sample = ds[2]
    assert sample["frames"].shape == (3, 3, H, W) and sample["frames"].dtype == torch.float32
    assert sample["label"].shape == (H, W) and sample["label"].dtype == torch.int64
    # frame t=2 mask: left half raw 3 -> 2, right half raw 0 -> 255, top rows 255
    assert (
        sample["label"][10, 0] == 2
        and sample["label"][10, -1] == 255
        and sample["label"][0, 0] == 255
    )
    assert sample["substituted"] == 0


def test_stride_and_all_labels(vspw_root):
    ds = VSPWClips(vspw_root, "train", history=1, stride=2, mode="eval", return_all_labels=True)
    sample = ds[3]  # t = 3 -> clip [1, 3]
    assert grey_levels(sample["frames"]) == [frame_value(0, 1), frame_value(0, 3)]
    assert sample["labels"].shape == (2, H, W)
    assert sample["labels"][0, 10, 0] == 1 and sample["labels"][1, 10, 0] == 0
    assert torch.equal(sample["labels"][-1], sample["label"])


def test_train_mode_is_reproducible_per_epoch(vspw_root):
    ds = VSPWClips(
        vspw_root,
        "train",
        history=2,
        mode="train",
        seed=3,
        transform=ClipTransform(train=True, short_side=32, crop_size=24),
    )
    assert len(ds) == 2
    first = [ds[i] for i in range(2)]
    again = [ds[i] for i in range(2)]
    for a, b in zip(first, again):
        assert a["stem"] == b["stem"] and torch.equal(a["frames"], b["frames"])
    stems_by_epoch = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        stems_by_epoch.add(tuple(ds[i]["stem"] for i in range(2)))
    assert len(stems_by_epoch) > 1
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 3, 3, 24, 24) and batch["label"].shape == (2, 24, 24)


def test_dataset_pickles_for_spawned_workers(vspw_root):
    import pickle

    ds = VSPWClips(vspw_root, "val", history=1, mode="eval")
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[2]["frames"], ds[2]["frames"])


def test_zero_byte_frame_is_substituted_counted_and_logged_once(vspw_root, caplog):
    bad = os.path.join(vspw_root, "data", "1_vid-a_b", "origin", "00000378.jpg")
    open(bad, "wb").close()
    ds = VSPWClips(vspw_root, "train", history=2, mode="eval")
    with caplog.at_level(logging.WARNING, logger="vidseg.data.vspw"):
        sample = ds[2]  # clip [0, 1, 2]: frame 1 unreadable -> nearest readable is frame 0
        again = ds[1]  # clip [0, 0, 1]
    assert grey_levels(sample["frames"]) == [
        frame_value(0, 0),
        frame_value(0, 0),
        frame_value(0, 2),
    ]
    assert sample["substituted"] == 1 and again["substituted"] == 1
    assert again["stem"] == "00000378"
    assert ds.substituted_total == 2
    warnings = [r for r in caplog.records if "00000378.jpg" in r.getMessage()]
    assert len(warnings) == 1


def test_test_split_has_no_masks(vspw_root):
    ds = VSPWClips(vspw_root, "test", history=1, mode="eval")
    assert len(ds) == 2
    assert bool((ds[1]["label"] == 255).all())


def test_invalid_mask_value_error_names_file(vspw_root):
    path = os.path.join(vspw_root, "data", "4_val", "mask", "00000101.png")
    cv2.imwrite(path, np.full((H, W), 200, np.uint8))
    ds = VSPWClips(vspw_root, "val", history=0, mode="eval")
    with pytest.raises(ValueError, match=r"00000101\.png.*200"):
        ds[1]


def write_grey_video(path, levels, h=H, w=W):
    """An mpeg4 file whose frame i is a constant grey `levels[i]` (30 fps)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for level in levels:
            img = np.full((h, w, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("backend", ["decord", "pyav", "auto"])
def test_video_file_clips(tmp_path, backend, monkeypatch):
    from vidseg.data.video_clips import VideoFileClips
    from vidseg.io.selftest import READER_ENV, SelfTestError, decord_status

    monkeypatch.delenv(READER_ENV, raising=False)
    passed, why = decord_status()  # whatever decord does here, the loader reads right
    if backend == "decord" and not passed:
        with pytest.raises(SelfTestError, match="fails its self-test") as err:
            VideoFileClips([(tmp_path / "unused.mp4", None)], backend="decord")
        assert why in str(err.value)
        backend = "auto"  # falls back to PyAV, and says why
    levels = [30 + 20 * i for i in range(8)]
    write_grey_video(tmp_path / "walk.mp4", levels)
    masks = tmp_path / "walk_masks"
    masks.mkdir()
    for i in (0, 2, 3, 6):  # sparse annotation: only these frames are current frames
        cv2.imwrite(str(masks / f"{i:08d}.png"), np.full((H, W), 1 + i % 3, np.uint8))
    ds = VideoFileClips(
        [(tmp_path / "walk.mp4", masks)],
        history=2,
        stride=2,
        mode="eval",
        backend=backend,
        return_all_labels=True,
    )
    if backend == "auto":
        assert ds.backend == ("decord" if passed else "pyav") and why in ds.reader_decision.reason
    assert len(ds) == 4
    assert [ds[i]["stem"] for i in range(4)] == ["00000000", "00000002", "00000003", "00000006"]
    first, last = ds[0], ds[3]
    assert first["video"] == "walk" and first["substituted"] == 0
    assert all(abs(g - levels[0]) <= 3 for g in grey_levels(first["frames"]))  # start repeated
    assert [abs(g - levels[i]) <= 3 for g, i in zip(grey_levels(last["frames"]), (2, 4, 6))] == [
        True
    ] * 3
    assert int(last["label"][0, 0]) == 0  # raw 1 -> train id 0
    assert bool((last["labels"][1] == 255).all())  # frame 4 has no mask
    train = VideoFileClips(
        [(tmp_path / "walk.mp4", masks)], history=1, mode="train", seed=1, backend=backend
    )
    assert len(train) == 1 and train[0]["stem"] == train[0]["stem"]
    import pickle

    train[0]  # opens a reader, which must not travel with the pickle
    assert pickle.loads(pickle.dumps(train))[0]["stem"] == train[0]["stem"]
    assert train[0]["stem"] in {"00000000", "00000002", "00000003", "00000006"}


def test_video_file_clips_rejects_masks_past_the_end(tmp_path):
    from vidseg.data.video_clips import VideoFileClips

    write_grey_video(tmp_path / "v.mp4", [50, 60, 70])
    masks = tmp_path / "m"
    masks.mkdir()
    cv2.imwrite(str(masks / "00000009.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="00000009.png"):
        VideoFileClips([(tmp_path / "v.mp4", masks)], backend="pyav")
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        VideoFileClips([(tmp_path / "nope.mp4", masks)])


def test_unpaired_video_is_refused_or_skipped(vspw_root, caplog):
    os.remove(os.path.join(vspw_root, "data", "2_vidB", "mask", "00000011.png"))
    with pytest.raises(
        DataLayoutError,
        match=r"1 unusable video\(s\), refused: video 2_vidB.*"
        r"data.bad_videos=skip",
    ):
        VSPWClips(vspw_root, "train")
    with caplog.at_level(logging.WARNING):
        ds = VSPWClips(vspw_root, "train", mode="eval", bad_videos="skip")
    assert [v.name for v in ds.videos] == ["1_vid-a_b"] and ds.skipped_videos == ["2_vidB"]
    assert "skipping video 2_vidB" in caplog.text
    os.remove(os.path.join(vspw_root, "data", "1_vid-a_b", "mask", "00000377.png"))
    with pytest.raises(DataLayoutError, match="none of the 2 video"):
        VSPWClips(vspw_root, "train", bad_videos="skip")
