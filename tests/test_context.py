"""Within-image context heads: PPM, ASPP, GALD (GA + LDv1/LDv2), UperNet's FPN decoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests._small_models import QUARTER_MODEL
from vidseg.models.context import ASPP, PPM, FPNDecoder, GALDHead, build_context
from vidseg.models.context.gald import LocalDistributionV1, LocalDistributionV2, local_attention

SIZES = [(8, 8), (9, 13), (3, 5)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("ppm", {}),
        ("aspp", {}),
        ("ppm", {"bins": (1, 3)}),
        ("aspp", {"dilations": (1, 2)}),
        ("gald", {"ga": "aspp", "ld": "v2"}),
        ("gald", {"ga": "ppm", "ld": "v1"}),
        ("gald", {"ga": "nonlocal", "ld": "v1"}),
        ("gald", {"ga": "nonlocal", "ld": "v2", "ld_kernel": 3, "ld_dilation": 1}),
    ],
)
def test_context_output_shapes(kind, kwargs, size):
    torch.manual_seed(0)
    head = build_context(kind, 16, 8, **kwargs)
    x = torch.randn(2, 16, *size)
    y = head(x)
    assert y.shape == (2, 8, *size)
    assert torch.isfinite(y).all()


def test_context_backward_reaches_every_parameter():
    torch.manual_seed(0)
    for head in (PPM(16, 8), ASPP(16, 8), GALDHead(16, 8, ga="nonlocal", ld="v1"), GALDHead(16, 8)):
        head(torch.randn(2, 16, 9, 13)).square().mean().backward()
        no_grad = [n for n, p in head.named_parameters() if p.grad is None]
        assert not no_grad, f"{type(head).__name__}: no gradient for {no_grad}"


def test_build_context_kinds_and_errors():
    assert build_context("none", 16, 8) is None
    assert isinstance(build_context("upernet", 16, 8), PPM)
    assert isinstance(build_context("gald", 16, 8, ga="ppm", ld="v1"), GALDHead)
    with pytest.raises(ValueError, match="unknown context 'psp'"):
        build_context("psp", 16, 8)
    with pytest.raises(ValueError, match="ga='cgnl'"):
        GALDHead(16, 8, ga="cgnl")
    with pytest.raises(ValueError, match="ld_kernel=4 must be odd"):
        GALDHead(16, 8, ld_kernel=4)
    with pytest.raises(ValueError, match="bad options"):
        build_context("ppm", 16, 8, dilations=(1, 2))


def _naive_local_attention(q, k, v, kernel, dilation, scale):
    """Direct loop over positions and neighbours; outside neighbours are zero keys and values."""
    b, c, h, w = q.shape
    out = torch.zeros(b, v.shape[1], h, w, dtype=q.dtype)
    half = (kernel - 1) // 2
    for n in range(b):
        for i in range(h):
            for j in range(w):
                logits, values = [], []
                for a in range(kernel):
                    for bb in range(kernel):
                        y, x = i + dilation * (a - half), j + dilation * (bb - half)
                        inside = 0 <= y < h and 0 <= x < w
                        key = k[n, :, y, x] if inside else torch.zeros(c, dtype=q.dtype)
                        val = v[n, :, y, x] if inside else torch.zeros(v.shape[1], dtype=q.dtype)
                        logits.append(scale * torch.dot(q[n, :, i, j], key))
                        values.append(val)
                attn = torch.softmax(torch.stack(logits), 0)
                out[n, :, i, j] = (attn[:, None] * torch.stack(values)).sum(0)
    return out


@pytest.mark.parametrize(
    "kernel, dilation, size, max_elements",
    [(3, 1, (5, 6), 2**25), (3, 2, (5, 6), 1), (5, 6, (9, 13), 2**25), (5, 2, (7, 4), 3000)],
)
def test_local_attention_equals_naive_loop(kernel, dilation, size, max_elements):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, c, *size, generator=g, dtype=torch.float64) for c in (3, 3, 4))
    got = local_attention(q, k, v, kernel, dilation, scale=0.7, max_elements=max_elements)
    want = _naive_local_attention(q, k, v, kernel, dilation, 0.7)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_ldv2_module_equals_naive_loop_on_its_projections():
    torch.manual_seed(2)
    ld = LocalDistributionV2(4, kernel=3, dilation=2).double()
    xl, xg = (
        torch.randn(1, 4, 6, 5, dtype=torch.float64),
        torch.randn(1, 4, 6, 5, dtype=torch.float64),
    )
    assert ld.key_channels == 2
    s = torch.cat([xl, xg], 1)
    want = _naive_local_attention(ld.query(s), ld.key(s), ld.value(s), 3, 2, 2**-0.5)
    torch.testing.assert_close(ld(xl, xg), want, rtol=1e-10, atol=1e-10)


def test_ldv1_mask_is_a_gain_between_1_5_and_2():
    torch.manual_seed(3)
    ld = LocalDistributionV1(6)
    for size in [(4, 5), (20, 17)]:  # smaller than 15 goes through the padding path
        xg = torch.rand(2, 6, *size) + 0.1
        ratio = ld(xg) / xg
        assert ratio.shape == xg.shape
        assert ratio.min() >= 1.5 - 1e-6 and ratio.max() < 2.0


def test_fpn_decoder_on_a_dilated_pyramid_and_odd_sizes():
    torch.manual_seed(4)
    fpn = FPNDecoder([4, 6, 8], 12, 8)
    # OS8: C3, C4 and the top share one grid
    y = fpn(
        torch.randn(2, 12, 8, 8),
        [torch.randn(2, 4, 16, 16), torch.randn(2, 6, 8, 8), torch.randn(2, 8, 8, 8)],
    )
    assert y.shape == (2, 8, 16, 16)
    # OS32 with odd sizes (a 65 x 103 image)
    y = fpn(
        torch.randn(2, 12, 3, 4),
        [torch.randn(2, 4, 17, 26), torch.randn(2, 6, 9, 13), torch.randn(2, 8, 5, 7)],
    )
    assert y.shape == (2, 8, 17, 26)
    with pytest.raises(ValueError, match="expected 3"):
        FPNDecoder([4, 6], 12, 8)


def test_upernet_on_a_real_backbone_gives_the_quarter_grid():
    from vidseg.models.backbones import Backbone

    torch.manual_seed(5)
    bb = Backbone("resnet18", output_stride=8)
    feats = bb(torch.randn(2, 3, 64, 96))
    ppm = build_context("upernet", bb.channels[-1], 8)
    top = torch.cat([ppm(feats[-1]), ppm(feats[-1])], 1)  # stands in for concat[F_T output, C_wi]
    y = FPNDecoder(bb.channels[:3], 16, 8)(top, feats[:3])
    assert y.shape == (2, 8, 16, 24)


# ---------------------------------------------------------------- UperPyramid(reduce=...)


def _pyramid_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, c, s, s, generator=gen) for c, s in ((8, 16), (12, 8), (16, 8))]
    return torch.randn(2, 10, 8, 8, generator=gen), feats


@pytest.mark.parametrize("fold", [False, True], ids=["batchnorm", "folded-bias"])
def test_uper_pyramid_reduce_equals_the_block_on_the_concatenation(fold):
    from vidseg.models.context.pyramid import UperPyramid
    from vidseg.models.fuse import fold_batchnorm
    from vidseg.models.heads import ConvBNReLU

    torch.manual_seed(0)
    pyramid = UperPyramid([8, 12, 16], lateral_channels=10, channels=6)
    block = ConvBNReLU(pyramid.out_channels, 5, kernel_size=3)
    for bn in [m for m in (*pyramid.modules(), *block.modules()) if isinstance(m, nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    pyramid.eval(), block.eval()
    if fold:
        fold_batchnorm(block)
        assert block[0].bias is not None
    top, feats = _pyramid_inputs()
    with torch.no_grad():
        expected = block(pyramid(top, feats))
        got = pyramid(top, feats, reduce=block)
    assert got.shape == expected.shape == (2, 5, 16, 16)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_uper_pyramid_reduce_rejects_a_block_of_another_width():
    from vidseg.models.context.pyramid import UperPyramid
    from vidseg.models.heads import ConvBNReLU

    pyramid = UperPyramid([8, 12, 16], lateral_channels=10, channels=6).eval()
    top, feats = _pyramid_inputs()
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match="reduce takes 7 channels, the levels give 28"),
    ):
        pyramid(top, feats, reduce=ConvBNReLU(7, 5, 3).eval())


def test_authors_upernet_inference_skips_r_aug_and_keeps_the_logits():
    """The sssegmentation-layout UperNet decodes level by level without grad: same logits."""
    from vidseg.config import load_config
    from vidseg.models.build import build_model

    cfg = load_config(
        "upernet_mcibipp_r50",
        [
            "model.backbone.pretrained=false",
            "model.backbone.name=resnet18",
            *QUARTER_MODEL,
            "model.aux_channels=16",
            "model.head.fpn_channels=32",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.enable_grad():
        ref, _ = model.step(x)  # grad enabled: the concatenation path
    with torch.no_grad():
        got, _ = model.step(x)
    assert torch.allclose(got, ref.detach(), atol=1e-5, rtol=1e-4)
    enc = model.image_model.encode(x, model.image_model.sample_memory())
    with torch.no_grad():
        _, r_aug = model.image_model.decode(
            enc, model.image_model.within_image_context(enc), enc.cbi, []
        )
    assert r_aug is None
