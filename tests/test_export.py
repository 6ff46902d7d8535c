"""`vidseg export`: ONNX step with explicit history, checked against PyTorch (tiny config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")


def test_step_graph_matches_step_in_torch():
    """The wrapper, driven with a hand-kept buffer, reproduces step() exactly (no ONNX needed)."""
    from vidseg.engine.export import StepGraph
    from vidseg.engine.inference import load_inference_model
    from vidseg.models.video import pick_history

    _, model = load_inference_model(TINY, random_init=True)
    graph = StepGraph(model).eval()
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(1, 3, 48, 64, generator=g) for _ in range(4)]
    state, buffer = None, []
    with torch.no_grad():
        for k, x in enumerate(frames):
            ref, state = model.step(x, state)
            if k == 0:
                shape = model._history_map(model.image_model.encode(x, graph.c_dl)).shape
                hist = [torch.zeros(shape)] * model.history
            else:
                hist = pick_history(buffer, model.history, 1, None)
            got, new_map = graph(x, torch.tensor([1.0 if k == 0 else 0.0]), *hist)
            buffer = (buffer + [new_map])[-model.history :]
            assert torch.allclose(got, ref, atol=1e-6), (k, (got - ref).abs().max())


def test_export_cli_checks_against_torch(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    code = main(
        [
            "export",
            TINY,
            "--random-init",
            "--onnx",
            str(out),
            "--size",
            "48",
            "64",
            "--json",
            str(tmp_path / "e.json"),
        ]
    )
    assert code == 0 and out.stat().st_size > 10_000
    info = json.loads((tmp_path / "e.json").read_text())
    assert info["inputs"] == ["frame", "first", "hist_1", "hist_2"]
    assert info["frames"] == 5 and info["max_abs_diff"] < 1e-4


def test_export_without_checkpoint_is_an_error(tmp_path, capsys):
    pytest.importorskip("onnx")
    assert main(["export", TINY, "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
