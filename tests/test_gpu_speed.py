"""bench/gpu_speed.py end to end on the CPU in its smoke mode (seconds: reduced backbone, 64x96)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_speed.py"


@pytest.fixture(scope="module")
def gpu_speed():
    spec = importlib.util.spec_from_file_location("gpu_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_smoke_run_measures_every_model_and_variant(gpu_speed, capsys):
    assert gpu_speed.main(["--device", "cpu", "--smoke"]) == 0
    out = _last_json(capsys.readouterr().out)
    assert out["smoke"] is True and out["device"] == "cpu"
    assert set(out["stream_fps"]) == set(out["train"]) == {"r50", "swinl"}
    for model in ("r50", "swinl"):
        fps = out["stream_fps"][model]
        assert set(fps) == {
            "fp32",
            "amp_fp16",
            "amp_bf16",
            "channels_last",
            "amp_bf16_channels_last",
        }
        assert isinstance(fps["fp32"], float) and fps["fp32"] > 0, fps
        assert isinstance(fps["amp_bf16"], float) and fps["amp_bf16"] > 0, fps
        assert isinstance(fps["amp_bf16_channels_last"], float), fps
        train = out["train"][model]
        assert train["it_per_s"] > 0 and train["data"] == "synthetic random", train


def test_a_failing_variant_is_reported_and_the_rest_still_run(gpu_speed, capsys, monkeypatch):
    original = gpu_speed.stream_fps

    def flaky(model, variant, *args):
        if variant == "amp_fp16":
            raise RuntimeError("kernel not available\nsecond line")
        return original(model, variant, *args)

    monkeypatch.setattr(gpu_speed, "stream_fps", flaky)
    argv = ["--device", "cpu", "--smoke", "--models", "r50", "--no-train"]
    assert gpu_speed.main([*argv, "--variants", "fp32", "amp_fp16", "channels_last"]) == 0
    text = capsys.readouterr().out
    assert "r50 stream amp_fp16: FAILED RuntimeError: kernel not available" in text
    fps = _last_json(text)["stream_fps"]["r50"]
    assert fps["amp_fp16"] == {"error": "RuntimeError: kernel not available"}
    assert fps["fp32"] > 0 and fps["channels_last"] > 0
    assert _last_json(text)["train"] == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(gpu_speed, capsys):
    assert gpu_speed.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]


def test_profile_prints_a_kernel_table_per_variant(gpu_speed, capsys):
    argv = ["--device", "cpu", "--smoke", "--models", "r50", "--no-train", "--profile"]
    assert gpu_speed.main([*argv, "--variants", "fp32", "amp_bf16_channels_last"]) == 0
    out = capsys.readouterr().out
    for variant in ("fp32", "amp_bf16_channels_last"):
        table = out.split(f"r50 stream {variant} profile:")[1]
        assert "aten::" in table.split("Self CPU time total")[0], table[:500]
