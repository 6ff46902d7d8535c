"""`check_vspw`: counts, and every kind of broken file is reported with its path."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from test_orientation import jpeg_bytes
from test_vspw import SPLITS, VIDEOS, H, W, make_vspw_root

from vidseg.data.check import check_vspw, jpeg_orientation, jpeg_size
from vidseg.data.check_layouts import check_layout

SMALL = {
    "train": {"videos": 2, "frames": 7},
    "val": {"videos": 1, "frames": 3},
    "test": {"videos": 1, "frames": 2},
}


def problems_for(report, needle):
    return [p for p in report.problems if needle in p.path]


def test_clean_root_is_ok_and_counted(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    report = check_vspw(root, expected=SMALL)
    assert report.ok, report.format()
    assert report.problems == []
    assert report.counts == {
        "train": {"videos": 2, "frames": 7, "masks": 7},
        "val": {"videos": 1, "frames": 3, "masks": 3},
        "test": {"videos": 1, "frames": 2, "masks": 0},
    }


def test_official_counts_mismatch_is_only_a_warning(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    report = check_vspw(root)
    assert report.ok
    assert report.expected_source == "official VSPW"
    assert any("expected 198244" in p.message for p in report.warnings)


def test_manifest_counts_are_used(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    with open(os.path.join(root, "vidseg_synthetic.json"), "w") as f:
        json.dump(
            {
                "seed": 0,
                "expected": {
                    "train": {"videos": 2, "frames": 7, "masks": 7},
                    "val": {"videos": 1, "frames": 4, "masks": 3},
                },
            },
            f,
        )
    report = check_vspw(root)
    assert report.expected_source == "vidseg_synthetic.json"
    assert [p.message for p in report.warnings] == [
        "3 frames in split val, expected 4 (vidseg_synthetic.json)"
    ]


def test_broken_copy_reports_zero_byte_missing_mask_and_bad_value(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    data = os.path.join(root, "data")
    open(os.path.join(data, "1_vid-a_b", "origin", "00000378.jpg"), "wb").close()
    os.remove(os.path.join(data, "1_vid-a_b", "mask", "00000380.png"))
    cv2.imwrite(
        os.path.join(data, "4_val", "mask", "00000101.png"), np.full((32, 48), 200, np.uint8)
    )
    report = check_vspw(root, expected=SMALL)
    assert not report.ok
    messages = {p.path: p.message for p in report.errors}
    assert "0 bytes" in messages[os.path.join(data, "1_vid-a_b", "origin", "00000378.jpg")]
    assert "without mask" in messages[os.path.join(data, "1_vid-a_b", "origin", "00000380.jpg")]
    assert "[200]" in messages[os.path.join(data, "4_val", "mask", "00000101.png")]
    assert len(report.errors) == 3
    assert report.refused == ["1_vid-a_b"]  # unpaired frame: training refuses (or skips) it
    text = report.format()
    assert "NOT USABLE: 3 error(s)" in text and "00000378.jpg" in text
    assert "REFUSED 1 video(s), their masks do not pair with their frames: 1_vid-a_b" in text
    assert report.to_dict()["refused_videos"] == ["1_vid-a_b"]


def test_rgb_mask_size_mismatch_missing_video_and_json(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    data = os.path.join(root, "data")
    cv2.imwrite(os.path.join(data, "4_val", "mask", "00000100.png"), np.ones((32, 48, 3), np.uint8))
    cv2.imwrite(os.path.join(data, "4_val", "mask", "00000102.png"), np.ones((16, 48), np.uint8))
    with open(os.path.join(root, "val.txt"), "a") as f:
        f.write("9_ghost\n")
    os.remove(os.path.join(root, "label_num_dic_final.json"))
    report = check_vspw(root, splits=("val",), expected=SMALL)
    assert not report.ok
    assert "single-channel" in problems_for(report, "00000100.png")[0].message
    assert "48x16" in problems_for(report, "00000102.png")[0].message
    assert "no folder" in problems_for(report, "9_ghost")[0].message
    assert problems_for(report, "label_num_dic_final.json")[0].severity == "error"
    assert report.counts["val"]["videos"] == 2


def test_undecodable_jpeg_and_missing_root(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    bad = os.path.join(root, "data", "4_val", "origin", "00000102.jpg")
    with open(bad, "wb") as f:
        f.write(b"this is not a jpeg")
    report = check_vspw(root, splits=("val",), expected=SMALL)
    assert [p.path for p in report.errors] == [bad]
    decoded = check_vspw(root, splits=("val",), expected=SMALL, decode_frames=True)
    assert [p.path for p in decoded.errors] == [bad]
    assert not check_vspw(tmp_path / "nothing").ok


def test_jpeg_header_size_matches_decoder(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for name, params in (("base.jpg", []), ("prog.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])):
        path = str(tmp_path / name)
        cv2.imwrite(path, img, params)
        with open(path, "rb") as f:
            assert jpeg_size(f.read()) == (37, 53)


def test_fixture_matches_constants():
    # guards the SMALL table against edits of the shared fixture
    assert sum(len(VIDEOS[n]) for n in SPLITS["train"]) == SMALL["train"]["frames"]


@pytest.mark.parametrize("decode", [False, True], ids=["header", "decoded"])
def test_exif_turned_jpegs_are_checked_at_their_upright_size(tmp_path, decode):
    """Masks are drawn on the upright frame: a JPEG stored W x H with a 90-degree EXIF turn
    (orientations 5..8) fits an H x W mask; stored sideways without a turn (1..4), it does not."""
    sideways = np.random.default_rng(0).integers(0, 255, (W, H, 3), dtype=np.uint8)
    root = make_vspw_root(tmp_path / "v")
    origin = os.path.join(root, "data", "1_vid-a_b", "origin")
    frames_root = tmp_path / "frames"
    (frames_root / "clip" / "images").mkdir(parents=True)
    (frames_root / "clip" / "masks").mkdir()
    mask = cv2.imread(
        os.path.join(root, "data", "1_vid-a_b", "mask", "00000377.png"), cv2.IMREAD_UNCHANGED
    )
    for o in range(1, 9):
        data = jpeg_bytes(sideways, o)
        assert jpeg_orientation(data) == o and jpeg_size(data) == (W, H)
        (frames_root / "clip" / "images" / f"f{o}.jpg").write_bytes(data)
        cv2.imwrite(str(frames_root / "clip" / "masks" / f"f{o}.png"), mask)
    stems = VIDEOS["1_vid-a_b"]
    for o, stem in zip((6, 8, 5, 3), stems):  # three turned frames, one only upside down
        with open(os.path.join(origin, stem + ".jpg"), "wb") as f:
            f.write(jpeg_bytes(sideways, o))
    report = check_vspw(root, expected=SMALL, decode_frames=decode)
    assert [p.path for p in report.errors] == [
        os.path.join(root, "data", "1_vid-a_b", "mask", stems[3] + ".png")
    ]
    assert f"frame is {H}x{W} (WxH)" in report.errors[0].message
    report = check_layout(frames_root, "frames", decode_frames=decode)
    flagged = sorted(os.path.basename(p.path) for p in report.errors)
    assert flagged == ["f1.png", "f2.png", "f3.png", "f4.png"], report.format()


def test_jpeg_orientation_without_exif_or_with_a_broken_one():
    plain = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert jpeg_orientation(plain) == 1 and jpeg_orientation(b"\x89PNG\r\n") == 1
    turned = jpeg_bytes(np.zeros((8, 8, 3), np.uint8), 6)
    assert jpeg_orientation(turned[:30]) == 1  # cut inside the EXIF segment
