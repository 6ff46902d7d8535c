"""mVC_C and TC against hand-computed cases and a brute-force version of the official procedure."""

import math

import numpy as np
import pytest
import torch

from vidseg.metrics.consistency import TemporalConsistency, VideoConsistency, warp_nearest_official


def _official_mvc(videos, c, include_last=False):
    """Direct transcription of the procedure in vspw-metrics.md section 3 (windows re-built)."""
    scores = []
    for gts, preds in videos:
        n = len(gts)
        if n < c or (n == c and not include_last):
            continue
        for i in range(n - c + (1 if include_last else 0)):
            g_same = np.ones(gts[0].shape, bool)
            p_same = np.ones(gts[0].shape, bool)
            for j in range(1, c):
                g_same &= gts[i] == gts[i + j]
                p_same &= preds[i] == preds[i + j]
            n_const = g_same.sum()
            scores.append((g_same & p_same).sum() / n_const if n_const else float("nan"))
    return float(np.nanmean(scores)) if scores and not np.isnan(scores).all() else float("nan")


def _run(videos, windows, include_last=False):
    vc = VideoConsistency(windows, include_last_window=include_last)
    for k, (gts, preds) in enumerate(videos):
        vc.start_video(f"v{k}")
        for g, p in zip(gts, preds):
            vc.add(g, p)
        vc.end_video()
    return vc


TOY_G = [np.array([x], np.uint8) for x in ([1, 1, 2, 2], [1, 1, 2, 3], [1, 2, 2, 3], [1, 2, 2, 3])]
TOY_P = [np.array([x], np.uint8) for x in ([5, 5, 6, 6], [5, 7, 6, 6], [5, 7, 6, 6], [0, 7, 6, 6])]


def test_toy_mvc2_official_and_last_window():
    assert _run([(TOY_G, TOY_P)], (2,)).compute()[2] == pytest.approx(0.8333333, abs=1e-6)
    vc = _run([(TOY_G, TOY_P)], (2,), include_last=True)
    assert vc.compute()[2] == pytest.approx(0.8055556, abs=1e-6)  # (2/3 + 1 + 3/4) / 3
    assert vc.num_windows()[2] == 3


def test_constant_wrong_prediction_is_fully_consistent_and_flipping_is_zero():
    rng = np.random.default_rng(1)
    gts = [np.tile(rng.integers(0, 5, (1, 6)), (4, 1)).astype(np.uint8)] * 10
    const = [np.full((4, 6), 9, np.uint8)] * 10
    flip = [np.full((4, 6), t % 2, np.uint8) for t in range(10)]
    assert _run([(gts, const)], (2, 8)).compute() == {2: 1.0, 8: 1.0}
    assert _run([(gts, flip)], (2, 8)).compute() == {2: 0.0, 8: 0.0}


def test_matches_brute_force_on_random_videos_including_short_ones():
    rng = np.random.default_rng(2)
    videos = []
    for n in (3, 4, 5, 9, 12):  # some videos are too short for some windows
        g = rng.integers(0, 3, (5, 7)).astype(np.uint8)
        p = rng.integers(0, 3, (5, 7)).astype(np.uint8)
        gts, preds = [], []
        for _ in range(n):
            g = np.where(rng.random(g.shape) < 0.1, rng.integers(0, 3, g.shape), g).astype(np.uint8)
            p = np.where(rng.random(p.shape) < 0.15, rng.integers(0, 3, p.shape), p).astype(
                np.uint8
            )
            g[0, 0] = 255  # void stays constant and counts (raw equality, no ignore)
            gts.append(g.copy())
            preds.append(p.copy())
        videos.append((gts, preds))
    for last in (False, True):
        got = _run(videos, (2, 4, 5), include_last=last).compute()
        for c in (2, 4, 5):
            assert got[c] == _official_mvc(videos, c, include_last=last)  # identical floats


def test_video_of_exactly_c_frames_is_skipped_and_missing_frame_breaks_windows():
    g = [np.zeros((2, 2), np.uint8)] * 3
    assert math.isnan(_run([(g, g)], (3,)).compute()[3])
    assert _run([(g, g)], (3,), include_last=True).compute()[3] == 1.0
    vc = VideoConsistency((2,))
    vc.start_video("v")
    for t in range(5):
        if t == 2:
            vc.skip()
        else:
            vc.add(g[0], g[0])
    vc.end_video()
    assert vc.num_windows()[2] == 1  # (0,1) counts, (3,4) is the dropped last window


def test_warp_matches_torch_grid_sample_as_in_official_flowwarp():
    rng = np.random.default_rng(3)
    h, w = 12, 17
    pred = rng.integers(1, 9, (h, w)).astype(np.uint8)
    flow = rng.normal(0, 4, (h, w, 2)).astype(np.float32)
    flow[0, :3] = 0.5  # half-pixel ties
    xx, yy = np.meshgrid(np.arange(w), np.arange(h))
    v = (
        torch.from_numpy(np.stack([xx, yy]).astype(np.float32))[None]
        + torch.from_numpy(flow).permute(2, 0, 1)[None]
    )
    v[:, 0] = 2.0 * v[:, 0].clone() / max(w - 1, 1) - 1.0
    v[:, 1] = 2.0 * v[:, 1].clone() / max(h - 1, 1) - 1.0
    ref = torch.nn.functional.grid_sample(
        torch.from_numpy(pred)[None, None].float(),
        v.permute(0, 2, 3, 1),
        mode="nearest",
        align_corners=False,
    )
    np.testing.assert_array_equal(
        warp_nearest_official(pred, flow), ref[0, 0].numpy().astype(np.uint8)
    )


def test_tc_identical_constant_predictions_zero_flow_480x853():
    tc = TemporalConsistency(124, flow=lambda a, b: np.zeros(a.shape[:2] + (2,), np.float32))
    rgb = np.zeros((480, 853, 3), np.uint8)
    pred = np.full((480, 853), 7, np.uint8)
    tc.start_video("v")
    tc.add(rgb, pred)
    tc.add(rgb, pred)
    assert tc.end_video() == pytest.approx(479 / 480)
    assert tc.compute() == pytest.approx(0.997917, abs=1e-6)
    assert tc.method == "TC-custom" and tc.pairs == 1


def _translation_video(n=4, h=96, w=128, d=(3, 2)):
    rng = np.random.default_rng(4)
    import cv2

    big_h, big_w = h + n * abs(d[1]) + 8, w + n * abs(d[0]) + 8
    tex = cv2.GaussianBlur(rng.integers(0, 256, (big_h, big_w)).astype(np.float32), (0, 0), 2.0)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    labels = (
        rng.integers(0, 6, (big_h // 16 + 1, big_w // 16 + 1))
        .repeat(16, 0)
        .repeat(16, 1)[:big_h, :big_w]
    ).astype(np.uint8)
    oy, ox = 4 + n * d[1], 4 + n * d[0]
    frames, preds = [], []
    for t in range(n):  # content moves by +d per frame: flow t -> t+1 is +d everywhere
        y, x = oy - t * d[1], ox - t * d[0]
        frames.append(np.repeat(tex[y : y + h, x : x + w, None], 3, axis=2))
        preds.append(labels[y : y + h, x : x + w].copy())
    return frames, preds


def _tc(flow, frames, preds):
    tc = TemporalConsistency(6, flow=flow)
    tc.start_video("v")
    for f, p in zip(frames, preds):
        tc.add(f, p)
    tc.end_video()
    return tc.compute()


def test_tc_dis_close_to_true_flow_on_translation():
    frames, preds = _translation_video()
    true = _tc(
        lambda a, b: np.broadcast_to(np.float32([3, 2]), a.shape[:2] + (2,)).copy(), frames, preds
    )
    dis = _tc("dis", frames, preds)
    zero = _tc(lambda a, b: np.zeros(a.shape[:2] + (2,), np.float32), frames, preds)
    assert abs(dis - true) < 0.01
    assert true > zero + 0.02  # the flow matters for this video


def test_raft_requires_weights_file(tmp_path):
    with pytest.raises(ValueError, match="weights"):
        TemporalConsistency(124, flow="raft")
    with pytest.raises(FileNotFoundError, match="not found"):
        TemporalConsistency(124, flow="raft", raft_weights=str(tmp_path / "nope.pth"))


def test_raft_backend_loads_local_weights_and_returns_cropped_flow(tmp_path):
    from torchvision.models.optical_flow import raft_large

    from vidseg.metrics.flow import build_flow

    torch.manual_seed(0)
    weights = tmp_path / "raft.pth"
    torch.save(
        {"module." + k: v for k, v in raft_large(weights=None).state_dict().items()}, weights
    )
    fn, method = build_flow("raft", raft_weights=str(weights), device="cpu")
    fn.iters = 2  # random weights: only shapes and plumbing are checked here
    rgb = np.random.default_rng(0).integers(0, 256, (125, 130, 3)).astype(np.uint8)
    flow = fn(rgb, rgb)
    assert method == "TC-RAFT" and flow.shape == (125, 130, 2) and flow.dtype == np.float32
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a torchvision raft_large state dict"):
        build_flow("raft", raft_weights=str(tmp_path / "other.pth"))
