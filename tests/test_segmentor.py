"""ImageSegmentor combinations, IIS stage-2 weights, and checkpoint/config mismatch errors."""

import pytest
import torch

from vidseg.config import load_config
from vidseg.engine.inference import load_inference_model
from vidseg.models.build import build_model

K = 5


def _cfg(*extra):
    return load_config(
        "configs/synthetic/tiny.yaml",
        [
            f"model.num_classes={K}",
            "model.channels=16",
            "model.key_channels=8",
            "model.history=1",
            *extra,
        ],
    )


@pytest.mark.parametrize("context", ["none", "ppm", "aspp", "gald", "upernet"])
@pytest.mark.parametrize("memory", ["distribution", "vector", "none"])
def test_every_context_and_memory_combination_trains_and_predicts(context, memory):
    extra = [f"model.context={context}", f"model.memory.type={memory}"]
    if memory == "none":
        extra.append("model.history_source=r")
    torch.manual_seed(0)
    model = build_model(_cfg(*extra)).train()
    clip = torch.randn(2, 2, 3, 40, 56)
    labels = torch.randint(0, K, (2, 40, 56))
    losses = model(clip, labels)
    expected = {"loss_cls", "loss_aux"} | ({"loss_pr"} if memory != "none" else set())
    if memory == "vector":
        expected.add("loss_rcl")
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    logits = model(clip)
    assert logits.shape == (2, K, 40, 56)
    coarse = model(clip, upsample=False)
    grid = 4 if context == "upernet" else 8
    assert coarse.shape == (2, K, 40 // grid, 56 // grid)


def test_iis_stage_two_weights_are_the_paper_average():
    model = build_model(_cfg("model.iis_stages=2")).eval()
    m = model.image_model
    seen = []
    original = m.dataset_context

    def record(r, probs, c_dl):
        seen.append(probs.clone())
        return original(r, probs, c_dl)

    m.dataset_context = record
    x = torch.randn(1, 3, 40, 56)
    c_dl = m.sample_memory()
    with torch.no_grad():
        enc = m.encode(x, c_dl)
        stage1_logits, _ = m.predict_frame(enc, None, c_dl, [enc.cbi], stages=1)
        seen.clear()
        m.predict_frame(enc, None, c_dl, [enc.cbi], stages=2)
    (w_s2,) = seen  # stage 1 reuses enc.cbi; stage 2 aggregates once
    expected = (stage1_logits.softmax(1) + enc.w_logits.softmax(1)) / 2
    torch.testing.assert_close(w_s2, expected)
    torch.testing.assert_close(w_s2.sum(1), torch.ones_like(w_s2[:, 0]))


def test_memory_is_frozen_in_eval_and_updated_in_training():
    model = build_model(_cfg())
    before = model.memory.stats.clone()
    clip, labels = torch.randn(2, 2, 3, 40, 56), torch.randint(0, K, (2, 40, 56))
    model.eval()
    model(clip)
    assert torch.equal(model.memory.stats, before)
    model.train()
    model(clip, labels)
    assert not torch.equal(model.memory.stats, before)


def _save(tmp_path, cfg_overrides, name="ckpt.pth"):
    from vidseg.config import config_to_dict

    cfg = _cfg(*cfg_overrides)
    model = build_model(cfg)
    path = tmp_path / name
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg)}, path)
    return path


def test_history_length_in_checkpoint_differs_from_config(tmp_path):
    path = _save(tmp_path, ["model.history=1"])
    with pytest.raises(ValueError, match=r"model.history: config 2, checkpoint 1"):
        load_inference_model(
            "configs/synthetic/tiny.yaml",
            path,
            [f"model.num_classes={K}", "model.channels=16", "model.key_channels=8"],
        )


def test_class_count_mismatch_is_a_clear_error(tmp_path):
    path = _save(tmp_path, [])
    with pytest.raises(ValueError, match=r"model.num_classes: config 9, checkpoint 5"):
        load_inference_model(
            "configs/synthetic/tiny.yaml",
            path,
            ["model.num_classes=9", "model.channels=16", "model.key_channels=8", "model.history=1"],
        )


def test_checkpoint_without_config_and_bare_state_dict_list_mismatched_keys(tmp_path):
    cfg = _cfg()
    model = build_model(cfg)
    state = model.state_dict()
    state.pop("image_model.cls_head.classifier.bias")
    torch.save(state, tmp_path / "bare.pth")
    with pytest.raises(Exception, match="missing in checkpoint.*cls_head.classifier.bias"):
        load_inference_model(cfg, tmp_path / "bare.pth")


def test_loaded_checkpoint_uses_its_own_config_when_none_given(tmp_path):
    path = _save(tmp_path, ["model.history=1"])
    cfg, model = load_inference_model(None, path)
    assert cfg.model.history == 1 and not model.training
    with pytest.raises(ValueError, match="no checkpoint given"):
        load_inference_model(cfg, None)


def test_pixel_contrast_term_enqueues_the_classes_of_the_r_grid_labels():
    model = build_model(
        _cfg(
            "model.contrast.enabled=true",
            "model.contrast.proj_dim=8",
            "model.contrast.queue_size=4",
            "model.contrast.max_samples=64",
            "model.contrast.max_views=4",
        )
    ).train()
    clip = torch.randn(2, 2, 3, 40, 56)
    labels = torch.zeros(2, 40, 56, dtype=torch.long)
    labels[:, :, 28:] = 3
    first = model(clip, labels)
    assert first["loss_contrast"].item() == 0.0  # empty queues on the first step
    _, queued = model.loss_terms.contrast.queues.contents()
    assert set(queued.tolist()) == {0, 3}
    second = model(clip, labels)
    assert second["loss_contrast"].item() > 0 and torch.isfinite(sum(second.values()))
