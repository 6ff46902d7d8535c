"""Our Swin (`vidseg.models.swin`): any input size, the authors' numbers, their and timm's weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vidseg.convert.ssseg_swin import (
    map_swin_keys,
    merge_norm_to_ours,
    merge_weight_to_ours,
)
from vidseg.models.backbones import Backbone
from vidseg.models.swin import (
    SwinTransformer,
    load_swin_weights,
    load_timm_pretrained,
    relative_position_index,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ssseg_swin_tiny.pt"
TINY = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8), "window_size": 7}


def _fixture() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def _authors_state(fx: dict) -> dict[str, torch.Tensor]:
    return {
        k[len("authors.") :]: (v.float() if v.is_floating_point() else v)
        for k, v in fx.items()
        if k.startswith("authors.")
    }


def _fixture_kwargs(fx: dict) -> dict:
    return {
        "embed_dim": int(fx["config.embed_dim"]),
        "depths": fx["config.depths"].tolist(),
        "num_heads": fx["config.num_heads"].tolist(),
        "window_size": int(fx["config.window_size"]),
        "patch_size": int(fx["config.patch_size"]),
    }


def _assert_close(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs) == 4
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        rel = (a - b).abs().max().item() / b.abs().max().item()
        assert rel < 1e-4, f"C{i + 2}: relative max difference {rel:.2e}"


@pytest.mark.parametrize("size", [(64, 114), (45, 80), (41, 65), (37, 53), (96, 96)])
def test_any_input_size_gives_ceil_strides(size):
    # 512x910, 360x640 and 333x517 scaled down by 8, plus odd sizes and a square one
    bb = Backbone("swin", output_stride=32, model_kwargs=TINY).eval()
    assert (
        bb.channels == [16, 32, 64, 128] and bb.strides == [4, 8, 16, 32] and bb.input_size is None
    )
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = bb(x)
    for f, c, s in zip(feats, bb.channels, bb.strides):
        assert f.shape == (2, c, math.ceil(size[0] / s), math.ceil(size[1] / s))
        assert torch.isfinite(f).all()
    # each image of a batch is computed on its own (the shift mask is shared, not mixed)
    with torch.no_grad():
        single = bb(x[1:])
    assert all(torch.allclose(a[1:], b, atol=1e-5) for a, b in zip(feats, single))


def test_matches_the_authors_swin_on_the_fixture():
    fx = _fixture()
    bb = Backbone("swin", output_stride=32, model_kwargs=_fixture_kwargs(fx)).eval()
    mapped = map_swin_keys(_authors_state(fx), expected=bb.state_dict())
    bb.load_state_dict(mapped, strict=True)
    with torch.no_grad():
        ours = bb(fx["input"])
    _assert_close(ours, [fx[f"out.{i}"] for i in range(4)])


def test_authors_checkpoint_file_loads_as_backbone_weights(tmp_path):
    # a whole segmentor checkpoint of theirs: {'model': {'backbone_net.*': ..., 'decoder.*': ...}}
    fx = _fixture()
    sd = {f"backbone_net.{k}": v for k, v in _authors_state(fx).items()}
    sd["decoder.conv.weight"] = torch.randn(4, 4)
    path = tmp_path / "theirs.pth"
    torch.save({"model": sd, "optimizer": {}, "cur_epoch": 1, "cur_iter": 10}, path)
    bb = Backbone(
        "swin", pretrained=str(path), output_stride=32, model_kwargs=_fixture_kwargs(fx)
    ).eval()
    assert bb.load_report.method == "swin (sssegmentation layout)"
    assert bb.load_report.matched == bb.load_report.total and not bb.load_report.missing
    with torch.no_grad():
        _assert_close(bb(fx["input"]), [fx[f"out.{i}"] for i in range(4)])


def test_merge_permutation_matches_unfold_order():
    # theirs: nn.Unfold(2, stride=2) -> channels c * 4 + 2 * dy + dx; ours: the 2x2 concatenation
    c, h, w = 3, 6, 8
    x = torch.randn(1, c, h, w)
    theirs_in = F.unfold(x, 2, stride=2).transpose(1, 2)  # (1, L, 4C)
    model = SwinTransformer(embed_dim=c, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2)
    merge = model.layers[1].downsample
    w_theirs, g_theirs, b_theirs = torch.randn(2 * c, 4 * c), torch.randn(4 * c), torch.randn(4 * c)
    with torch.no_grad():
        merge.reduction.weight.copy_(merge_weight_to_ours(w_theirs))
        merge.norm.weight.copy_(merge_norm_to_ours(g_theirs))
        merge.norm.bias.copy_(merge_norm_to_ours(b_theirs))
        ours = merge(x.permute(0, 2, 3, 1)).reshape(1, -1, 2 * c)
    expected = F.layer_norm(theirs_in, (4 * c,), g_theirs, b_theirs) @ w_theirs.t()
    assert torch.allclose(ours, expected, atol=1e-5)


def test_key_mapping_errors_name_the_key():
    fx = _fixture()
    sd = _authors_state(fx)
    expected = Backbone("swin", output_stride=32, model_kwargs=_fixture_kwargs(fx)).state_dict()

    with pytest.raises(ValueError, match=r"'stages\.0\.blocks\.0\.attn\.w_msa\.extra'"):
        map_swin_keys({**sd, "stages.0.blocks.0.attn.w_msa.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"'absolute_pos_embed'"):
        map_swin_keys({"absolute_pos_embed": torch.zeros(1, 4, 16), **sd})
    bad = dict(sd)
    bad["stages.1.blocks.1.attn.w_msa.qkv.weight"] = torch.zeros(96, 31)
    with pytest.raises(
        ValueError, match=r"'stages\.1\.blocks\.1\.attn\.w_msa\.qkv\.weight' has shape \(96, 31\)"
    ):
        map_swin_keys(bad, expected=expected)
    missing = {k: v for k, v in sd.items() if k != "norm2.bias"}
    with pytest.raises(ValueError, match=r"'body\.norm2\.bias'"):
        map_swin_keys(missing, expected=expected)
    extra_block = {**sd, "stages.3.blocks.2.norm1.weight": torch.ones(128)}
    with pytest.raises(
        ValueError, match=r"'stages\.3\.blocks\.2\.norm1\.weight' maps to 'body\.layers\.3"
    ):
        map_swin_keys(extra_block, expected=expected)
    index = dict(sd)
    index["stages.0.blocks.1.attn.w_msa.relative_position_index"] = (
        relative_position_index(7).t().contiguous()
    )
    with pytest.raises(
        ValueError, match=r"'stages\.0\.blocks\.1\.attn\.w_msa\.relative_position_index'"
    ):
        map_swin_keys(index)
    odd = dict(sd)
    odd["stages.0.downsample.reduction.weight"] = torch.zeros(32, 63)
    with pytest.raises(ValueError, match=r"'stages\.0\.downsample\.reduction\.weight'"):
        map_swin_keys(odd)
    # without `expected`, keys get the Backbone prefix (or none) and the index buffers are dropped
    plain = map_swin_keys(sd, prefix="")
    assert "layers.1.downsample.reduction.weight" in plain and "patch_embed.proj.weight" in plain
    assert not any("relative_position_index" in k for k in plain)
    assert set(map_swin_keys(sd)) == {f"body.{k}" for k in plain} == set(expected)


def _timm_tiny(**kw):
    import timm

    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=0,
        img_size=128,
        embed_dim=16,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=2,
        **kw,
    )


def test_timm_weights_load_and_compute_what_timm_computes():
    # at 128x128 with window 2 every stage is a multiple of the window and larger than it, so timm's
    # Swin (which drops the shift where a map is no larger than the window) and the authors' padding
    # agree; our outputs are timm's stages + our output norms
    torch.manual_seed(0)
    src = _timm_tiny().eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = SwinTransformer(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=2
    ).eval()
    left, fmt = load_swin_weights(ours, src.state_dict(), "timm")
    assert fmt == "timm" and left == [f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")]
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        stages = src.forward_intermediates(x, indices=4, norm=False, intermediates_only=True)
        out = ours(x)
    expected = [
        getattr(ours, f"norm{i}")(s.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        for i, s in enumerate(stages)
    ]
    _assert_close(out, expected)
    # the original Swin release keeps the merge at the end of a stage (layers.0.downsample)
    original = {}
    for k, v in src.state_dict().items():
        for i in (1, 2, 3):
            k = k.replace(f"layers.{i}.downsample.", f"layers.{i - 1}.downsample.")
        original[k] = v
    again = SwinTransformer(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=2
    )
    assert load_swin_weights(again, original, "original")[1] == "original Swin"
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.state_dict().items())
    # a file of another Swin size is refused with the key named
    with pytest.raises(ValueError, match=r"'patch_embed\.proj\.weight' has shape"):
        load_swin_weights(
            SwinTransformer(
                embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=2
            ),
            src.state_dict(),
            "timm",
        )


def test_pretrained_true_downloads_timm_imagenet22k_for_swin_large(monkeypatch):
    import timm

    asked = []
    src = _timm_tiny()

    def fake_create(name, pretrained=False, **kw):
        asked.append((name, pretrained))
        return src

    monkeypatch.setattr(timm, "create_model", fake_create)
    small = SwinTransformer(
        embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=2
    )
    load_timm_pretrained(small, "swin_large_patch4_window12_384")  # the authors' ImageNet-22k start
    load_timm_pretrained(small, "swin_large_patch4_window12_384.ms_in22k_ft_in1k")
    load_timm_pretrained(small, "swin_tiny_patch4_window7_224")
    assert asked == [
        ("swin_large_patch4_window12_384.ms_in22k", True),
        ("swin_large_patch4_window12_384.ms_in22k_ft_in1k", True),
        ("swin_tiny_patch4_window7_224", True),
    ]
    theirs = src.state_dict()
    assert all(
        torch.equal(v, theirs[k]) for k, v in small.state_dict().items() if not k.startswith("norm")
    )
    with pytest.raises(ValueError, match="no published weights"):
        Backbone("swin", pretrained=True, output_stride=32, model_kwargs=TINY)


def test_img_size_and_output_stride_are_ignored_with_warnings():
    with pytest.warns(UserWarning, match="img_size=\\(64, 64\\) is ignored"):
        bb = Backbone(
            "swin_tiny_patch4_window7_224", output_stride=32, img_size=[64, 64], model_kwargs=TINY
        )
    assert bb.input_size is None
    assert bb(torch.randn(1, 3, 96, 64))[0].shape == (1, 16, 24, 16)
    with pytest.warns(UserWarning, match="cannot be dilated"):
        Backbone("swin", output_stride=8, model_kwargs=TINY)
    with pytest.raises(ValueError, match="unknown Swin argument"):
        Backbone("swin", output_stride=32, model_kwargs=dict(TINY, embed_dims=16))


def test_swin_large_builds_with_the_authors_architecture():
    # ~200M parameters, built once (about 13 s on 2 busy cores, PyTorch's default init)
    bb = Backbone("swin_large_patch4_window12_384", output_stride=32)
    assert bb.channels == [192, 384, 768, 1536] and bb.strides == [4, 8, 16, 32]
    body = bb.body
    assert [len(s.blocks) for s in body.layers] == [2, 2, 18, 2]
    assert [s.blocks[0].attn.num_heads for s in body.layers] == [6, 12, 24, 48]
    assert all(
        b.window == 12 and b.shift == (6 if j % 2 else 0)
        for s in body.layers
        for j, b in enumerate(s.blocks)
    )
    rates = [
        float(b.drop_path.drop_prob) if hasattr(b.drop_path, "drop_prob") else 0.0
        for s in body.layers
        for b in s.blocks
    ]
    assert (
        rates[0] == 0.0 and abs(rates[-1] - 0.3) < 1e-6
    )  # stochastic depth 0 -> 0.3, as the authors
    n = sum(p.numel() for p in bb.parameters())
    assert n == 195_201_204, n
    with torch.no_grad():  # runs at a small odd size: stage 4 is 1x2, padded to one 12x12 window
        feats = bb.eval()(torch.randn(1, 3, 33, 45))
    assert [tuple(f.shape) for f in feats] == [
        (1, 192, 9, 12),
        (1, 384, 5, 6),
        (1, 768, 3, 3),
        (1, 1536, 2, 2),
    ]


def test_training_backward_with_and_without_gradient_checkpointing():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 45, 61)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        bb = Backbone(
            "swin",
            output_stride=32,
            model_kwargs=dict(TINY, drop_path_rate=0.0, grad_checkpointing=ckpt),
        )
        bb.train()
        sum(f.square().mean() for f in bb(x)).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bb.parameters())
        grads.append({k: p.grad for k, p in bb.named_parameters()})
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])
    # stochastic depth (the authors' 0.3) is active in training only
    bb = Backbone("swin", output_stride=32, model_kwargs=TINY)
    assert bb.body.layers[3].blocks[1].drop_path.drop_prob == pytest.approx(0.3)
    with torch.no_grad():
        a, b = bb.eval()(x), bb.eval()(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
