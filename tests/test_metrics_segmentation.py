"""ConfusionMatrix: the VSPW toy case, exact merging, bad input."""

import math

import numpy as np
import pytest

from vidseg.metrics.segmentation import ConfusionMatrix


def test_vspw_toy_case_miou_and_mmseg_variant():
    # vspw-metrics.md section 2: GT [0,0,1,255], pred [0,2,1,2]
    cm = ConfusionMatrix(num_classes=124)
    cm.update(np.array([[0, 0, 1, 255]], np.uint8), np.array([[0, 2, 1, 2]], np.uint8))
    r = cm.compute()
    assert r["iou"][0] == pytest.approx(0.5)
    assert r["iou"][1] == pytest.approx(1.0)
    assert math.isnan(r["iou"][2])  # predicted but absent from GT
    assert r["miou"] == pytest.approx(0.75)
    assert r["miou_all_classes"] == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3
    assert r["pixel_acc"] == pytest.approx(2 / 3)
    assert r["mean_class_acc"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["gt_pixels"][:3] == [2, 1, 0]
    assert r["classes_present"] == 2


def test_merge_of_halves_equals_whole_and_state_roundtrip():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 6, (7, 9)).astype(np.uint8) for _ in range(6)]
    for g in gts:
        g[rng.random(g.shape) < 0.1] = 255
    preds = [rng.integers(0, 6, (7, 9)).astype(np.uint8) for _ in range(6)]
    whole, a, b = ConfusionMatrix(6), ConfusionMatrix(6), ConfusionMatrix(6)
    for i, (g, p) in enumerate(zip(gts, preds)):
        whole.update(g, p)
        (a if i < 3 else b).update(g, p)
    merged = ConfusionMatrix.from_state(a.state()).merge(ConfusionMatrix.from_state(b.state()))
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    assert merged.compute()["miou"] == whole.compute()["miou"]
    np.testing.assert_array_equal(merged.compute()["iou"], whole.compute()["iou"])
    # hand check against a direct count
    g = np.concatenate([x.ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    keep = g != 255
    assert whole.matrix[2, 3] == int(((g[keep] == 2) & (p[keep] == 3)).sum())
    assert whole.matrix.sum() == int(keep.sum())


def test_constant_wrong_prediction_scores_low():
    cm = ConfusionMatrix(4)
    gt = np.array([[0, 1], [2, 3]], np.uint8)
    cm.update(gt, np.full_like(gt, 3))
    r = cm.compute()
    assert r["miou"] == pytest.approx(0.25 / 4)  # only class 3 right: IoU 1/4
    assert r["pixel_acc"] == pytest.approx(0.25)


def test_ignored_pixels_may_hold_any_prediction_but_valid_ones_may_not():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[255, 1]], np.uint8), np.array([[200, 1]], np.uint8))
    assert cm.matrix.sum() == 1
    with pytest.raises(ValueError, match="prediction values \\[7\\]"):
        cm.update(np.array([[0, 1]], np.uint8), np.array([[7, 1]], np.uint8), name="x.png")
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="ground truth values \\[5\\]"):
        cm.update(np.array([[5]], np.uint8), np.array([[0]], np.uint8))


def test_empty_matrix_gives_nan():
    r = ConfusionMatrix(3).compute()
    assert (
        math.isnan(r["miou"]) and math.isnan(r["pixel_acc"]) and math.isnan(r["miou_all_classes"])
    )


def test_uint8_fast_path_equals_general_path_and_still_validates():
    rng = np.random.default_rng(7)
    g = rng.integers(0, 10, (31, 17)).astype(np.uint8)
    g[rng.random(g.shape) < 0.2] = 255
    p = rng.integers(0, 10, (31, 17)).astype(np.uint8)
    fast, slow = ConfusionMatrix(10), ConfusionMatrix(10)
    fast.update(g, p)
    slow.update(g.astype(np.int64), p.astype(np.int64))
    np.testing.assert_array_equal(fast.matrix, slow.matrix)
    p_bad_at_ignore = p.copy()
    p_bad_at_ignore[g == 255] = 200  # allowed: ignored pixels are not counted
    fast.update(g, p_bad_at_ignore)
    np.testing.assert_array_equal(fast.matrix, 2 * slow.matrix)
    g_bad = g.copy()
    g_bad[0, 0] = 12
    with pytest.raises(ValueError, match=r"ground truth values \[12\]"):
        fast.update(g_bad, p)
    np.testing.assert_array_equal(fast.matrix, 2 * slow.matrix)  # failed update adds nothing
