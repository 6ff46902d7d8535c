"""Dataset-level context aggregation (eq 12-13) and the fusion F_T."""

from __future__ import annotations

import math

import pytest
import torch

from vidseg.models.aggregation import DatasetContext, Fusion
from vidseg.models.memory import DistributionMemory, VectorMemory

B, K, Z, CK = 2, 4, 8, 6


def inputs(h: int = 3, w: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, Z, h, w, generator=gen)
    probs = torch.randn(B, K, h, w, generator=gen).softmax(dim=1)
    c_dl = torch.randn(K, Z, generator=gen)
    return feats, probs, c_dl


def test_aggregate_equals_explicit_per_pixel_mix():
    _, probs, c_dl = inputs()
    out = DatasetContext.aggregate(probs, c_dl)
    assert out.shape == (B, Z, 3, 5)
    explicit = torch.zeros(B, Z, 3, 5)
    for b in range(B):
        for i in range(3):
            for j in range(5):
                for k in range(K):
                    explicit[b, :, i, j] += probs[b, k, i, j] * c_dl[k]
    assert torch.allclose(out, explicit, atol=1e-6)
    one_hot = torch.zeros(1, K, 1, 1)
    one_hot[0, 2] = 1.0
    assert torch.allclose(DatasetContext.aggregate(one_hot, c_dl)[0, :, 0, 0], c_dl[2])


@pytest.mark.parametrize("downsample,size", [(False, (3, 5)), (True, (5, 7)), (True, (4, 6))])
def test_dataset_context_shapes(downsample, size):
    feats, probs, c_dl = inputs(*size)
    ctx = DatasetContext(channels=Z, key_channels=CK, downsample=downsample)
    out = ctx(feats, probs, c_dl)
    assert out.shape == (B, Z, *size) and torch.isfinite(out).all()


def test_sdpa_matches_naive_attention():
    torch.manual_seed(0)
    feats, probs, c_dl = inputs()
    ctx = DatasetContext(channels=Z, key_channels=CK).eval()  # BN running stats: deterministic
    out = ctx(feats, probs, c_dl)

    agg = torch.einsum("bkhw,kz->bzhw", probs, c_dl)
    q = ctx.query(feats).flatten(2).transpose(1, 2)  # (B, N, CK)
    k = ctx.key(agg).flatten(2).transpose(1, 2)
    v = ctx.value(agg).flatten(2).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(CK), dim=-1)  # (B, N, N)
    naive = ctx.out((attn @ v).transpose(1, 2).reshape(B, CK, 3, 5))
    assert torch.allclose(out, naive, atol=1e-5)


@pytest.mark.parametrize("memory_kind", ["distribution", "vector"])
def test_gradients_reach_projections_not_memory(memory_kind):
    torch.manual_seed(0)
    feats, probs, _ = inputs(seed=1)
    feats.requires_grad_(True)
    logits = torch.log(probs).detach().requires_grad_(True)
    mem = DistributionMemory(K, Z) if memory_kind == "distribution" else VectorMemory(K, Z)
    if memory_kind == "vector":
        mem.train().update(torch.randn(1, Z, 2, 2), torch.tensor([[[0, 1], [2, 3]]]), progress=0.0)
    ctx = DatasetContext(channels=Z, key_channels=CK, downsample=True).train()
    out = ctx(feats, logits.softmax(dim=1), mem.sample())
    out.sum().backward()
    for name, p in ctx.named_parameters():
        assert p.grad is not None, name
    for proj in (ctx.query, ctx.key, ctx.value, ctx.out):
        convs = [m for m in proj.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.grad.abs().sum() > 0 for c in convs)
    assert feats.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0
    for name, buf in mem.named_buffers():
        assert not buf.requires_grad and buf.grad is None, name


def test_dataset_context_rejects_mismatched_inputs():
    feats, probs, c_dl = inputs()
    ctx = DatasetContext(channels=Z, key_channels=CK)
    with pytest.raises(ValueError, match="C_dl must be"):
        ctx(feats, probs, c_dl[:, :3])
    with pytest.raises(ValueError, match="probs must be"):
        ctx(feats, probs[:, :, :2], c_dl)
    with pytest.raises(ValueError, match="same K"):
        ctx(feats, probs, c_dl[:3])


@pytest.mark.parametrize("kind", ["concat", "add", "weighted"])
@pytest.mark.parametrize("num_inputs", [2, 4])
def test_fusion_shapes(kind, num_inputs):
    gen = torch.Generator().manual_seed(2)
    maps = [torch.randn(B, Z, 3, 5, generator=gen) for _ in range(num_inputs)]
    fusion = Fusion(kind, channels=Z, num_inputs=num_inputs)
    out = fusion(maps)
    assert out.shape == (B, Z, 3, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_fusion_semantics():
    x = torch.randn(B, Z, 3, 5, generator=torch.Generator().manual_seed(3))
    weighted = Fusion("weighted", channels=Z, num_inputs=3).eval()
    # convex per-pixel weights: identical inputs give back that input before the final conv
    assert torch.allclose(weighted([x, x, x]), weighted.fuse(x), atol=1e-6)
    add = Fusion("add", channels=Z, num_inputs=3).eval()
    assert torch.allclose(add([x, x, x]), add.fuse(3 * x), atol=1e-5)
    concat = Fusion("concat", channels=Z, num_inputs=3)
    assert concat.fuse[0].in_channels == 3 * Z


def test_fusion_rejects_bad_inputs():
    fusion = Fusion("concat", channels=Z, num_inputs=2)
    with pytest.raises(ValueError, match="expected 2 maps"):
        fusion([torch.zeros(1, Z, 2, 2)])
    with pytest.raises(ValueError, match="map 1"):
        fusion([torch.zeros(1, Z, 2, 2), torch.zeros(1, Z, 3, 2)])
    with pytest.raises(ValueError, match="kind must be"):
        Fusion("max", channels=Z, num_inputs=2)
