"""Poly learning-rate schedule with warm-up, and backbone / head parameter groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vidseg.engine.schedule import PolyLR, describe_lrs, param_groups, poly_lr

REPO = Path(__file__).resolve().parents[1]


def test_poly_hand_values():
    assert poly_lr(0, 0.01, 100) == pytest.approx(0.01)
    # (1 - 50/100) ** 0.9 = 0.5 ** 0.9 = 0.535887...
    assert poly_lr(50, 0.01, 100, power=0.9) == pytest.approx(0.01 * 0.5358867312681466)
    assert poly_lr(100, 0.01, 100) == 0.0
    assert poly_lr(75, 1.0, 100, power=1.0) == pytest.approx(0.25)
    assert poly_lr(100, 1.0, 100, power=1.0, min_lr=1e-4) == pytest.approx(1e-4)


def test_warmup_is_linear_from_ratio():
    # t = 0: factor = ratio; t = 5 of 10: factor = 0.1 + 0.9 * 0.5 = 0.55, times poly (1 - 5/100)
    assert poly_lr(0, 1.0, 100, power=1.0, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.1)
    assert poly_lr(5, 1.0, 100, power=1.0, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(
        0.55 * 0.95
    )
    # after the warm-up the plain poly value
    assert poly_lr(10, 1.0, 100, power=1.0, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.9)


def test_poly_rejects_bad_iteration():
    with pytest.raises(ValueError, match="outside"):
        poly_lr(101, 0.01, 100)
    with pytest.raises(ValueError, match="max_iters"):
        poly_lr(0, 0.01, 0)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.head = nn.Conv2d(4, 2, 1)
        self.frozen = nn.Parameter(torch.zeros(1), requires_grad=False)


def test_param_groups_backbone_at_a_fraction_of_the_heads():
    """lr is the heads' rate; the backbone runs at lr * backbone_lr_mult (sssegmentation's
    params_rules {'backbone_net': lr_multiplier 0.1} with lr 0.01)."""
    net = _Net()
    groups = param_groups(net, lr=0.01, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.head.parameters()}
    assert groups[0]["lr"] == pytest.approx(0.001) and groups[1]["lr"] == pytest.approx(0.01)
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    sched = PolyLR(opt, 0.01, 100, power=1.0)
    assert describe_lrs(opt) == "lr: backbone 0.001, heads 0.01"
    assert sched.step(50) == pytest.approx(0.005)  # the base rate is the heads' rate
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0005)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.005)
    assert describe_lrs(opt) == "lr: backbone 0.0005, heads 0.005"
    state = sched.state_dict()
    other = PolyLR(opt, 0.01, 100, power=1.0)
    other.load_state_dict(state)
    assert other.last_iter == 50
    with pytest.raises(TypeError):
        param_groups(net, lr=0.01, head_lr_mult=10.0)  # the old keyword is gone
    with pytest.raises(ValueError, match="backbone_lr_mult"):
        param_groups(net, lr=0.01, backbone_lr_mult=-1.0)


def test_param_groups_without_backbone_single_group():
    net = nn.Linear(2, 2)
    groups = param_groups(net, lr=0.1, backbone_lr_mult=0.1)
    assert (
        len(groups) == 1 and groups[0]["name"] == "heads" and groups[0]["lr"] == pytest.approx(0.1)
    )


def test_configs_state_the_authors_rates():
    from vidseg.config import load_config

    cfg = load_config(REPO / "configs" / "vspw" / "fcn_mcibipp_r50.yaml")
    assert (cfg.train.lr, cfg.train.backbone_lr_mult) == (0.01, 0.1)
    # the demo keeps its former rates (backbone 0.01, heads 0.05) under the new keys
    demo = load_config(REPO / "configs" / "synthetic" / "demo.yaml")
    assert demo.train.lr == pytest.approx(0.05)
    assert demo.train.lr * demo.train.backbone_lr_mult == pytest.approx(0.01)
    assert load_config(REPO / "configs" / "synthetic" / "tiny.yaml").train.backbone_lr_mult == 1.0


def test_old_head_lr_mult_key_is_a_one_line_error(tmp_path):
    from vidseg.config import ConfigError, load_config

    old = tmp_path / "old.yaml"
    old.write_text("train:\n  lr: 0.01\n  head_lr_mult: 10.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(old)
    msg = str(info.value)
    assert "\n" not in msg and "head_lr_mult was removed" in msg
    assert "lr: 0.1, backbone_lr_mult: 0.1" in msg  # the same rates, spelled in the new keys
    with pytest.raises(ConfigError, match="backbone_lr_mult"):
        load_config(None, ["train.head_lr_mult=5"])


def test_training_logs_both_group_rates(tmp_path, monkeypatch):
    from test_train import make_tiny_vspw, standin, tiny_cfg

    import vidseg.engine.train as tr

    monkeypatch.setattr(tr, "_validate", lambda *a, **k: None)
    root = make_tiny_vspw(tmp_path / "vspw", videos=2, frames=2)
    cfg = tiny_cfg(root, tmp_path / "run", "train.iters=2", "train.backbone_lr_mult=0.1")
    tr.train(cfg, model_factory=standin)
    assert "lr: backbone 0.005, heads 0.05" in (tmp_path / "run" / "train.log").read_text()
