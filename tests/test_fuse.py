"""Inference rewrites (`vidseg/models/fuse.py`): BatchNorm folding and channels-last keep the outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tests._small_models import REDUCED_RESNET
from vidseg.config import load_config
from vidseg.models.build import build_model
from vidseg.models.fuse import fold_batchnorm, fold_conv_bn, optimize_for_inference

ROOT = Path(__file__).parent.parent
SMALL = [
    "model.backbone.pretrained=false",
    *REDUCED_RESNET,
    "model.channels=32",
    "model.key_channels=16",
    "model.aux_channels=16",
    "model.head.fpn_channels=64",
    "model.num_classes=7",
]


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (so folding has work to do)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


def test_fold_conv_bn_matches_conv_then_bn():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(5, 6, 3, padding=2, dilation=2, bias=True), nn.BatchNorm2d(6)
    seq = nn.Sequential(conv, bn).eval()
    _randomise_bn(seq)
    x = torch.randn(2, 5, 11, 13)
    want = seq(x)
    fold_conv_bn(conv, bn)
    assert _relative(conv(x), want) < 1e-6


def test_fold_in_blocks_equals_the_whole_float64_formula(monkeypatch):
    """Folded a few output channels at a time (bounded memory): bit for bit the float64
    formula applied to the whole weight, channels-last layout kept."""
    import vidseg.models.fuse as fuse

    torch.manual_seed(1)
    conv, bn = nn.Conv2d(8, 10, 3, padding=1, bias=False), nn.BatchNorm2d(10)
    seq = nn.Sequential(conv, bn).eval().to(memory_format=torch.channels_last)
    _randomise_bn(seq)
    w64 = conv.weight.detach().double()
    s64 = (bn.running_var.double() + bn.eps).rsqrt() * bn.weight.double()
    want_w = (w64 * s64.reshape(-1, 1, 1, 1)).float()
    want_b = (bn.bias.double() - bn.running_mean.double() * s64).float()
    monkeypatch.setattr(fuse, "FOLD_BLOCK_ELEMENTS", 3 * 8 * 9)  # blocks of 3 channels: 3+3+3+1
    fold_conv_bn(conv, bn)
    assert torch.equal(conv.weight, want_w) and torch.equal(conv.bias, want_b)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fold_refuses_training_mode():
    with pytest.raises(RuntimeError, match="training mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))


def test_bn_not_after_a_conv_is_kept():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1)).eval()
    assert fold_batchnorm(model) == 0
    assert isinstance(model[1], nn.BatchNorm2d)


def test_timm_resnet_every_bn_folded():
    import timm

    body = timm.create_model(
        "resnet50c", pretrained=False, features_only=True, output_stride=8
    ).eval()
    _randomise_bn(body)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        want = body(x)
        assert fold_batchnorm(body) == n_bn
        got = body(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    for a, b in zip(got, want):
        assert _relative(a, b) < 1e-5


@pytest.mark.parametrize("channels_last", [False, True])
def test_authors_upernet_outputs_kept(channels_last):
    cfg = load_config(ROOT / "configs" / "vspw" / "upernet_mcibipp_r50.yaml", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomise_bn(model)
    fast = optimize_for_inference(copy.deepcopy(model), channels_last=channels_last)
    assert not any(type(m) is nn.BatchNorm2d for m in fast.modules())
    x = torch.randn(1, 3, 96, 136)
    with torch.no_grad():
        want, _ = model.step(x)
        got, _ = fast.step(x)
    assert _relative(got, want) < 1e-5
    assert torch.equal(got.argmax(1), want.argmax(1))
    # the original (training) model is untouched
    assert any(type(m) is nn.BatchNorm2d for m in model.modules())
