"""HMSA: attention head, pair fusion, the N-scale chain against the formula, the inference wrapper."""

import pytest
import torch
import torch.nn.functional as F

from vidseg.models.losses import cross_entropy
from vidseg.models.multiscale import (
    AttentionHead,
    MultiScaleInference,
    fuse_pair,
    hmsa_chain,
    hmsa_training_loss,
)

K = 3


def _const(value, size, channels=K):
    return torch.full((1, channels, *size), float(value))


def test_attention_head_shape_and_range():
    head = AttentionHead(6, 8).eval()
    with torch.no_grad():
        a = head(torch.randn(2, 6, 5, 7))
    assert a.shape == (2, 1, 5, 7)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_fuse_pair_matches_formula():
    torch.manual_seed(0)
    low, attn, high = torch.randn(1, K, 3, 4), torch.rand(1, 1, 3, 4), torch.randn(1, K, 6, 8)
    up = lambda t: F.interpolate(t, size=(6, 8), mode="bilinear", align_corners=False)  # noqa: E731
    assert torch.allclose(fuse_pair(low, attn, high), up(low * attn) + (1 - up(attn)) * high)


def test_chain_two_scales_constant_inputs():
    c_low, c_high, a = 2.0, -1.0, 0.3
    out = hmsa_chain(
        {0.5: (_const(c_low, (2, 2)), _const(a, (2, 2), 1)), 1.0: (_const(c_high, (4, 4)), None)}
    )
    assert out.shape == (1, K, 4, 4)
    assert torch.allclose(out, torch.full_like(out, a * c_low + (1 - a) * c_high))


def test_chain_three_scales_constant_inputs_and_largest_attention_unused():
    c05, c1, c2 = 4.0, 1.0, -2.0
    a05, a1 = 0.25, 0.6
    expected = a05 * c05 + (1 - a05) * (a1 * c1 + (1 - a1) * c2)
    for a2 in (0.0, 0.9):  # the largest scale's attention must not matter
        out = hmsa_chain(
            {
                1.0: (_const(c1, (4, 4)), _const(a1, (4, 4), 1)),
                2.0: (_const(c2, (8, 8)), _const(a2, (8, 8), 1)),
                0.5: (_const(c05, (2, 2)), _const(a05, (2, 2), 1)),
            }
        )
        assert out.shape == (1, K, 4, 4)
        assert torch.allclose(out, torch.full_like(out, expected))


def test_chain_follows_pseudo_code_on_random_inputs():
    torch.manual_seed(1)
    outs = {
        s: (torch.randn(1, K, int(4 * s), int(6 * s)), torch.rand(1, 1, int(4 * s), int(6 * s)))
        for s in (0.5, 1.0, 1.5, 2.0)
    }
    rs = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
    pred = outs[2.0][0]
    for s in (1.5, 1.0):
        logit, a = outs[s]
        pred = a * logit + (1 - a) * rs(pred, logit)
    logit, a = outs[0.5]
    pred = rs(a * logit, pred) + (1 - rs(a, pred)) * pred
    assert torch.allclose(hmsa_chain(outs), pred, atol=1e-6)


def test_chain_single_scale_and_missing_one_is_an_error():
    logits = torch.randn(1, K, 4, 4)
    assert torch.equal(hmsa_chain({1.0: (logits, None)}), logits)
    with pytest.raises(ValueError, match="1.0"):
        hmsa_chain({0.5: (logits, torch.rand(1, 1, 4, 4)), 2.0: (logits, None)})
    with pytest.raises(ValueError, match="1.0"):
        MultiScaleInference(scales=(0.5, 2.0))


def _toy(x, scale):
    """Pointwise ops + 4x4 average pooling: flip-equivariant on widths divisible by 4."""
    pooled = F.avg_pool2d(x, 4)
    logits = torch.cat([pooled, -pooled.sum(1, keepdim=True)], 1)
    return logits * scale, torch.sigmoid(pooled.mean(1, keepdim=True))


def test_multiscale_inference_output_size_and_value():
    torch.manual_seed(2)
    image = torch.randn(2, 3, 32, 48)
    out = MultiScaleInference(scales=(0.5, 1.0, 2.0))(_toy, image)
    assert out.shape == (2, 4, 8, 12)
    resize = lambda s: F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)  # noqa: E731
    expected = hmsa_chain(
        {0.5: _toy(resize(0.5), 0.5), 1.0: _toy(image, 1.0), 2.0: _toy(resize(2.0), 2.0)}
    )
    assert torch.allclose(out, expected, atol=1e-6)


def test_flip_consistency():
    torch.manual_seed(3)
    image = torch.randn(1, 3, 32, 32)
    plain = MultiScaleInference(scales=(0.5, 1.0), flip=False)
    flipped = MultiScaleInference(scales=(0.5, 1.0), flip=True)
    # an equivariant model gains nothing from flipping: both results agree
    assert torch.allclose(plain(_toy, image), flipped(_toy, image), atol=1e-5)
    # for any model, flip-averaging is flip-invariant
    skewed = lambda x, s: (_toy(x, s)[0] * torch.linspace(0, 1, x.shape[-1] // 4), _toy(x, s)[1])  # noqa: E731
    a = flipped(skewed, image)
    b = flipped(skewed, image.flip(-1)).flip(-1)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(
        plain(skewed, image), plain(skewed, image.flip(-1)).flip(-1), atol=1e-3
    )


def test_training_loss_terms_and_gradients():
    torch.manual_seed(4)
    low = torch.randn(2, K, 4, 4, requires_grad=True)
    attn_logit = torch.zeros(2, 1, 4, 4, requires_grad=True)
    high = torch.randn(2, K, 8, 8, requires_grad=True)
    labels = torch.randint(0, K, (2, 16, 16))
    labels[0, :4] = 255
    attn = torch.sigmoid(attn_logit)
    terms = hmsa_training_loss((low, attn), (high, None), labels, per_scale_weight=0.05)
    assert set(terms) == {"loss_cls", "loss_hmsa_low", "loss_hmsa_high"}
    assert torch.isclose(terms["loss_cls"], cross_entropy(fuse_pair(low, attn, high), labels))
    assert torch.isclose(terms["loss_hmsa_low"], 0.05 * cross_entropy(low, labels))
    assert torch.isclose(terms["loss_hmsa_high"], 0.05 * cross_entropy(high, labels))
    sum(terms.values()).backward()
    assert attn_logit.grad is not None and attn_logit.grad.abs().sum() > 0
    assert torch.isfinite(low.grad).all() and torch.isfinite(high.grad).all()
