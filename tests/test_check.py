"""`check_vspw`: counts, and every kind of broken file is reported with its path."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
from test_vspw import SPLITS, VIDEOS, make_vspw_root

from vidseg.data.check import check_vspw, jpeg_size

SMALL = {"train": {"videos": 2, "frames": 7}, "val": {"videos": 1, "frames": 3},
         "test": {"videos": 1, "frames": 2}}


def problems_for(report, needle):
    return [p for p in report.problems if needle in p.path]


def test_clean_root_is_ok_and_counted(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    report = check_vspw(root, expected=SMALL)
    assert report.ok, report.format()
    assert report.problems == []
    assert report.counts == {"train": {"videos": 2, "frames": 7, "masks": 7},
                             "val": {"videos": 1, "frames": 3, "masks": 3},
                             "test": {"videos": 1, "frames": 2, "masks": 0}}


def test_official_counts_mismatch_is_only_a_warning(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    report = check_vspw(root)
    assert report.ok
    assert report.expected_source == "official VSPW"
    assert any("expected 198244" in p.message for p in report.warnings)


def test_manifest_counts_are_used(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    with open(os.path.join(root, "vidseg_synthetic.json"), "w") as f:
        json.dump({"seed": 0, "expected": {"train": {"videos": 2, "frames": 7, "masks": 7},
                                           "val": {"videos": 1, "frames": 4, "masks": 3}}}, f)
    report = check_vspw(root)
    assert report.expected_source == "vidseg_synthetic.json"
    assert [p.message for p in report.warnings] == ["3 frames in split val, expected 4 (vidseg_synthetic.json)"]


def test_broken_copy_reports_zero_byte_missing_mask_and_bad_value(tmp_path):
    root = make_vspw_root(tmp_path / "v")
    data = os.path.join(root, "data")
    open(os.path.join(data, "1_vid-a_b", "origin", "00000378.jpg"), "wb").close()
    os.remove(os.path.join(data, "1_vid-a_b", "mask", "00000380.png"))
    cv2.imwrite(os.path.join(data, "4_val", "mask", "00000101.png"), np.full((32, 48), 200, np.uint8))
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
