"""Poly learning-rate schedule with warm-up, and backbone / head parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidseg.engine.schedule import PolyLR, param_groups, poly_lr


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
    assert poly_lr(5, 1.0, 100, power=1.0, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.55 * 0.95)
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


def test_param_groups_and_scheduler_apply_head_multiplier():
    net = _Net()
    groups = param_groups(net, lr=0.01, head_lr_mult=10.0)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.head.parameters()}
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    sched = PolyLR(opt, 0.01, 100, power=1.0)
    assert sched.step(50) == pytest.approx(0.005)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.05)
    state = sched.state_dict()
    other = PolyLR(opt, 0.01, 100, power=1.0)
    other.load_state_dict(state)
    assert other.last_iter == 50


def test_param_groups_without_backbone_single_group():
    net = nn.Linear(2, 2)
    groups = param_groups(net, lr=0.1, head_lr_mult=10.0)
    assert len(groups) == 1 and groups[0]["lr"] == pytest.approx(1.0)
