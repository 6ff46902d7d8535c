"""Synthetic VSPW generator: layout, mask format, determinism, mp4, motion and texture overlap."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from vidseg.data import synthetic, synthetic_scene
from vidseg.data.synthetic import MANIFEST, class_ids, make_synthetic_vspw
from vidseg.data.vspw import load_class_names, read_split

SMALL = dict(num_train=2, num_val=1, num_test=1, frames=6, height=48, width=80, seed=0)
VALID = set(range(125)) | {255}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    summary = make_synthetic_vspw(out, **SMALL, workers=2)
    assert summary["videos"] == {"train": 2, "val": 1, "test": 1}
    assert summary["frames"] == {"train": 12, "val": 6, "test": 6}
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.iterdir())


def _masks(root: Path, video: str) -> list[np.ndarray]:
    folder = root / "data" / video / "mask"
    return [np.array(Image.open(folder / f"{s}.png")) for s in _stems(folder)]


def test_layout_split_files_class_list_and_manifest(root):
    names = {split: read_split(root, split) for split in ("train", "val", "test")}
    assert [len(names[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    all_names = sum(names.values(), [])
    assert len(set(all_names)) == 4
    for name in all_names:
        assert re.fullmatch(r"\d{4}_[A-Za-z0-9_-]{11}_0", name), name
    for name in names["test"]:
        assert not (root / "data" / name / "mask").exists()  # test ships frames only, as VSPW
    table = json.loads((root / "label_num_dic_final.json").read_text())
    assert table["others"] == 0 and sorted(table.values()) == list(range(125))
    classes = load_class_names(root)
    assert len(classes) == 124
    for name, raw in class_ids(124).items():
        assert classes[raw - 1] == name
    assert sum(c.startswith("unused_") for c in classes) == 124 - len(synthetic.USED_CLASSES)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["seed"] == 0 and manifest["parameters"]["frames"] == 6
    assert manifest["expected"]["train"] == {"videos": 2, "frames": 12, "masks": 12}
    assert manifest["expected"]["test"] == {"videos": 1, "frames": 6, "masks": 0}
    from vidseg.data.check import check_vspw  # the dataset checker reads the manifest

    report = check_vspw(root)
    assert report.ok, report.format()


def test_frames_and_masks_format(root):
    for split in ("train", "val", "test"):
        for video in read_split(root, split):
            origin = root / "data" / video / "origin"
            stems = _stems(origin)
            assert len(stems) == 6 and all(re.fullmatch(r"\d{8}", s) for s in stems)
            # contiguous source-frame indices from a random start, as in VSPW
            assert [int(s) for s in stems] == list(range(int(stems[0]), int(stems[0]) + 6))
            for s in stems:
                with Image.open(origin / f"{s}.jpg") as img:
                    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (80, 48)
            if split == "test":
                continue
            mask_dir = root / "data" / video / "mask"
            assert _stems(mask_dir) == stems
            for s in stems:
                with Image.open(mask_dir / f"{s}.png") as img:
                    assert img.format == "PNG" and img.mode == "L" and img.size == (80, 48)
                    assert set(np.unique(np.array(img)).tolist()) <= VALID


def test_vspw_reader_loads_clips(root):
    from vidseg.data.vspw import VSPWClips

    clips = VSPWClips(root, "val", history=2, mode="eval")
    assert len(clips) == 6
    sample = clips[5]
    assert tuple(sample["frames"].shape) == (3, 3, 48, 80) and tuple(sample["label"].shape) == (
        48,
        80,
    )
    values = set(sample["label"].unique().tolist())
    assert values <= set(range(124)) | {255} and len(values - {255}) >= 2


def test_several_classes_others_and_void_present(root):
    values = np.unique(
        np.concatenate(
            [
                m.ravel()
                for s in ("train", "val")
                for v in read_split(root, s)
                for m in _masks(root, v)
            ]
        )
    )
    used = set(class_ids(124).values())
    assert len(used & set(values.tolist())) >= 5
    assert 0 in values and 255 in values  # "others" regions and void bands


def test_deterministic_and_independent_of_workers(root, tmp_path):
    again = tmp_path / "again"
    make_synthetic_vspw(again, **SMALL, workers=1)
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    assert all(first[k] == second[k] for k in first)  # JPEG, PNG, mp4 and JSON bytes
    other = tmp_path / "other"
    make_synthetic_vspw(other, **{**SMALL, "seed": 1}, write_mp4=False)
    assert read_split(other, "train") != read_split(root, "train")
    a = _masks(root, read_split(root, "train")[0])[0]
    b = _masks(other, read_split(other, "train")[0])[0]
    assert not np.array_equal(a, b)


def test_val_mp4_readable(root):
    (video,) = read_split(root, "val")
    path = root / "videos" / f"{video}.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == pytest.approx(15)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (48, 80, 3)
    origin = root / "data" / video / "origin"
    jpg = cv2.imread(str(origin / f"{_stems(origin)[3]}.jpg"))[..., ::-1]
    assert np.abs(decoded[3].astype(float) - jpg).mean() < 20  # same frame, two lossy codecs


def test_objects_move_but_consecutive_masks_mostly_agree(root):
    for video in read_split(root, "train") + read_split(root, "val"):
        masks = _masks(root, video)
        agree = [np.mean(a == b) for a, b in zip(masks, masks[1:])]
        assert min(agree) > 0.75, agree  # small motions between frames
        assert max(agree) < 1.0  # but something moves every video
        assert np.mean(masks[0] == masks[-1]) < min(agree)  # motion accumulates over time


def test_pixel_colour_does_not_identify_the_class():
    """Per-pixel colour distributions overlap: a nearest-mean colour classifier is weak."""
    rng = np.random.default_rng(0)
    pixels = {
        c.name: np.concatenate(
            [synthetic_scene._texture(rng, c, 48, 48, 1.0).reshape(-1, 3) for _ in range(6)]
        )
        for c in synthetic.STUFF + synthetic.THINGS
    }
    accuracy = {}
    for a, b in itertools.combinations(pixels, 2):
        xa, xb = pixels[a], pixels[b]
        accuracy[a, b] = _nearest_mean_accuracy(
            np.concatenate([xa, xb]), np.repeat([0, 1], [len(xa), len(xb)]), standardise=False
        )
    for pair in (("sky", "water"), ("tree", "grass"), ("road", "car"), ("wall", "building")):
        assert accuracy[pair] < 0.8, (pair, accuracy[pair])
    assert np.median(list(accuracy.values())) < 0.8
    assert max(accuracy.values()) < 0.97  # no pair of classes is separable by colour alone


def test_local_texture_beats_pixel_colour(tmp_path):
    """On generated frames, local texture statistics classify far better than one pixel's colour."""
    out = tmp_path / "mid"
    make_synthetic_vspw(
        out,
        num_train=3,
        num_val=0,
        num_test=0,
        frames=4,
        height=96,
        width=160,
        seed=3,
        write_mp4=False,
    )
    colour, texture, labels = [], [], []
    for video in read_split(out, "train"):
        for stem in _stems(out / "data" / video / "origin"):
            rgb = cv2.imread(str(out / "data" / video / "origin" / f"{stem}.jpg")).astype(
                np.float32
            )
            mask = np.array(Image.open(out / "data" / video / "mask" / f"{stem}.png"))
            grey = rgb.mean(2)
            local = [cv2.blur(rgb, (7, 7))]
            local.append(np.sqrt(np.maximum(cv2.blur(rgb**2, (7, 7)) - local[0] ** 2, 0)))
            for dx, dy in ((1, 0), (0, 1), (1, 1), (1, -1)):  # oriented gradient energy
                g = cv2.filter2D(grey, -1, _grad_kernel(dx, dy))
                local.append(cv2.blur(np.abs(g), (7, 7))[..., None])
            keep = (mask > 0) & (mask < 255)
            colour.append(rgb[keep])
            texture.append(np.concatenate(local, 2)[keep])
            labels.append(mask[keep])
    y = np.concatenate(labels)
    acc_colour = _nearest_mean_accuracy(np.concatenate(colour), y)
    acc_texture = _nearest_mean_accuracy(np.concatenate(texture), y)
    assert acc_colour < 0.6
    assert acc_texture > acc_colour + 0.15


def _grad_kernel(dx: int, dy: int) -> np.ndarray:
    k = np.zeros((3, 3), np.float32)
    k[1, 1], k[1 + dy, 1 + dx] = -1.0, 1.0
    return k


def _nearest_mean_accuracy(x: np.ndarray, y: np.ndarray, standardise: bool = True) -> float:
    """Fit class means on even samples, score on odd ones (features standardised if asked)."""
    x = x / (x.std(0) + 1e-6) if standardise else x.astype(np.float64)
    classes = np.unique(y)
    means = np.stack([x[0::2][y[0::2] == c].mean(0) for c in classes])
    test = x[1::2]
    dist = (test**2).sum(1)[:, None] - 2 * test @ means.T + (means**2).sum(1)[None]
    return float(np.mean(classes[dist.argmin(1)] == y[1::2]))


def test_bad_arguments_and_output_folder(tmp_path):
    with pytest.raises(ValueError, match="odd"):
        make_synthetic_vspw(tmp_path / "odd", **{**SMALL, "height": 47})
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_vspw(tmp_path / "k", **SMALL, num_classes=5)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_synthetic_vspw(foreign, **SMALL)
    # an earlier synthetic dataset is replaced, leaving no stale videos behind
    out = tmp_path / "regen"
    make_synthetic_vspw(out, **{**SMALL, "num_train": 3}, write_mp4=False)
    make_synthetic_vspw(out, **SMALL, write_mp4=False)
    assert len(os.listdir(out / "data")) == 4


def test_cli_writes_dataset_and_preview(tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "data_tools" / "make_synthetic_vspw.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_vspw", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out, preview = tmp_path / "cli", tmp_path / "sheet.png"
    rc = cli.main(
        [
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
            "--no-mp4",
            "--preview",
            str(preview),
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == {"train": 3, "val": 3, "test": 0}
    assert not (out / "videos").exists()
    sheet = cv2.imread(str(preview))
    assert sheet is not None and sheet.shape[1] == 5 * 48
