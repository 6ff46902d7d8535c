"""`vidseg stream --backend onnxruntime`: same labels, resets and outputs as the torch backend."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests._video_fixtures import TINY_CONFIG as TINY
from tests._video_fixtures import count_frames, moving_square, tiny_checkpoint_and_clip
from vidseg.cli import main

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

AGREE = 0.999  # float rounding (onnxruntime vs torch kernels) may flip a near-tie pixel
FRAMES = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A seeded tiny model saved as a checkpoint, a short clip and a shared ONNX cache."""
    setup = tiny_checkpoint_and_clip(tmp_path_factory.mktemp("onnx_stream"), FRAMES)
    return {**setup, "cache": setup["tmp"] / "cache"}


@pytest.fixture(scope="module")
def torch_run(setup) -> Path:
    """The torch backend's output folder (run once; labels/clip/*.png, s.json)."""
    out = setup["tmp"] / "torch"
    with pytest.MonkeyPatch.context() as mp:
        assert _stream(setup, out, monkeypatch=mp) == 0
    return out


def _stream(setup, out: Path, *args, backend: str = "torch", monkeypatch=None) -> int:
    monkeypatch.setenv("VIDSEG_CACHE", str(setup["cache"]))
    weights = [] if "--onnx" in args else ["--checkpoint", str(setup["ckpt"])]
    return main(
        ["stream", TINY, str(setup["video"]), *weights, "--quiet", "--labels", "--out", str(out)]
        + ["--backend", backend, "--json", str(out / "s.json"), *map(str, args)]
    )


def _agreement(a: Path, b: Path) -> float:
    pa, pb = sorted(a.glob("*.png")), sorted(b.glob("*.png"))
    assert [p.name for p in pa] == [p.name for p in pb] and pa
    same = sum(
        int((cv2.imread(str(x), -1) == cv2.imread(str(y), -1)).sum()) for x, y in zip(pa, pb)
    )
    return same / sum(cv2.imread(str(x), -1).size for x in pa)


def test_upsample_argmax_np_matches_torch():
    from vidseg.engine.onnx_stream import upsample_argmax_np
    from vidseg.engine.predict import upsample_argmax

    g = torch.Generator().manual_seed(0)
    for k, spread in ((124, 0.2), (124, 3.0), (5, 1.0), (1, 1.0)):
        logits = torch.randn(1, k, 7, 9, generator=g) * spread
        logits[:, : min(k, 3)] += torch.randn(1, min(k, 3), 7, 9, generator=g) * 4  # competitors
        for size in ((48, 64), (7, 9), (20, 13)):
            ref = upsample_argmax(logits, size).numpy()
            got = upsample_argmax_np(logits[0].numpy(), size)
            assert got.dtype == np.uint8 and got.shape == size
            assert (got == ref).mean() >= AGREE, (k, spread, size)


def test_backends_give_the_same_outputs(setup, torch_run, tmp_path, monkeypatch):
    t, o = torch_run, tmp_path / "onnx"
    assert _stream(setup, o, backend="onnxruntime", monkeypatch=monkeypatch) == 0
    assert _agreement(t / "labels" / "clip", o / "labels" / "clip") >= AGREE
    assert count_frames(o / "clip_overlay.mp4") == (FRAMES, (48, 64))
    st, so = (json.loads((d / "s.json").read_text()) for d in (t, o))
    assert (st["backend"], so["backend"]) == ("torch", "onnxruntime")
    from vidseg.io.selftest import cuda_device

    # no --device: torch takes the GPU when one works (never in CI), onnxruntime the CPU
    assert (st["device"], so["device"]) == (cuda_device().choice, "cpu")
    assert so["frames"] == FRAMES and so["resets"] == st["resets"] and so["state_bytes"] > 0
    cached = sorted((setup["cache"] / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].stem.endswith("_64x85")
    # a second run reuses the cached export
    mtime = cached[0].stat().st_mtime_ns
    assert _stream(setup, tmp_path / "again", backend="onnxruntime", monkeypatch=monkeypatch) == 0
    assert cached[0].stat().st_mtime_ns == mtime
    assert len(list((setup["cache"] / "onnx").iterdir())) == 1


def test_resets_match_torch(setup, tmp_path):
    """Size change, shot cut, no_history: the ONNX state resets where StreamState does."""
    from vidseg.config import load_config
    from vidseg.engine.inference import load_inference_model
    from vidseg.engine.onnx_stream import onnx_stepper
    from vidseg.engine.stream import TorchStepper

    cfg = load_config(TINY, ["stream.reset_on_shot_cut=true"])
    _, model = load_inference_model(TINY, setup["ckpt"])
    frames = [moving_square(k, 48, 64) for k in range(3)]
    frames += [moving_square(3, 60, 64), moving_square(4, 60, 64)]  # new input size
    frames += [255 - moving_square(5, 60, 64), 255 - moving_square(6, 60, 64)]  # shot cut
    for no_history in (False, True):
        shot = cfg.stream.shot_cut_threshold
        torch_step = TorchStepper(
            model, 64, cfg.data.mean, cfg.data.std, "cpu", None, no_history, shot
        )
        onnx_step = onnx_stepper(cfg, model, None, 1, 64, no_history, tmp_path / "cache")
        ts = os_ = None
        for rgb in frames:
            a, ts = torch_step.step(rgb, ts)
            b, os_ = onnx_step.step(rgb, os_)
            assert a.shape == b.shape == rgb.shape[:2]
            assert (a == b).mean() >= AGREE
            assert os_.resets == ts.resets
        assert os_.resets == (0 if no_history else 2)
        assert len(os_.buffer) == (1 if no_history else 2)


def test_given_onnx_file(setup, torch_run, tmp_path, monkeypatch, capsys):
    onnx = tmp_path / "tiny.onnx"
    export = ["export", TINY, "--checkpoint", str(setup["ckpt"]), "--onnx", str(onnx)]
    assert main([*export, "--size", "64", "85", "--no-check"]) == 0
    t, o = torch_run, tmp_path / "onnx"
    assert _stream(setup, o, "--onnx", onnx, backend="onnxruntime", monkeypatch=monkeypatch) == 0
    assert _agreement(t / "labels" / "clip", o / "labels" / "clip") >= AGREE
    capsys.readouterr()
    # frames that reach another input size: one line naming the file and the sizes
    code = _stream(
        setup,
        tmp_path / "x",
        "--onnx",
        onnx,
        "--short-side",
        32,
        backend="onnxruntime",
        monkeypatch=monkeypatch,
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(onnx) in err and "64x85" in err and "32x43" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "eval.flip=true"], "--backend torch"),
        (["--scales", "0.5,1.0"], "--backend torch"),
        (["--onnx", "missing.onnx"], "missing.onnx"),
    ],
)
def test_refused_settings_are_one_line(setup, tmp_path, monkeypatch, capsys, args, needle):
    code = _stream(setup, tmp_path / "o", *args, backend="onnxruntime", monkeypatch=monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err


def test_not_an_onnx_file(setup, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    code = _stream(
        setup, tmp_path / "o", "--onnx", bad, backend="onnxruntime", monkeypatch=monkeypatch
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(bad) in err and len(err.splitlines()) == 1


def test_missing_onnxruntime_is_one_line(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    code = _stream(setup, tmp_path / "o", backend="onnxruntime", monkeypatch=monkeypatch)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs onnxruntime" in err and "--backend torch" in err
    assert len(err.splitlines()) == 1


def test_history_zero_model(setup, tmp_path, monkeypatch):
    """h = 0 (the image model) exports as forward(frame) -> logits and streams the same."""
    from vidseg.engine.inference import load_inference_model

    _, model = load_inference_model(TINY, random_init=True, overrides=["model.history=0"])
    ckpt = tmp_path / "h0.pth"
    torch.save(model.state_dict(), ckpt)
    setup = {**setup, "ckpt": ckpt}
    t, o = tmp_path / "torch", tmp_path / "onnx"
    assert _stream(setup, t, "--set", "model.history=0", monkeypatch=monkeypatch) == 0
    code = _stream(
        setup, o, "--set", "model.history=0", backend="onnxruntime", monkeypatch=monkeypatch
    )
    assert code == 0
    assert _agreement(t / "labels" / "clip", o / "labels" / "clip") >= AGREE
    assert json.loads((o / "s.json").read_text())["state_bytes"] == 0
