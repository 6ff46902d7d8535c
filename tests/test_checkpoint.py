"""Atomic checkpoints, `latest`, retention, out-of-disk safety, safe loading and RNG round trips."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch
from torch import nn

from vidseg.engine import checkpoint as ck


def _state(iteration: int, value: float = 1.0) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "iteration": iteration, "config": {"a": 1}}


def test_save_writes_pointer_and_keeps_last_n(tmp_path):
    for it in (1, 2, 3, 4):
        path = ck.save_checkpoint(tmp_path, _state(it, float(it)), it, keep=2, is_best=(it == 2))
    assert path.name == "iter_0000004.pth"
    assert (tmp_path / "latest").read_text().strip() == "iter_0000004.pth"
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == [
        "iter_0000003.pth",
        "iter_0000004.pth",
    ]
    assert ck.find_latest(tmp_path) == tmp_path / "iter_0000004.pth"
    assert ck.resolve_resume("latest", tmp_path) == tmp_path / "iter_0000004.pth"
    assert ck.resolve_resume(tmp_path, "unused") == tmp_path / "iter_0000004.pth"
    best = ck.load_checkpoint(tmp_path / "best.pth")
    assert best["iteration"] == 2 and torch.equal(best["model"]["w"], torch.full((3,), 2.0))
    assert not list(tmp_path.glob(".*.tmp"))


def test_out_of_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ck.save_checkpoint(tmp_path, _state(1), 1)

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 partial")  # some bytes reach the file before the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "_serialize", full_disk)
    with pytest.raises(ck.CheckpointError, match="out of disk space"):
        ck.save_checkpoint(tmp_path, _state(2, 2.0), 2)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text().strip() == "iter_0000001.pth"
    assert not (tmp_path / "iter_0000002.pth").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    loaded = ck.load_checkpoint(ck.find_latest(tmp_path))
    assert loaded["iteration"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))


def test_unreadable_and_missing_checkpoint(tmp_path):
    bad = tmp_path / "iter_0000001.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match="cannot read checkpoint"):
        ck.load_checkpoint(bad)
    with pytest.raises(ck.CheckpointError, match="no checkpoint"):
        ck.resolve_resume("latest", tmp_path / "empty")
    with pytest.raises(ck.CheckpointError, match="file not found"):
        ck.resolve_resume(tmp_path / "nope.pth", tmp_path)


def test_weights_only_rejects_arbitrary_objects(tmp_path):
    import argparse

    path = tmp_path / "evil.pth"  # any class outside the weights_only allow-list is refused
    torch.save({"model": {}, "obj": argparse.Namespace(x=1)}, path)
    with pytest.raises(ck.CheckpointError):
        ck.load_checkpoint(path)


def test_mismatched_model_lists_keys_and_shapes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    other = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16))
    with pytest.raises(ck.CheckpointError) as info:
        ck.load_model_state(model, other.state_dict(), source="checkpoint x.pth")
    msg = str(info.value)
    assert "checkpoint x.pth" in msg
    assert "missing in checkpoint (2): 2.weight, 2.bias" in msg
    assert "0.weight: checkpoint (16, 3, 3, 3) vs model (8, 3, 3, 3)" in msg
    ck.load_model_state(model, model.state_dict())  # identical keys load fine


def test_rng_state_round_trip_is_weights_only(tmp_path):
    gen = torch.Generator().manual_seed(5)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in the numpy state
    state = ck.capture_rng_state({"loader": gen})
    expected = (
        random.random(),
        np.random.rand(),
        np.random.normal(),
        torch.rand(2),
        torch.rand(1, generator=gen),
    )
    path = tmp_path / "rng.pth"
    ck.atomic_torch_save({"rng": state}, path)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    gen.manual_seed(99)
    ck.restore_rng_state(ck.load_checkpoint(path)["rng"], {"loader": gen})
    got = (
        random.random(),
        np.random.rand(),
        np.random.normal(),
        torch.rand(2),
        torch.rand(1, generator=gen),
    )
    assert got[:3] == expected[:3]
    assert torch.equal(got[3], expected[3]) and torch.equal(got[4], expected[4])


def test_load_weights_for_inference(tmp_path):
    net = nn.Linear(2, 3)
    ck.save_checkpoint(
        tmp_path,
        {"model": net.state_dict(), "config": {"model": {"channels": 4}}, "iteration": 1},
        1,
    )
    sd, cfg = ck.load_weights_for_inference(tmp_path / "iter_0000001.pth")
    assert cfg == {"model": {"channels": 4}} and torch.equal(sd["weight"], net.weight)
    plain = tmp_path / "plain.pth"
    torch.save(net.state_dict(), plain)
    sd, cfg = ck.load_weights_for_inference(plain)
    assert cfg is None and set(sd) == {"weight", "bias"}


def test_git_revision_is_a_string():
    rev = ck.git_revision()
    assert rev == "unknown" or len(rev) == 40


def _saved_tiny(tmp_path):
    from vidseg.engine.inference import load_inference_model

    _, model = load_inference_model("tiny", random_init=True)
    path = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, path


def test_inference_model_is_built_on_meta_and_holds_the_file_tensors(tmp_path, monkeypatch):
    """No second copy while loading: the model's tensors are the checkpoint's own (fp16 ones
    converted to the model's dtype), and it computes what the saved model computed."""
    import vidseg.engine.inference as inference

    ref, path = _saved_tiny(tmp_path)
    half = tmp_path / "half.pth"
    torch.save(
        {
            "model": {
                k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()
            }
        },
        half,
    )
    loaded = {}
    real_read = inference.read_weights

    def spy_read(p):
        state, cfg = real_read(p)
        loaded["state"] = state
        return state, cfg

    monkeypatch.setattr(inference, "read_weights", spy_read)
    _, model = inference.load_inference_model("tiny", path)
    key = next(k for k in model.state_dict() if k.endswith("fusion.fuse.0.weight"))
    assert model.state_dict()[key].data_ptr() == loaded["state"][key].data_ptr()
    from vidseg.engine.predict import segment_frame

    rgb = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    labels = [
        segment_frame(m.eval(), rgb, None, 64, (0.5,) * 3, (0.25,) * 3)[0] for m in (model, ref)
    ]
    assert np.array_equal(*labels)
    _, from_half = inference.load_inference_model("tiny", half)
    assert all(v.dtype == ref.state_dict()[k].dtype for k, v in from_half.state_dict().items())


def test_a_model_that_cannot_live_on_meta_is_built_the_ordinary_way(tmp_path, monkeypatch):
    """A tensor that is not in the state dict (a non-persistent buffer) stays meta after the
    assignment: the loader then builds the model normally and copies the weights."""
    import vidseg.engine.inference as inference

    ref, path = _saved_tiny(tmp_path)
    real_build = inference.build_checked

    def build_with_a_table(cfg, source):
        model = real_build(cfg, source)
        model.register_buffer("table", torch.arange(4.0), persistent=False)
        return model

    monkeypatch.setattr(inference, "build_checked", build_with_a_table)
    _, model = inference.load_inference_model("tiny", path)
    assert not model.table.is_meta and torch.equal(model.table, torch.arange(4.0))
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
