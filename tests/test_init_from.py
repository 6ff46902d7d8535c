"""`train.init_from`: training starts from trained weights (vidseg, the authors', a zoo name)."""

from __future__ import annotations

import torch
from test_train import factory, make_tiny_vspw, tiny_cfg


def _image_checkpoint(tmp_path, root):
    """A trained-looking image model (h = 0) saved as a vidseg checkpoint."""
    from vidseg.config import config_to_dict

    cfg = tiny_cfg(root, tmp_path / "img", "model.history=0")
    model = factory(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    path = tmp_path / "image.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg)}, path)
    return path, model


def test_init_from_an_image_checkpoint_widens_the_fusion(tmp_path):
    from vidseg.engine.train import _init_weights

    root = make_tiny_vspw(tmp_path / "vspw", videos=2, frames=3)
    path, image = _image_checkpoint(tmp_path, root)
    video = factory(tiny_cfg(root, tmp_path / "vid", "model.history=2"))
    _init_weights(video, str(path))
    got, ref = video.state_dict(), image.state_dict()
    key = "image_model.fusion.fuse.0.weight"
    z = ref[key].shape[1]
    assert got[key].shape[1] == 2 * z
    assert torch.equal(got[key][:, :z], ref[key]) and not got[key][:, z:].any()
    for name, value in ref.items():
        if name != key:
            assert torch.equal(got[name], value), name


def test_training_starts_from_init_from(tmp_path, monkeypatch):
    import vidseg.engine.train as tr

    monkeypatch.setattr(tr, "_validate", lambda *a, **k: None)
    root = make_tiny_vspw(tmp_path / "vspw", videos=2, frames=3)
    path, image = _image_checkpoint(tmp_path, root)
    work = tmp_path / "run"
    cfg = tiny_cfg(
        root, work, "model.history=2", "train.iters=1", f"train.init_from={path}", "train.lr=1e-30"
    )
    tr.train(cfg)
    log = (work / "train.log").read_text()
    assert f"train.init_from={path}" in log
    # lr must be > 0; at 1e-30 a step is far below float32 resolution, so only BatchNorm
    # statistics move: the backbone's first conv still holds the image model's weights
    final = sorted(work.glob("iter_*.pth"))[-1]
    state = torch.load(final, weights_only=True)["model"]
    key = "image_model.backbone.body.conv1.weight"
    assert torch.equal(state[key], image.state_dict()[key])


def test_init_from_a_missing_file_is_one_clear_error(tmp_path):
    import pytest

    from vidseg.engine.checkpoint import CheckpointError
    from vidseg.engine.train import _init_weights

    root = make_tiny_vspw(tmp_path / "vspw", videos=1, frames=2)
    video = factory(tiny_cfg(root, tmp_path / "vid"))
    with pytest.raises((CheckpointError, FileNotFoundError), match="nothere.pth"):
        _init_weights(video, str(tmp_path / "nothere.pth"))
