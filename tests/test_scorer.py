"""SplitScorer / score_prediction_dir / `vidseg score` on a tiny hand-made VSPW folder."""

import json
import math

import cv2
import numpy as np
import pytest

from vidseg.cli import main
from vidseg.metrics.report import format_table
from vidseg.metrics.scorer import score_prediction_dir

CLASSES = {"others": 0, "wall": 1, "floor": 2, "sky": 3, "tree": 4}  # K = 4 train ids
H, W, N = 12, 16, 10


def _gt(t):
    raw = np.full((H, W), 1, np.uint8)  # left half raw 1 = train id 0
    raw[:, W // 2 :] = 2  # right half raw 2 = train id 1
    raw[0, :] = 0  # top row "others" (ignored in mIoU, kept in mVC)
    raw[-1, -1] = 255 if t % 2 else 1  # one flickering GT pixel
    return raw


def make_root(tmp_path, videos=("1_aaa", "2_b_c-d")):
    root = tmp_path / "VSPW"
    (root / "data").mkdir(parents=True)
    (root / "label_num_dic_final.json").write_text(json.dumps(CLASSES))
    (root / "val.txt").write_text("".join(v + "\n" for v in videos))
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3)).astype(np.uint8), (3, 3), 1)
    for v in videos:
        for sub in ("origin", "mask"):
            (root / "data" / v / sub).mkdir(parents=True)
        for t in range(N):
            stem = f"{377 + t:08d}"
            cv2.imwrite(str(root / "data" / v / "origin" / f"{stem}.jpg"), frame)
            cv2.imwrite(str(root / "data" / v / "mask" / f"{stem}.png"), _gt(t))
    return root


def write_preds(tmp_path, videos=("1_aaa", "2_b_c-d"), value=0):
    pred = tmp_path / "pred"
    for v in videos:
        (pred / v).mkdir(parents=True, exist_ok=True)
        for t in range(N):
            cv2.imwrite(str(pred / v / f"{377 + t:08d}.png"), np.full((H, W), value, np.uint8))
    return pred


def test_constant_prediction_hand_computed(tmp_path):
    root = make_root(tmp_path)
    pred = write_preds(tmp_path, value=0)
    r = score_prediction_dir(root, pred, tc_videos=1)
    # valid pixels: rows 1..H-1; left half (+/- the flickering corner) is class 0, right half class 1.
    # Prediction 0 everywhere: IoU(0) = |left| / |all valid|, IoU(1) = 0.
    rows = H - 1
    valid_left, valid_right_even, valid_right_odd = (
        rows * W // 2,
        rows * W // 2 - 1,
        rows * W // 2 - 1,
    )
    left_total = 2 * N * valid_left + N * 1  # the corner is raw 1 (class 0) on even frames
    all_valid = 2 * N * (valid_left + valid_right_even) + N * 1
    assert valid_right_even == valid_right_odd
    assert r["miou"] == pytest.approx((left_total / all_valid + 0.0) / 2)
    assert r["pixel_acc"] == pytest.approx(left_total / all_valid)
    assert r["miou_all_classes"] == pytest.approx(r["miou"])  # no class predicted outside GT
    # constant prediction: every GT-constant pixel is also prediction-constant
    assert r["mvc8"] == 1.0 and r["mvc16"] is not None and math.isnan(r["mvc16"])  # N=10 <= 16
    assert r["mvc_windows"] == {"mvc8": 2 * (N - 8), "mvc16": 0}
    # identical frames: DIS flow ~ 0; constant prediction 0, bottom row falls out and reads 0
    assert r["tc"] == pytest.approx(1.0)
    assert r["tc_method"] == "TC-DIS" and r["tc_videos"] == 1 and r["tc_pairs"] == N - 1
    assert r["videos"] == 2 and r["frames"] == 2 * N and r["missing_predictions"] == 0
    assert r["per_class"][0] == {
        "id": 0,
        "name": "wall",
        "iou": pytest.approx(left_total / all_valid),
        "acc": 1.0,
        "gt_pixels": left_total,
    }
    assert set(r["per_video"]["1_aaa"]) == {"miou", "mvc8", "mvc16", "frames", "tc"}
    assert "tc" not in r["per_video"]["2_b_c-d"]
    table = format_table(r)
    assert "mIoU (VSPW: classes in GT)" in table and "TC-DIS" in table


def test_workers_give_identical_numbers(tmp_path):
    root = make_root(tmp_path)
    pred = tmp_path / "pred"
    rng = np.random.default_rng(5)
    for v in ("1_aaa", "2_b_c-d"):
        (pred / v).mkdir(parents=True)
        for t in range(N):
            p = np.where(rng.random((H, W)) < 0.2, 1, 0).astype(np.uint8)
            cv2.imwrite(str(pred / v / f"{377 + t:08d}.png"), p)
    a = score_prediction_dir(root, pred, tc=False, windows=(2, 4))
    b = score_prediction_dir(root, pred, tc=False, windows=(2, 4), num_workers=2)
    for key in ("miou", "pixel_acc", "mvc2", "mvc4"):
        assert a[key] == b[key]
    assert a["per_video"] == b["per_video"] and a["tc"] is None


def test_scoring_does_not_import_torch(tmp_path):
    """A scoring worker unpickles its job (a `VSPWVideo`) and scores a video, and the scoring
    process indexes and scores the split, without importing torch (that import alone costs ~2 s,
    more than scoring a 60-frame 480p video)."""
    import pickle
    import subprocess
    import sys

    from vidseg.data.layouts import load_videos, split_names

    root = make_root(tmp_path)
    pred = tmp_path / "pred"
    for t in range(N):
        (pred / "1_aaa").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(pred / "1_aaa" / f"{377 + t:08d}.png"), np.zeros((H, W), np.uint8))
    videos, _ = load_videos(str(root), "vspw", split_names(str(root), "vspw", "val"), "refuse")
    config = dict(
        num_classes=4, class_names=["wall", "floor", "sky", "tree"], windows=(2,), tc=False
    )
    job = (videos[0], str(pred), False, False, "vspw", 0, config)  # a VSPWVideo
    (tmp_path / "job.pkl").write_bytes(pickle.dumps(job))
    worker = (
        "import pickle, sys; from vidseg.metrics.scorer import _worker; "
        f"state = _worker(pickle.load(open({str(tmp_path / 'job.pkl')!r}, 'rb'))); "
        "print('torch' in sys.modules, bool(state))"
    )
    whole = (
        "import sys; from vidseg.metrics.scorer import score_prediction_dir as s; "
        f"r = s({str(root)!r}, {str(pred)!r}, tc=False, allow_missing=True, num_workers=0); "
        "print('torch' in sys.modules, r['miou'] >= 0)"
    )
    for code in (worker, whole):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["False", "True"]


def test_bad_inputs_raise_one_clear_error(tmp_path):
    root = make_root(tmp_path)
    pred = write_preds(tmp_path, videos=("1_aaa",))
    with pytest.raises(ValueError, match=r"2_b_c-d/: prediction folder missing \(10 frames\)"):
        score_prediction_dir(root, pred, tc=False)
    r = score_prediction_dir(root, pred, tc=False, allow_missing=True)
    assert r["missing_predictions"] == N and r["frames"] == N
    write_preds(tmp_path, videos=("2_b_c-d",))
    (pred / "2_b_c-d" / "00000380.png").unlink()
    with pytest.raises(ValueError, match=r"1 prediction file\(s\) missing.*00000380.png: missing"):
        score_prediction_dir(root, pred, tc=False)
    cv2.imwrite(str(pred / "2_b_c-d" / "00000380.png"), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match=r"00000380.png: 8-bit RGB PNG"):
        score_prediction_dir(root, pred, tc=False)
    cv2.imwrite(str(pred / "2_b_c-d" / "00000380.png"), np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError, match=r"00000380.png: size 16x13 \(WxH\) but mask"):
        score_prediction_dir(root, pred, tc=False)
    cv2.imwrite(str(pred / "2_b_c-d" / "00000380.png"), np.full((H, W), 9, np.uint8))
    with pytest.raises(ValueError, match=r"values \[9\] > 3"):
        score_prediction_dir(root, pred, tc=False)
    cv2.imwrite(str(pred / "2_b_c-d" / "00000380.png"), np.zeros((H, W), np.uint8))
    bad_mask = _gt(0)
    bad_mask[2, 2] = 130
    cv2.imwrite(str(root / "data" / "1_aaa" / "mask" / "00000379.png"), bad_mask)
    with pytest.raises(ValueError, match=r"00000379.png.*raw values \[130\]"):
        score_prediction_dir(root, pred, tc=False)


def test_palette_png_is_read_as_indices(tmp_path):
    from PIL import Image

    from vidseg.metrics.scorer import read_prediction

    im = Image.fromarray(np.array([[0, 3], [2, 1]], np.uint8), mode="P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * (252 * 3))
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_prediction(str(tmp_path / "p.png")), [[0, 3], [2, 1]])


def test_score_cli_end_to_end(tmp_path, capsys):
    root = make_root(tmp_path)
    pred = write_preds(tmp_path, value=1)
    out = tmp_path / "m.json"
    rc = main(
        [
            "score",
            "--data",
            str(root),
            "--pred",
            str(pred),
            "--out",
            str(out),
            "--tc-videos",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mVC_8" in printed and "%" in printed
    m = json.loads(out.read_text())
    for key in (
        "pixel_acc",
        "mean_class_acc",
        "miou",
        "miou_all_classes",
        "mvc8",
        "mvc16",
        "tc",
        "per_class",
        "per_video",
    ):
        assert key in m
    assert m["mvc16"] is None and m["mvc8"] == 1.0 and 0 < m["miou"] < 0.5
    assert m["per_class"][1]["name"] == "floor"
    # bad input: a one-line error, exit code 2, no traceback
    (pred / "1_aaa" / "00000377.png").unlink()
    rc = main(["score", "--data", str(root), "--pred", str(pred), "--no-tc", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "00000377.png: missing" in err
    assert "Traceback" not in err


def _same(a, b) -> bool:
    """Equal numbers and structures, NaN equal to NaN (mVC_16 of 10-frame videos)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _random_preds(tmp_path, videos=("1_aaa", "2_b_c-d")):
    pred = tmp_path / "pred"
    rng = np.random.default_rng(5)
    for v in videos:
        (pred / v).mkdir(parents=True)
        for t in range(N):
            p = np.where(rng.random((H, W)) < 0.3, 1, 0).astype(np.uint8)
            p[: H // 2, : W // 4] = 2
            cv2.imwrite(str(pred / v / f"{377 + t:08d}.png"), p)
    return pred


def _as_layout(pred, out, fmt, dst):
    """The same predictions under the stems of the converted layout, frame by frame."""
    from vidseg.data.layouts import load_videos, split_names

    videos, _ = load_videos(str(out), fmt, split_names(str(out), fmt, "val"))
    for video in videos:
        (dst / video.name).mkdir(parents=True)
        for t, stem in enumerate(video.stems):
            (dst / video.name / f"{stem}.png").write_bytes(
                (pred / video.name / f"{377 + t:08d}.png").read_bytes()
            )
    return dst


@pytest.mark.parametrize("fmt", ["frames", "video"])
def test_converted_layouts_score_as_the_vspw_original(tmp_path, fmt, capsys):
    from vidseg.data.convert_layout import convert_vspw

    root = make_root(tmp_path)
    pred = _random_preds(tmp_path)
    vspw = score_prediction_dir(root, pred, tc_videos=1)
    out = tmp_path / fmt
    convert_vspw(root, out, fmt, splits=("val",))
    layout_pred = _as_layout(pred, out, fmt, tmp_path / f"pred_{fmt}")
    got = score_prediction_dir(out, layout_pred, tc_videos=1)  # the layout is judged: auto
    assert vspw["format"] == "vspw" and got["format"] == fmt
    assert [c["name"] for c in got["per_class"]] == ["wall", "floor", "sky", "tree"]  # classes.txt
    for key in (
        "miou",
        "miou_all_classes",
        "pixel_acc",
        "mean_class_acc",
        "mvc8",
        "mvc16",
        "mvc_windows",
        "per_class",
        "frames",
        "videos",
        "tc_pairs",
    ):
        assert _same(got[key], vspw[key]), key
    assert 0 < got["miou"] < 1 and got["tc_pairs"] == N - 1
    if fmt == "frames":  # the same JPEG bytes: the flow and TC are the same too
        assert _same(got["per_video"], vspw["per_video"]) and got["tc"] == vspw["tc"]
    else:  # frames decoded from H.264 (crf 12) move the DIS flow a little
        assert got["tc"] == pytest.approx(vspw["tc"], abs=0.02)
    # the command line: --format names the layout; another layout is refused in one line
    assert (
        main(
            [
                "score",
                "--data",
                str(out),
                "--pred",
                str(layout_pred),
                "--format",
                fmt,
                "--no-tc",
                "--quiet",
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == pytest.approx(vspw["miou"])
    capsys.readouterr()
    other = "video" if fmt == "frames" else "frames"
    assert (
        main(
            [
                "score",
                "--data",
                str(out),
                "--pred",
                str(layout_pred),
                "--format",
                other,
                "--no-tc",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(out) in err


def test_train_id_masks_score_as_vspw_masks(tmp_path):
    from vidseg.data.convert_layout import convert_vspw
    from vidseg.data.image_files import to_train_ids

    root = make_root(tmp_path)
    pred = _random_preds(tmp_path)
    vspw = score_prediction_dir(root, pred, tc=False)
    out = tmp_path / "frames"
    convert_vspw(root, out, "frames", splits=("val",))
    for mask in out.glob("*/masks/*.png"):
        cv2.imwrite(str(mask), to_train_ids(cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)))
    layout_pred = _as_layout(pred, out, "frames", tmp_path / "pred_frames")
    got = score_prediction_dir(out, layout_pred, tc=False, label_format="train_ids")
    for key in ("miou", "pixel_acc", "mvc8", "per_class"):
        assert _same(got[key], vspw[key]), key
    # read as VSPW values, train id 0 would be "others" (ignored): the option matters
    assert score_prediction_dir(out, layout_pred, tc=False)["miou"] != got["miou"]
