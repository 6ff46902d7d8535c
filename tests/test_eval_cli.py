"""`vidseg eval` end to end on a tiny synthetic VSPW split; `evaluate()` with and without history."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidseg.config import config_to_dict, load_config
from vidseg.models.build import build_model

KEYS = {
    "pixel_acc",
    "mean_class_acc",
    "miou",
    "miou_all_classes",
    "mvc8",
    "mvc16",
    "tc",
    "per_class",
    "per_video",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from vidseg.data.synthetic import make_synthetic_vspw

    root = tmp_path_factory.mktemp("synth")
    make_synthetic_vspw(
        root,
        num_train=1,
        num_val=2,
        num_test=0,
        frames=18,
        height=48,
        width=80,
        seed=3,
        write_mp4=False,
    )
    return root


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory):
    cfg = load_config("configs/synthetic/tiny.yaml", [f"data.root={dataset}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg)}, path)
    return path


def _vidseg(*args):
    return subprocess.run(
        [sys.executable, "-m", "vidseg", *args], capture_output=True, text=True, timeout=600
    )


def test_eval_writes_predictions_and_metrics(dataset, checkpoint, tmp_path):
    out = tmp_path / "eval"
    proc = _vidseg(
        "eval",
        "configs/synthetic/tiny.yaml",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(dataset),
        "--out",
        str(out),
        "--color",
        "--set",
        "eval.tc=true",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics)
    for key in ("pixel_acc", "mean_class_acc", "miou", "mvc8", "mvc16", "tc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["videos"] == 2 and metrics["frames"] == 36
    assert "mIoU" in proc.stdout
    videos = sorted(p.name for p in (out / "pred").iterdir())
    assert len(videos) == 2
    pngs = sorted((out / "pred" / videos[0]).glob("*.png"))
    masks = sorted((dataset / "data" / videos[0] / "mask").glob("*.png"))
    assert [p.name for p in pngs] == [m.name for m in masks]
    import cv2

    pred = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert pred.ndim == 2 and pred.shape == mask.shape and pred.max() <= 123
    assert any((out / "color").rglob("*.png"))
    # the same predictions scored by `vidseg score` give the same numbers
    proc = _vidseg(
        "score",
        "--data",
        str(dataset),
        "--pred",
        str(out / "pred"),
        "--out",
        str(tmp_path / "s.json"),
    )
    assert proc.returncode == 0, proc.stderr
    scored = json.loads((tmp_path / "s.json").read_text())
    for key in ("pixel_acc", "miou", "mvc8", "mvc16", "tc"):
        assert scored[key] == pytest.approx(metrics[key], abs=1e-9), key


def test_eval_with_mismatched_config_is_one_line_error(dataset, checkpoint):
    proc = _vidseg(
        "eval",
        "configs/synthetic/tiny.yaml",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(dataset),
        "--set",
        "model.history=1",
    )
    assert proc.returncode == 2
    assert "model.history" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_on_a_missing_root_points_to_data_check(checkpoint, tmp_path):
    proc = _vidseg(
        "eval",
        "configs/synthetic/tiny.yaml",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(tmp_path),
    )
    assert proc.returncode == 2 and "vidseg data check" in proc.stderr


def test_no_history_differs_from_history(dataset, checkpoint):
    from vidseg.engine.evaluate import evaluate
    from vidseg.engine.inference import load_inference_model

    cfg, model = load_inference_model(None, checkpoint)
    cfg.eval.tc = False
    with_history = evaluate(model, cfg, root=str(dataset), progress=False)
    without = evaluate(model, cfg, root=str(dataset), progress=False, no_history=True)
    assert with_history["frames"] == without["frames"] == 36
    assert not np.isclose(with_history["mvc8"], without["mvc8"]) or not np.isclose(
        with_history["pixel_acc"], without["pixel_acc"]
    )
