"""`vidseg stream --precision` (autocast) and `--compile` (torch.compile of the modules)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests._video_fixtures import TINY_CONFIG as TINY
from tests._video_fixtures import tiny_checkpoint_and_clip
from vidseg.cli import main
from vidseg.engine.stream import TorchStepper
from vidseg.models.fuse import compile_modules

FRAMES = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A seeded tiny model saved as a checkpoint and a 6-frame clip."""
    return tiny_checkpoint_and_clip(tmp_path_factory.mktemp("stream_precision"), FRAMES)


def _stream(setup, out: Path, *args: str) -> int:
    return main(
        ["stream", TINY, str(setup["video"]), "--checkpoint", str(setup["ckpt"]), "--quiet"]
        + ["--labels", "--out", str(out), "--json", str(out / "s.json"), *args]
    )


def _labels(out: Path) -> np.ndarray:
    files = sorted(out.glob("labels/*/*.png"))
    assert len(files) == FRAMES, files
    return np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files])


def test_bf16_stream_writes_every_frame_with_labels_close_to_fp32(setup):
    assert _stream(setup, setup["tmp"] / "fp32") == 0
    assert _stream(setup, setup["tmp"] / "bf16", "--precision", "bf16") == 0
    fp32, bf16 = _labels(setup["tmp"] / "fp32"), _labels(setup["tmp"] / "bf16")
    assert fp32.shape == bf16.shape
    # random weights: the logits of the classes are close everywhere, so bf16 rounding flips a
    # quarter of the pixels (chance would keep 1 / 124); the logits themselves are checked below
    assert float((fp32 == bf16).mean()) >= 0.6
    assert json.loads((setup["tmp"] / "bf16" / "s.json").read_text())["frames"] == FRAMES


def test_bf16_logits_and_history_stay_within_bf16_rounding_of_fp32(setup):
    """Three streaming steps (history in use) under bf16 autocast against fp32."""
    from vidseg.engine.inference import load_inference_model

    _, model = load_inference_model(TINY, setup["ckpt"])
    frames = torch.randn(3, 1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    state32 = state16 = None
    with torch.no_grad():
        for x in frames:
            ref, state32 = model.step(x, state32)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low, state16 = model.step(x, state16)
            err = (low.float() - ref).abs().max() / ref.abs().max()
            assert err < 0.02, float(err)  # measured 0.5 %: bf16 keeps 8 bits of mantissa


def test_the_stepper_runs_the_model_under_autocast(setup, monkeypatch):
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return np.zeros((4, 4), np.uint8), None

    monkeypatch.setattr("vidseg.engine.stream.segment_frame", spy)
    rgb = np.zeros((4, 4, 3), np.uint8)
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        TorchStepper(None, None, (0, 0, 0), (1, 1, 1), precision=precision).step(rgb, None)
        assert seen.pop() == dtype, precision
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        TorchStepper(None, None, (0, 0, 0), (1, 1, 1), precision="int8")


def test_precision_and_compile_are_refused_with_onnxruntime(setup, capsys):
    for extra in (["--precision", "bf16"], ["--compile"]):
        code = _stream(setup, setup["tmp"] / "refused", "--backend", "onnxruntime", *extra)
        assert code != 0
        assert "apply to --backend torch" in capsys.readouterr().err
    assert not (setup["tmp"] / "refused").exists()


def test_compile_modules_wraps_the_image_model_and_keeps_its_outputs():
    from vidseg.engine.inference import load_inference_model

    torch.manual_seed(0)
    _, model = load_inference_model(TINY, random_init=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before, _ = model.step(x)
    compiled = {
        name
        for name, child in model.image_model.named_children()
        if isinstance(child, torch._dynamo.eval_frame.OptimizedModule)
    }
    compile_modules(model, backend="eager")  # the graph capture without code generation
    compiled = {
        name
        for name, child in model.image_model.named_children()
        if isinstance(child, torch._dynamo.eval_frame.OptimizedModule)
    } - compiled
    assert "backbone" in compiled and "memory" not in compiled
    with torch.no_grad():
        after, _ = model.step(x)
    assert torch.allclose(before, after, atol=1e-5)


def test_default_device_is_the_gpu_only_when_one_works(monkeypatch):
    """No --device: the torch backend takes CUDA when selftest.cuda_device() says it runs,
    onnxruntime always the CPU; an explicit --device is kept."""
    from vidseg.commands.stream import stream_device
    from vidseg.io import selftest

    monkeypatch.setattr(selftest, "cuda_device", lambda: selftest.Decision("cuda", "test"))
    assert stream_device(None, "torch") == "cuda"
    assert stream_device(None, "onnxruntime") == "cpu"
    assert stream_device("cpu", "torch") == "cpu"
    monkeypatch.setattr(selftest, "cuda_device", lambda: selftest.Decision("cpu", "no GPU"))
    assert stream_device(None, "torch") == "cpu"
    assert stream_device("cuda:1", "torch") == "cuda:1"
