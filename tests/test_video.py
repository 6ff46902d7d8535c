"""Video-MCIBI++: streaming step() equals the offline clip path; one backbone pass per frame."""

import io
import logging

import pytest
import torch

from vidseg.config import load_config
from vidseg.models.build import build_model
from vidseg.models.video import pick_history

NUM_FRAMES = 20


def _model(history=2, iis=2, hmsa=False, extra=()):
    overrides = [
        f"model.history={history}",
        f"model.iis_stages={iis}",
        "model.num_classes=7",
        "model.channels=16",
        "model.key_channels=8",
        *extra,
    ]
    if hmsa:
        overrides += [
            "model.hmsa.enabled=true",
            "model.hmsa.scales=[0.5, 1.0]",
            "model.hmsa.channels=8",
        ]
    cfg = load_config("configs/synthetic/tiny.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    _randomise_memory(model)
    return model.eval()


def _randomise_memory(model):
    """A trained-looking memory, so that C_bi differs between classes."""
    mem = model.memory
    g = torch.Generator().manual_seed(1)
    mem.stats.copy_(
        torch.stack(
            [
                torch.randn(mem.stats.shape[0], generator=g),
                torch.rand(mem.stats.shape[0], generator=g) + 0.5,
            ],
            1,
        )
    )
    mem.seen.fill_(True)


def _video(n=NUM_FRAMES, size=(32, 48)):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(1, 3, size[0] + n, size[1] + n, generator=g)
    # a panning crop, so neighbouring frames are related like real video
    return [base[:, :, i : i + size[0], i : i + size[1]].clone() for i in range(n)]


def _offline(model, frames, n, history):
    idx = [max(n - k, 0) for k in range(history, -1, -1)]  # oldest first, start repeats frame 0
    clip = torch.stack([frames[i][0] for i in idx])[None]
    return model(clip, upsample=False)


@pytest.mark.parametrize(
    "history,iis,hmsa",
    [
        (0, 1, False),
        (1, 1, False),
        (2, 1, False),
        (0, 2, False),
        (2, 2, False),
        (2, 2, True),
        (1, 1, True),
    ],
)
def test_stream_equals_offline(history, iis, hmsa):
    model = _model(history, iis, hmsa)
    frames = _video()
    state = None
    for n, frame in enumerate(frames):
        stream_logits, state = model.step(frame, state, video_id="v")
        offline_logits = _offline(model, frames, n, history)
        torch.testing.assert_close(stream_logits, offline_logits, atol=1e-4, rtol=1e-4)
        assert torch.equal(stream_logits.argmax(1), offline_logits.argmax(1)), f"frame {n}"
    assert state.frame_index == NUM_FRAMES


def test_history_changes_the_prediction():
    model = _model(history=2)
    frames = _video(6)
    state = None
    for frame in frames[:5]:
        _, state = model.step(frame, state, video_id="v")
    with_history, _ = model.step(frames[5], state, video_id="v")
    fresh, _ = model.step(frames[5], None, video_id="w")
    assert not torch.allclose(with_history, fresh)


def _count_backbone_calls(model):
    calls = {"n": 0, "images": 0}

    def hook(_module, inputs, _out):
        calls["n"] += 1
        calls["images"] += inputs[0].shape[0]

    model.backbone.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("hmsa", [False, True])
def test_backbone_runs_once_per_frame_per_scale_when_streaming(hmsa):
    model = _model(history=2, hmsa=hmsa)
    calls = _count_backbone_calls(model)
    frames = _video(8)
    state = None
    for frame in frames:
        _, state = model.step(frame, state)
    scales = 2 if hmsa else 1
    assert calls["images"] == calls["n"] == 8 * scales


def test_offline_path_encodes_h_plus_one_frames_per_frame():
    model = _model(history=2)
    calls = _count_backbone_calls(model)
    frames = _video(5)
    for n in range(5):
        _offline(model, frames, n, 2)
    assert calls["images"] == 5 * 3


def test_reset_on_new_video_and_on_size_change(caplog):
    model = _model(history=2)
    a = _video(3)
    state = None
    for frame in a:
        _, state = model.step(frame, state, video_id="a")
    assert len(state.history[1.0]) == 2
    _, state = model.step(a[0], state, video_id="b")
    assert state.video_id == "b" and state.frame_index == 1 and len(state.history[1.0]) == 1
    with caplog.at_level(logging.WARNING):
        _, state = model.step(torch.randn(1, 3, 40, 40), state, video_id="b")
    assert state.resets == 1 and state.input_size == (40, 40) and state.frame_index == 1
    assert "input size changed" in caplog.text


def test_shot_cut_resets_history():
    model = _model(history=2)
    frame = _video(1)[0]
    state = None
    for _ in range(3):
        _, state = model.step(frame, state, shot_cut_threshold=0.5)
    assert state.resets == 0 and state.frame_index == 3
    _, state = model.step(frame + 5.0, state, shot_cut_threshold=0.5)
    assert state.resets == 1 and state.frame_index == 1


def test_state_is_small_detached_and_movable():
    model = _model(history=2)
    state = None
    for frame in _video(4):
        _, state = model.step(frame, state)
    maps = list(state.history[1.0])
    assert len(maps) == 2 and all(not m.requires_grad for m in maps)
    z, h, w = 16, 4, 6  # Z x (32/8) x (48/8)
    assert state.nbytes() == 2 * z * h * w * 4 + 7 * z * 4
    assert state.to("cpu") is state


def test_pick_history_pads_with_oldest_and_respects_stride():
    cur = "c"
    assert pick_history([], 2, 1, cur) == ["c", "c"]
    assert pick_history(["f0"], 2, 1, cur) == ["f0", "f0"]
    assert pick_history(["f0", "f1", "f2"], 2, 1, cur) == ["f2", "f1"]
    assert pick_history(["f0", "f1", "f2", "f3"], 2, 2, cur) == ["f2", "f0"]
    assert pick_history(["f0", "f1"], 2, 2, cur) == ["f0", "f0"]


def test_history_source_r_ablation_streams_like_offline():
    model = _model(history=2, extra=["model.history_source=r"])
    frames = _video(4)
    state = None
    for n, frame in enumerate(frames):
        logits, state = model.step(frame, state)
        torch.testing.assert_close(logits, _offline(model, frames, n, 2), atol=1e-4, rtol=1e-4)


def _learnable_batch():
    """Blocky scenes whose class is told by the block's colour, so a few steps can fit them."""
    g = torch.Generator().manual_seed(3)
    blocks = torch.randint(0, 7, (2, 4, 6), generator=g)
    labels = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
    palette = torch.randn(7, 3, generator=g)
    frame = palette[labels].permute(0, 3, 1, 2)
    clip = torch.stack([frame] * 3, 1) + 0.1 * torch.randn(2, 3, 3, 32, 48, generator=g)
    labels = labels.clone()
    labels[:, :2] = 255
    return clip, labels


def test_training_decreases_loss_and_updates_memory_from_current_frame():
    model = _model(history=2).train()
    clip, labels = _learnable_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = model.memory.stats.clone()
    totals = []
    for _ in range(15):
        losses = model(clip, labels)
        assert {"loss_cls", "loss_pr", "loss_aux"} <= set(losses)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total))
    assert totals[-1] < 0.7 * totals[0], totals
    assert not torch.equal(before, model.memory.stats)
    assert model.memory.stats.isfinite().all()


def test_history_frames_get_no_gradient_by_default():
    model = _model(history=2).train()
    calls = _count_backbone_calls(model)
    clip = torch.randn(1, 3, 3, 32, 32, requires_grad=True)
    losses = model(clip, torch.randint(0, 7, (1, 32, 32)))
    sum(losses.values()).backward()
    assert clip.grad[:, :2].abs().sum() == 0 and clip.grad[:, 2].abs().sum() > 0
    assert (
        calls["images"] == 3
    )  # one pass over the current frame, one no-grad pass over the history


def test_checkpoint_round_trip_streams_identically():
    model = _model(history=2)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(99)  # a different init must be fully overwritten by the checkpoint
    other = _model(history=2)
    other.load_state_dict(torch.load(buf, weights_only=True))
    other.eval()
    s1 = s2 = None
    for frame in _video(5):
        a, s1 = model.step(frame, s1)
        b, s2 = other.step(frame, s2)
        assert torch.equal(a, b)


def test_step_rejects_batches_and_training_mode():
    model = _model(history=1)
    with pytest.raises(ValueError, match="one frame"):
        model.step(torch.randn(2, 3, 32, 32))
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.step(torch.randn(1, 3, 32, 32))
