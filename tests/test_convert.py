"""`vidseg convert sssegmentation` and the authors' checkpoints given directly to eval/stream/export."""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pytest
import torch
from test_ssseg_parity import load_fixture, vidseg_config_yaml


@pytest.fixture(scope="module")
def authors(tmp_path_factory):
    """(authors' checkpoint path, matching vidseg config path, fixture) for the UperNet variant."""
    tmp = tmp_path_factory.mktemp("convert")
    fx = load_fixture("upernet_aspp")
    cfg = vidseg_config_yaml(json.loads(fx["cfg"]), fx["image"].shape[:2], tmp)
    src = tmp / "authors.pth"
    torch.save({"model": fx["state_dict"], "optimizer": {}, "cur_epoch": 3, "cur_iter": 100}, src)
    return src, cfg, fx


def run_cli(*argv) -> int:
    from vidseg.cli import main

    return main([str(a) for a in argv])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_convert_writes_a_vidseg_checkpoint(authors, tmp_path, capsys):
    from vidseg.engine.inference import load_inference_model

    src, cfg, fx = authors
    dst = tmp_path / "converted.pth"
    assert run_cli("convert", "sssegmentation", src, dst, "--config", cfg) == 0
    assert "converted" in capsys.readouterr().out
    ckpt = torch.load(dst, weights_only=True)
    assert set(ckpt) >= {"model", "config", "converted_from"}
    _, model = load_inference_model(None, dst)  # the stored config rebuilds the model
    state = model.state_dict()
    key = "image_model.cls_head.classifier.weight"
    assert torch.equal(state[key], fx["state_dict"]["decoder_cls.conv2.weight"])


def test_mismatched_config_names_the_first_key(authors, tmp_path, capsys):
    src, cfg, _ = authors
    code = run_cli(
        "convert",
        "sssegmentation",
        src,
        tmp_path / "x.pth",
        "--config",
        cfg,
        "--set",
        "model.num_classes=23",
    )
    assert code == 2
    err = one_line_error(capsys)
    assert "memory_module.memory" in err or "decoder_" in err
    assert not (tmp_path / "x.pth").exists()


def test_missing_layer_names_the_vidseg_key(authors, tmp_path, capsys):
    src, cfg, _ = authors
    code = run_cli(
        "convert",
        "sssegmentation",
        src,
        tmp_path / "x.pth",
        "--config",
        cfg,
        "--set",
        "model.head.cwi_attention=true",
    )
    assert code == 2
    assert "cwi_attention" in one_line_error(capsys)


@pytest.mark.parametrize(
    "content, cause",
    [
        (None, "not found"),
        (b"", "empty (0 bytes)"),
        (b"not a checkpoint at all" * 9, "not a torch.save file"),
        (b"PK\x03\x04truncated", "truncated or corrupt"),
        ("half", "truncated or corrupt"),
    ],
)
def test_not_a_checkpoint_is_one_line(authors, tmp_path, capsys, content, cause):
    """The same checks as every other checkpoint reader (`load_checkpoint`), one line each."""
    src, cfg, _ = authors
    bad = tmp_path / "bad.pth"
    if content == "half":
        whole = src.read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    elif content is not None:
        bad.write_bytes(content)
    assert run_cli("convert", "sssegmentation", bad, tmp_path / "x.pth", "--config", cfg) == 2
    err = one_line_error(capsys)
    assert err.startswith("vidseg convert: error: ") and "bad.pth" in err and cause in err
    assert len(err) < 300 and not (tmp_path / "x.pth").exists()


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_a_pickle_with_code_is_refused_and_never_runs(authors, tmp_path, capsys, monkeypatch):
    _, cfg, _ = authors
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"model": _RunsCode()}, f)
    assert run_cli("convert", "sssegmentation", evil, tmp_path / "x.pth", "--config", cfg) == 2
    err = one_line_error(capsys)
    assert "evil.pth" in err and "weights_only" in err and len(err) < 300
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_a_vidseg_checkpoint_is_not_taken_for_the_authors(authors, tmp_path, capsys):
    _, cfg, _ = authors
    ours = tmp_path / "ours.pth"
    torch.save({"model": {"image_model.bottleneck.0.weight": torch.zeros(1)}}, ours)
    assert run_cli("convert", "sssegmentation", ours, tmp_path / "x.pth", "--config", cfg) == 2
    assert "not sssegmentation's" in one_line_error(capsys)


def test_stream_and_eval_take_the_authors_file_directly(authors, caplog):
    from vidseg.engine.inference import load_inference_model

    src, cfg, fx = authors
    with caplog.at_level(logging.INFO, logger="vidseg.engine.inference"):
        _, model = load_inference_model(cfg, src)
    assert "converted in memory" in caplog.text
    key = "image_model.fpn.laterals.0.0.weight"
    assert torch.equal(model.state_dict()[key], fx["state_dict"]["lateral_convs.0.0.weight"])


def test_stream_cli_runs_on_the_authors_checkpoint(authors, tmp_path, capsys):
    from _video_fixtures import write_video

    src, cfg, _ = authors
    video = tmp_path / "clip.mp4"
    write_video(video, n=3, h=64, w=96)
    code = run_cli("stream", cfg, video, "--checkpoint", src, "--out", tmp_path / "out", "--labels")
    assert code == 0, capsys.readouterr().err
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert len(pngs) == 3


def test_a_zoo_name_offline_is_one_line(authors, tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    _, cfg, _ = authors
    monkeypatch.setenv("VIDSEG_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    from _video_fixtures import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, n=2, h=64, w=96)
    code = run_cli(
        "stream",
        cfg,
        video,
        "--checkpoint",
        "mcibiplusplus_upernet_resnet101os8_vspw",
        "--out",
        tmp_path / "out",
    )
    assert code == 2
    err = one_line_error(capsys)
    assert "modelstore" in err and str(tmp_path / "cache") in err


def test_expand_history_fusion_only_widens():
    from vidseg.convert.sssegmentation import expand_history_fusion
    from vidseg.engine.checkpoint import CheckpointError

    w = torch.randn(4, 8, 3, 3)
    wide = expand_history_fusion(w, (4, 16, 3, 3))
    assert torch.equal(wide[:, :8], w) and not wide[:, 8:].any()
    with pytest.raises(CheckpointError):
        expand_history_fusion(w, (4, 4, 3, 3))
    with pytest.raises(CheckpointError):
        expand_history_fusion(w, (5, 16, 3, 3))
    assert np.isfinite(wide.numpy()).all()
