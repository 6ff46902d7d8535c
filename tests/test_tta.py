"""Test-time protocol (engine/tta.py): sliding windows, scales, flip, per-window causal state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.config import ConfigError, EvalConfig, config_to_dict, load_config
from vidseg.engine.predict import predict_scores, segment_frame, upsample_argmax
from vidseg.engine.tta import TTASettings, TTAState, count_map, frame_scores, window_grid

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")
SS = 32  # model input short side in the real-model tests (small = fast)


# --------------------------------------------------------------------------- a fake model


class FakeState:
    """What FakeModel remembers of one stream: frames seen and the previous crop's mean."""

    def __init__(self, video_id=None):
        self.video_id = video_id
        self.frames = 0
        self.prev_mean = None
        self.resets = 0
        self.crops = []

    def nbytes(self) -> int:
        return 4


class FakeModel:
    """`step()` with known logits on the input grid (K = 2), so upsampling to the crop is exact.

    channel 0 = first image channel (per pixel); channel 1 = the mean of the first channel of the
    previous frame seen BY THIS STATE (its own crop), or of the current crop on a first frame,
    plus `ramp` times the column index (a term that is not flip-equivariant).
    """

    def __init__(self, ramp: float = 0.0):
        self.ramp = ramp
        self.calls = 0

    def parameters(self):
        return iter(())

    def step(self, frame, state=None, video_id=None, shot_cut_threshold=None):
        self.calls += 1
        if state is None or (video_id is not None and video_id != state.video_id):
            state = FakeState(video_id)
        v = frame[:, 0]
        hist = v.mean() if state.prev_mean is None else state.prev_mean
        cols = torch.arange(frame.shape[-1], dtype=frame.dtype).expand_as(v)
        logits = torch.stack([v, hist + self.ramp * cols + 0 * v], 1)
        state.prev_mean = v.mean()
        state.frames += 1
        state.crops.append(tuple(frame.shape[-2:]))
        return logits, state


def _softmax2(a, b):
    """softmax over two numpy arrays: probabilities of the first and the second."""
    m = np.maximum(a, b)
    ea, eb = np.exp(a - m), np.exp(b - m)
    return ea / (ea + eb), eb / (ea + eb)


WINDOWS_5x9 = [(0, 4, 0, 4), (0, 4, 3, 7), (0, 4, 5, 9), (1, 5, 0, 4), (1, 5, 3, 7), (1, 5, 5, 9)]
SLIDE_4x3 = TTASettings(mode="slide", crop_size=(4, 4), stride=(3, 3))


def test_window_grid_5x9_crop4_stride3():
    # n_h = (5 - 4 + 2) // 3 + 1 = 2, n_w = (9 - 4 + 2) // 3 + 1 = 3; the last row/column is
    # pushed back inside the frame (y 3..7 -> 1..5, x 6..10 -> 5..9)
    assert window_grid(5, 9, (4, 4), (3, 3)) == WINDOWS_5x9
    assert count_map(5, 9, WINDOWS_5x9).tolist() == [
        [1, 1, 1, 2, 1, 2, 2, 1, 1],
        [2, 2, 2, 4, 2, 4, 4, 2, 2],
        [2, 2, 2, 4, 2, 4, 4, 2, 2],
        [2, 2, 2, 4, 2, 4, 4, 2, 2],
        [1, 1, 1, 2, 1, 2, 2, 1, 1],
    ]
    assert window_grid(3, 3, (4, 4), (3, 3)) == [(0, 3, 0, 3)]  # smaller than the crop
    # the authors' VSPW setting on a 512 x 910 frame: 1 x 3 windows, the last flush right
    assert window_grid(512, 910, (512, 512), (341, 341)) == [
        (0, 512, 0, 512),
        (0, 512, 341, 853),
        (0, 512, 398, 910),
    ]


def _frame(seed, h=5, w=9):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _slide_by_hand(v, prev=None):
    """Averaged probabilities of FakeModel on channel-0 image `v` (numpy (H, W)), by loops."""
    h, w = v.shape
    acc, cnt = np.zeros((2, h, w)), np.zeros((h, w))
    for k, (y1, y2, x1, x2) in enumerate(WINDOWS_5x9):
        crop = v[y1:y2, x1:x2]
        hist = crop.mean() if prev is None else prev[k]
        p0, p1 = _softmax2(crop, np.full_like(crop, hist))
        acc[0, y1:y2, x1:x2] += p0
        acc[1, y1:y2, x1:x2] += p1
        cnt[y1:y2, x1:x2] += 1
    return acc / cnt


def test_slide_averages_window_probabilities_by_hand():
    model, frame = FakeModel(), _frame(0)
    scores, are_probs, state = frame_scores(model, frame, None, SLIDE_4x3, video_id="v")
    assert are_probs and scores.shape == (1, 2, 5, 9)
    expected = _slide_by_hand(frame[0, 0].double().numpy())
    np.testing.assert_allclose(scores[0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(scores[0].sum(0).numpy(), 1.0, atol=1e-6)
    assert sorted(state.streams) == [(1.0, False, i) for i in range(6)]
    assert [state.streams[(1.0, False, i)].crops for i in range(6)] == [[(4, 4)]] * 6


def test_each_window_keeps_its_own_history_across_frames():
    model, f1, f2 = FakeModel(), _frame(1), _frame(2)
    _, _, state = frame_scores(model, f1, None, SLIDE_4x3, video_id="v")
    scores, _, state = frame_scores(model, f2, state, SLIDE_4x3, video_id="v")
    v1 = f1[0, 0].double().numpy()
    prev = [v1[y1:y2, x1:x2].mean() for y1, y2, x1, x2 in WINDOWS_5x9]  # window k's own past
    np.testing.assert_allclose(
        scores[0].numpy(), _slide_by_hand(f2[0, 0].double().numpy(), prev), atol=1e-6
    )
    assert all(s.frames == 2 for s in state.streams.values()) and state.frame_index == 2
    # a new video, a new frame size and no_history each start every window afresh
    _, _, state = frame_scores(model, f1, state, SLIDE_4x3, video_id="w")
    assert all(s.frames == 1 for s in state.streams.values()) and state.resets == 0
    _, _, state = frame_scores(model, _frame(3, 6, 9), state, SLIDE_4x3, video_id="w")
    assert all(s.frames == 1 for s in state.streams.values()) and state.resets == 1
    assert state.input_size == (6, 9)
    _, _, fresh = frame_scores(model, _frame(3, 6, 9), state, SLIDE_4x3, no_history=True)
    assert all(s.frames == 1 for s in fresh.streams.values())


def test_shot_cut_resets_every_window_together():
    model = FakeModel()
    _, _, state = frame_scores(model, _frame(1), None, SLIDE_4x3, shot_cut_threshold=0.5)
    _, _, state = frame_scores(model, _frame(1) + 0.01, state, SLIDE_4x3, shot_cut_threshold=0.5)
    assert state.resets == 0 and all(s.frames == 2 for s in state.streams.values())
    _, _, state = frame_scores(model, _frame(1) + 5.0, state, SLIDE_4x3, shot_cut_threshold=0.5)
    assert state.resets == 1 and all(s.frames == 1 for s in state.streams.values())


def test_flip_is_flipped_back():
    model, frame = FakeModel(ramp=0.3), _frame(4)
    settings = TTASettings(flip=True)
    scores, are_probs, state = frame_scores(model, frame, None, settings)
    assert are_probs and sorted(state.streams) == [(1.0, False, 0), (1.0, True, 0)]
    v = frame[0, 0].double().numpy()
    cols = np.arange(9)[None].repeat(5, 0)
    plain = np.stack(_softmax2(v, v.mean() + 0.3 * cols))
    vf = v[:, ::-1]
    mirrored = np.stack(_softmax2(vf, vf.mean() + 0.3 * cols))[:, :, ::-1]  # flipped back
    np.testing.assert_allclose(scores[0].numpy(), (plain + mirrored) / 2, atol=1e-6)
    assert not np.allclose(plain, mirrored, atol=1e-3)  # the flip actually mattered


def test_scales_are_averaged_at_the_frame_size():
    model, frame = FakeModel(), _frame(5, 8, 12)
    scores, _, state = frame_scores(model, frame, None, TTASettings(scales=(0.5, 1.0)))
    assert sorted(state.streams) == [(0.5, False, 0), (1.0, False, 0)]
    assert state.streams[(0.5, False, 0)].crops == [(4, 6)]

    def probs(x):
        v = x[:, 0]
        return torch.stack([v, v.mean() + 0 * v], 1).softmax(1)

    half = F.interpolate(frame, scale_factor=0.5, mode="bilinear", align_corners=False)
    expected = (
        probs(frame)
        + F.interpolate(probs(half), size=(8, 12), mode="bilinear", align_corners=False)
    ) / 2
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)


def test_slide_scales_and_flip_together_cover_every_view():
    model = FakeModel(ramp=0.1)
    settings = TTASettings(
        mode="slide", crop_size=(4, 4), stride=(3, 3), scales=(1.0, 2.0), flip=True
    )
    scores, _, state = frame_scores(model, _frame(6), None, settings)
    n2 = len(window_grid(10, 18, (4, 4), (3, 3)))
    assert len(state.streams) == 2 * (6 + n2) and model.calls == 2 * (6 + n2)
    np.testing.assert_allclose(scores[0].sum(0).numpy(), 1.0, atol=1e-6)
    assert scores.shape == (1, 2, 5, 9)


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def tiny():
    from vidseg.engine.inference import load_inference_model

    return load_inference_model(TINY, random_init=True)


def _rgb(k, h=40, w=60):
    g = np.random.default_rng(k)
    base = g.integers(0, 255, (h + 8, w + 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(base[k % 8 : k % 8 + h, k % 8 : k % 8 + w])


def test_whole_single_scale_is_the_old_path_bit_for_bit(tiny):
    from vidseg.data.transforms import prepare_frame

    cfg, model = tiny
    cfg = load_config(TINY, [f"data.short_side={SS}"])
    old_state = new_state = api_state = legacy = None
    for k in range(3):
        rgb = _rgb(k)
        x = prepare_frame(rgb, SS, cfg.data.mean, cfg.data.std)
        logits, old_state = model.step(x, old_state, video_id="v")  # the path before tta.py
        old = upsample_argmax(logits, (30, 45)).to(torch.uint8).numpy()
        new, new_state = segment_frame(
            model,
            rgb,
            new_state,
            SS,
            cfg.data.mean,
            cfg.data.std,
            out_size=(30, 45),
            video_id="v",
            tta=cfg.eval,
        )
        assert np.array_equal(old, new), k
        assert isinstance(new_state, TTAState)
        plain, legacy = segment_frame(
            model, rgb, legacy, SS, cfg.data.mean, cfg.data.std, out_size=(30, 45), video_id="v"
        )
        assert np.array_equal(old, plain), k
        scores, api_state = predict_scores(model, rgb, api_state, cfg, (30, 45), video_id="v")
        ref = F.interpolate(logits, size=(30, 45), mode="bilinear", align_corners=False)[0]
        assert scores.dtype == torch.float32 and torch.equal(scores, ref), k
    assert new_state.nbytes() == old_state.nbytes() and new_state.frame_index == 3
    # the state is the TTAState segment_frame returned; a model's bare StreamState is refused
    _, st = model.step(prepare_frame(_rgb(0), SS, cfg.data.mean, cfg.data.std), None)
    for settings in (None, TTASettings(flip=True)):
        with pytest.raises(ValueError, match="TTAState"):
            segment_frame(model, _rgb(1), st, SS, cfg.data.mean, cfg.data.std, tta=settings)


def test_predict_scores_are_probabilities_when_averaged(tiny):
    cfg, model = tiny
    settings = TTASettings(mode="slide", crop_size=(SS, SS), stride=(24, 24), flip=True)
    scores, states = predict_scores(
        model, _rgb(0), None, settings, short_side=SS, mean=cfg.data.mean, std=cfg.data.std
    )
    assert scores.shape == (cfg.model.num_classes, 40, 60) and scores.dtype == torch.float32
    torch.testing.assert_close(scores.sum(0), torch.ones(40, 60))
    # prepared frame 32 x 48: 1 x 2 windows, each with its own state, for each flip
    assert len(states.streams) == 4 and states.frame_index == 1
    labels, _ = segment_frame(model, _rgb(0), None, SS, cfg.data.mean, cfg.data.std, tta=settings)
    assert np.array_equal(labels, scores.argmax(0).numpy())


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["eval.mode=slide"], "eval.crop_size"),
        (["eval.mode=slide", "eval.crop_size=[64, 64]"], "eval.stride"),
        (["eval.mode=slide", "eval.crop_size=[64, 64]", "eval.stride=[65, 32]"], "eval.stride"),
        (["eval.mode=slide", "eval.crop_size=[0, 64]", "eval.stride=[32, 32]"], "eval.crop_size"),
        (["eval.mode=slide", "eval.crop_size=[64]", "eval.stride=[32, 32]"], "eval.crop_size"),
        (["eval.mode=sliding"], "eval.mode"),
        (["eval.scales=[0.5, -1.0]"], "eval.scales"),
        (["model.hmsa.flip=true"], "model.hmsa.flip"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, overrides)


def test_good_settings_load_and_round_trip():
    cfg = load_config(
        TINY,
        [
            "eval.mode=slide",
            "eval.crop_size=[512, 512]",
            "eval.stride=[341, 341]",
            "eval.scales=[0.75, 1.0, 1.25]",
            "eval.flip=true",
        ],
    )
    settings = TTASettings.from_config(cfg)
    assert settings == TTASettings("slide", (512, 512), (341, 341), (0.75, 1.0, 1.25), True)
    assert not settings.plain and TTASettings.from_config(EvalConfig()).plain
    with pytest.raises(ValueError, match="stride"):
        TTASettings(mode="slide", crop_size=(4, 4), stride=(5, 4))


def test_checkpoint_with_the_removed_hmsa_flip_key_still_loads(tmp_path):
    from vidseg.engine.inference import load_inference_model
    from vidseg.models.build import build_model

    cfg = load_config(TINY)
    tree = config_to_dict(cfg)
    tree["model"]["hmsa"]["flip"] = False  # what checkpoints written before the removal hold
    path = tmp_path / "old.pth"
    torch.save({"model": build_model(cfg).state_dict(), "config": tree}, path)
    loaded, _ = load_inference_model(None, path)
    assert not hasattr(loaded.model.hmsa, "flip")


# --------------------------------------------------------------------------- CLIs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from vidseg.data.synthetic import make_synthetic_vspw

    root = tmp_path_factory.mktemp("synth")
    make_synthetic_vspw(
        root,
        num_train=1,
        num_val=1,
        num_test=0,
        frames=2,
        height=48,
        width=80,
        seed=3,
        write_mp4=False,
    )
    return root


def _eval(dataset, out, *overrides):
    # one thread: the tiny model gains nothing from more, and a busy machine punishes them
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg",
            "eval",
            TINY,
            "--random-init",
            "--data",
            str(dataset),
            "--out",
            str(out),
            "--no-tc",
            "--set",
            f"data.short_side={SS}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ("eval.mode=slide", "eval.crop_size=[32,32]", "eval.stride=[24,24]"),
        ("eval.scales=[0.75,1.0,1.25]", "eval.flip=true"),
    ],
)
def test_vidseg_eval_runs_with_the_protocol(dataset, tmp_path, overrides):
    proc = _eval(dataset, tmp_path / "eval", *overrides)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["frames"] == 2 and 0.0 <= metrics["miou"] <= 1.0
    expected = load_config(TINY, list(overrides)).eval
    assert metrics["tta"] == {
        "mode": expected.mode,
        "crop_size": expected.crop_size,
        "stride": expected.stride,
        "scales": expected.scales,
        "flip": expected.flip,
    }
    assert len(list((tmp_path / "eval" / "pred").rglob("*.png"))) == 2


def test_vidseg_eval_bad_crop_is_one_line(dataset, tmp_path):
    proc = _eval(
        dataset,
        tmp_path / "eval",
        "eval.mode=slide",
        "eval.crop_size=[48,48]",
        "eval.stride=[64,32]",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "eval.stride" in proc.stderr


def test_stream_runner_uses_the_protocol(tiny, tmp_path):
    from vidseg.engine.stream import StreamRunner

    cfg, model = tiny
    cfg = load_config(TINY, ["eval.mode=slide", "eval.crop_size=[32,32]", "eval.stride=[24,24]"])
    runner = StreamRunner(model, cfg, short_side=SS)
    state = None
    for k in range(2):
        labels, state = runner.predict(_rgb(k), state)
        assert labels.shape == (40, 60) and labels.dtype == np.uint8
    assert len(state.streams) == 2 and state.nbytes() > 0 and state.resets == 0
    scores, _ = predict_scores(model, _rgb(0), None, cfg, short_side=SS)
    labels, _ = runner.predict(_rgb(0), None)
    assert np.array_equal(labels, scores.argmax(0).numpy())
