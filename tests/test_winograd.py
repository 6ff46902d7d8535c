"""Winograd F(2x2, 3x3) convolution (`vidseg/models/winograd.py`): the same function as the
direct convolution, taken only where it is valid and pays."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vidseg.models.winograd as winograd
from tests._small_models import REDUCED_RESNET
from vidseg.config import load_config
from vidseg.models.build import build_model
from vidseg.models.fuse import optimize_for_inference
from vidseg.models.winograd import (
    WinogradConv2d,
    transform_filter,
    use_winograd,
    winograd_conv3x3,
    winograd_eligible,
)

ROOT = Path(__file__).parent.parent

# Lavin & Gray's F(2x2, 3x3) filter transform
G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _reference(x, weight, bias, dilation):
    """The direct convolution in float64."""
    b = None if bias is None else bias.double()
    return F.conv2d(x.double(), weight.double(), b, padding=dilation, dilation=dilation)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_filter_transform_is_g_g_gt():
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    u = transform_filter(weight)  # (16, C, K)
    want = torch.einsum("ij,kcjl,ml->imck", G.double(), weight, G.double()).reshape(16, 3, 5)
    assert u.shape == (16, 3, 5)
    assert torch.allclose(u, want, atol=1e-12)


@pytest.mark.parametrize(
    "batch, c, k, h, w, dilation, channels_last, bias, chunk_bytes",
    [
        (1, 8, 5, 7, 9, 1, False, True, 1 << 20),  # odd sizes: the last tiles are cropped
        (2, 16, 12, 13, 6, 2, True, False, 1 << 20),  # batch, dilation 2, no bias
        (3, 8, 8, 17, 31, 3, True, True, 512),  # many chunks of one tile row
        (1, 32, 16, 30, 20, 1, False, True, 64),
        (1, 4, 4, 1, 1, 1, False, True, 1 << 20),  # a single pixel
        (1, 24, 40, 16, 16, 4, True, True, 4096),  # the dilated ResNet stage-4 case
    ],
)
def test_equals_the_direct_convolution(
    batch, c, k, h, w, dilation, channels_last, bias, chunk_bytes
):
    g = torch.Generator().manual_seed(batch * 100 + c)
    x = torch.randn(batch, c, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3, generator=g)
    b = torch.randn(k, generator=g) if bias else None
    got = winograd_conv3x3(x, weight, b, dilation, chunk_bytes=chunk_bytes)
    want = _reference(x, weight, b, dilation)
    direct = F.conv2d(x, weight, b, padding=dilation, dilation=dilation)
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last) or h * w == 1
    # float rounding only: no worse than 4x the direct float32 convolution's own error
    assert _relative(got, want) < max(4 * _relative(direct, want), 1e-6)


def test_weight_slice_and_cached_filters():
    """A slice of a weight (the pyramid split's input-channel slices) and precomputed filters."""
    x = torch.randn(1, 6, 10, 12)
    weight = torch.randn(7, 20, 3, 3)[:, 4:10]
    want = _reference(x, weight, None, 1)
    assert _relative(winograd_conv3x3(x, weight), want) < 1e-6
    filters = transform_filter(weight)
    assert _relative(winograd_conv3x3(x, weight, filters=filters), want) < 1e-6


def _conv(**kw) -> nn.Conv2d:
    args = {"in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1} | kw
    return nn.Conv2d(**args)


@pytest.mark.parametrize(
    "kwargs, eligible",
    [
        ({}, True),
        ({"padding": 2, "dilation": 2}, True),
        ({"kernel_size": 1, "padding": 0}, False),
        ({"stride": 2}, False),
        ({"groups": 2}, False),
        ({"padding": 0}, False),  # not a "same" conv
        ({"padding": 2, "dilation": 1}, False),
        ({"padding_mode": "reflect"}, False),
        ({"in_channels": 32}, False),  # too thin to pay
        ({"out_channels": 32}, False),
    ],
)
def test_eligibility(kwargs, eligible):
    assert winograd_eligible(_conv(**kwargs)) is eligible


def test_use_winograd_keeps_parameters_and_keys():
    model = nn.Sequential(_conv(), nn.ReLU(), _conv(stride=2), _conv(kernel_size=1, padding=0))
    keys = list(model.state_dict())
    before = [p.data_ptr() for p in model.parameters()]
    assert use_winograd(model) == 1
    assert type(model[0]) is WinogradConv2d and type(model[2]) is nn.Conv2d
    assert list(model.state_dict()) == keys
    assert [p.data_ptr() for p in model.parameters()] == before


@pytest.fixture
def calls(monkeypatch):
    """Counts the Winograd path's runs."""
    seen = []
    real = winograd.winograd_conv3x3

    def counting(*args, **kwargs):
        seen.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(winograd, "winograd_conv3x3", counting)
    return seen


def test_module_runs_winograd_in_inference(calls):
    conv = _conv(padding=2, dilation=2).eval()
    want = conv(x := torch.randn(1, 64, 24, 20))  # ordinary conv: still nn.Conv2d
    use_winograd(conv)
    with torch.inference_mode():
        got = conv(x)
    assert len(calls) == 1
    assert _relative(got, want) < 1e-5


def test_training_and_gradients_take_the_direct_conv(calls):
    conv = _conv()
    use_winograd(conv)
    x = torch.randn(1, 64, 16, 16, requires_grad=True)
    conv(x).sum().backward()
    assert calls == []
    assert x.grad is not None and conv.weight.grad is not None


def test_large_dilation_on_a_small_map_takes_the_direct_conv(calls):
    """ASPP's dilation 24 on a 64x64 map would mostly transform zeros."""
    conv = _conv(padding=24, dilation=24).eval()
    use_winograd(conv)
    with torch.inference_mode():
        conv(torch.randn(1, 64, 64, 64))
        assert calls == []
        conv(torch.randn(1, 64, 256, 256))
    assert len(calls) == 1


def test_onnx_export_writes_a_plain_convolution(calls, tmp_path):
    """`vidseg export`'s exporter (TorchScript-based, dynamo=False) sees the ordinary conv."""
    onnx = pytest.importorskip("onnx")
    conv = _conv().eval()
    use_winograd(conv)
    out = tmp_path / "conv.onnx"
    with torch.no_grad():
        torch.onnx.export(conv, (torch.randn(1, 64, 16, 16),), str(out), dynamo=False)
    ops = [node.op_type for node in onnx.load(str(out)).graph.node]
    assert ops == ["Conv"]
    assert calls == []


def test_optimized_authors_model_takes_it_and_keeps_outputs(calls):
    """The inference rewrite on the authors' UperNet + MCIBI++ (reduced widths): the same
    logits up to rounding, with the Winograd path run (modules and the pyramid's split conv)."""
    overrides = [
        "model.backbone.pretrained=false",
        *REDUCED_RESNET,
        "model.channels=64",
        "model.key_channels=16",
        "model.aux_channels=16",
        "model.head.fpn_channels=128",
        "model.num_classes=7",
    ]
    cfg = load_config(ROOT / "configs" / "vspw" / "upernet_mcibipp_r50.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    fast = optimize_for_inference(copy.deepcopy(model))
    plain = optimize_for_inference(copy.deepcopy(model), winograd=False)
    assert any(type(m) is WinogradConv2d for m in fast.modules())
    assert not any(type(m) is WinogradConv2d for m in plain.modules())
    x = torch.randn(1, 3, 96, 136)
    with torch.inference_mode():
        want, _ = model.step(x)
        got, _ = fast.step(x)
    assert len(calls) >= 2
    assert _relative(got, want) < 1e-5
    assert torch.equal(got.argmax(1), want.argmax(1))
