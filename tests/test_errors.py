"""One error path: every expected failure is one `error:` line naming the culprit, a documented
exit code and no traceback; numbers are range-checked where parsed; outputs are checked first.

Most cases fail before a model is built, so the file runs in seconds.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidseg.cli import main
from vidseg.config import ConfigError, load_config
from vidseg.errors import EXIT_BAD_INPUT, EXIT_PARTIAL, VidsegError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")


def cli(capsys, *argv) -> tuple[int, str]:
    """Run `vidseg ARGV`; returns (exit code, stderr). Parser errors exit through SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_error(err: str, *names: str) -> str:
    """Exactly one `error:` line, no traceback, and it names every one of `names`."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """A two-frame folder source (48 x 64)."""
    folder = tmp_path_factory.mktemp("frames")
    for k in range(2):
        cv2.imwrite(str(folder / f"{k:05d}.png"), np.full((48, 64, 3), 40 * k, np.uint8))
    return folder


class _NotWeights:
    """A pickled object that weights_only loading must refuse."""


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (file, text the error must contain)."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("ckpts")
    (d / "empty.pth").write_bytes(b"")
    torch.save({"model": {"w": torch.zeros(3)}}, d / "foreign.pth")
    whole = (d / "foreign.pth").read_bytes()
    (d / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (d / "text.pth").write_text("not a checkpoint\n" * 20)
    torch.save({"model": _NotWeights()}, d / "object.pth")
    with open(d / "pickle.pth", "wb") as f:  # a plain pickle, not a torch.save zip
        pickle.dump({"model": _NotWeights()}, f)
    save_file({"foo": torch.zeros(2)}, str(d / "foreign.safetensors"))
    (d / "broken.safetensors").write_bytes(b"\x00garbage")
    return {
        "missing": (d / "missing.pth", "not found"),
        "empty": (d / "empty.pth", "empty (0 bytes)"),
        "truncated": (d / "truncated.pth", "truncated or corrupt"),
        "text": (d / "text.pth", "not a torch.save file"),
        "object": (d / "object.pth", "_NotWeights"),
        "pickle": (d / "pickle.pth", "weights_only"),
        "foreign": (d / "foreign.pth", "none of this model's"),
        "foreign_safetensors": (d / "foreign.safetensors", "none of this model's"),
        "broken_safetensors": (d / "broken.safetensors", "not a valid .safetensors"),
    }


CKPT_CASES = ["missing", "empty", "truncated", "text", "object", "pickle", "foreign",
              "foreign_safetensors", "broken_safetensors"]


@pytest.mark.parametrize("command", ["stream", "eval", "export"])
@pytest.mark.parametrize("case", CKPT_CASES)
def test_bad_checkpoints_are_one_line(command, case, bad_checkpoints, frames, tmp_path, capsys):
    path, expected = bad_checkpoints[case]
    argv = {
        "stream": ["stream", TINY, frames, "--out", tmp_path / "o", "--quiet"],
        "eval": ["eval", TINY, "--out", tmp_path / "o", "--no-tc"],
        "export": ["export", TINY, "--onnx", tmp_path / "m.onnx", "--no-check"],
    }[command]
    code, err = cli(capsys, *argv, "--checkpoint", path)
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, path.name, expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["stream", "eval"])
def test_device_cuda_without_gpu(command, frames, tmp_path, capsys):
    argv = {"stream": ["stream", TINY, frames, "--out", tmp_path / "o"],
            "eval": ["eval", TINY, "--out", tmp_path / "o"]}[command]
    code, err = cli(capsys, *argv, "--random-init", "--device", "cuda")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "'cuda'", "CUDA is not available", "--device cpu")
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_unknown_device_and_gpu_index(capsys, frames, tmp_path):
    from vidseg.engine.inference import check_device
    from vidseg.errors import DeviceError

    code, err = cli(capsys, "stream", TINY, frames, "--random-init", "--device", "gpu0",
                    "--out", tmp_path / "o")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "'gpu0'", "cpu, cuda, cuda:N")
    assert check_device(None) == torch.device("cpu")
    with pytest.raises(DeviceError, match="cuda:0 to|CUDA is not available"):
        check_device(f"cuda:{torch.cuda.device_count() + 3}")
    with pytest.raises(DeviceError, match="not supported"):
        check_device("meta")


def test_short_side_below_the_network_stride(frames, tmp_path, capsys):
    # resnet18 at output stride 32: a 9 px short side leaves no feature map
    code, err = cli(capsys, "stream", TINY, frames, "--random-init", "--quiet", "--out",
                    tmp_path / "o", "--short-side", "9", "--set", "model.backbone.output_stride=32")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "short side 9", "network stride 32", "at least 32 px")


def test_export_size_below_the_stride(tmp_path, capsys):
    code, err = cli(capsys, "export", TINY, "--random-init", "--onnx", tmp_path / "m.onnx",
                    "--size", "7", "9", "--no-check")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "7x9", "network stride 8")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("argv, names", [
    (["--short-side", "100000"], ["--short-side", "100000", "4096"]),
    (["--threads", "10000"], ["--threads", "10000", "CPU cores"]),
    (["--threads", "0"], ["--threads"]),
    (["--stride", "-2"], ["--stride", "-2"]),
    (["--max-frames", "0"], ["--max-frames"]),
    (["--scales", "0,1"], ["--scales"]),
])
def test_stream_numbers_are_range_checked(argv, names, frames, tmp_path, capsys):
    code, err = cli(capsys, "stream", TINY, frames, "--random-init", "--out", tmp_path / "o", *argv)
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, *names)


def test_export_size_above_the_limit(tmp_path, capsys):
    code, err = cli(capsys, "export", TINY, "--random-init", "--onnx", tmp_path / "m.onnx",
                    "--size", "4000", "4000")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "--size 4000 4000", "input limit")


def test_extreme_aspect_ratio_is_refused_before_the_resize(frames, tmp_path, capsys):
    """An 8 x 1200 strip at short side 64 would be 64 x 9600: refused before it is resized."""
    from vidseg import Segmenter
    from vidseg.engine.input_size import InputSizeError

    strip = tmp_path / "strip"
    strip.mkdir()
    cv2.imwrite(str(strip / "00000.png"), np.zeros((8, 1200, 3), np.uint8))
    code, err = cli(capsys, "stream", TINY, strip, "--random-init", "--quiet", "--out",
                    tmp_path / "o", "--short-side", "64")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "8x1200 frame at short side 64", "64x9600", "input limit")
    with pytest.warns(UserWarning, match="UNTRAINED"):
        seg = Segmenter(TINY, None)
    with pytest.raises(InputSizeError, match="64x9600"):
        seg.predict(np.zeros((8, 1200, 3), np.uint8))


@pytest.mark.parametrize("override, key", [
    ("model.num_classes=0", "model.num_classes"),
    ("train.lr=-1", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.iters=0", "train.iters"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.crop_size=[4,4]", "data.crop_size"),
    ("train.ckpt_interval=0", "train.ckpt_interval"),
    ("model.memory.momentum=1.5", "model.memory.momentum"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.short_side=100000", "data.short_side"),
])
def test_train_refuses_unusable_config_values(override, key, tmp_path, capsys):
    work = tmp_path / "run"
    code, err = cli(capsys, "train", TINY, "--set", override, "--work-dir", work)
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, f"--set {key}", key)
    assert not work.exists()


def test_config_range_checks_name_the_file_and_accept_documented_zeros(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {TINY}\ntrain:\n  momentum: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.momentum=1\.0, expected .*\[0, 1\)"):
        load_config(bad)
    zeros = ["train.val_videos=0", "train.keep_checkpoints=0", "eval.tc_videos=0",
             "data.num_workers=0", "model.aux_weight=0", "train.warmup_iters=0"]
    cfg = load_config(TINY, zeros)
    assert cfg.train.val_videos == 0 and cfg.eval.tc_videos == 0


@pytest.mark.parametrize("argv, names", [
    (["--iters", "-1"], ["--iters", "-1"]),
    (["--iters", "many"], ["--iters", "'many'"]),
    (["--seed", "-3"], ["--seed"]),
    (["--config", "no/such_config"], ["no/such_config"]),
    (["--set", "model.num_classes=0"], ["model.num_classes"]),
    (["--set", "train.nope=1"], ["train.nope"]),
    (["--set", "novalue"], ["novalue"]),
])
def test_demo_argument_errors(argv, names, tmp_path, capsys):
    out = tmp_path / "demo"
    code, err = cli(capsys, "demo", "--out", out, *argv)
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, *names)
    assert not out.exists()  # nothing generated


def test_demo_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = cli(capsys, "demo", "--out", tmp_path / "f")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "--out", "is a file")


@pytest.mark.parametrize("argv, names", [
    (["eval", TINY, "--random-init", "--max-videos", "-1"], ["--max-videos", "-1"]),
    (["eval", TINY, "--random-init", "--tc-videos", "-1"], ["--tc-videos", "-1"]),
    (["score", "--data", "d", "--pred", "p", "--tc-videos", "-2"], ["--tc-videos", "-2"]),
    (["score", "--data", "d", "--pred", "p", "--workers", "-1"], ["--workers", "-1"]),
    (["score", "--data", "d", "--pred", "p", "--workers", "100000"], ["--workers", "100000"]),
    (["export", TINY, "--random-init", "--onnx", "m.onnx", "--check-frames", "0"],
     ["--check-frames"]),
    (["export", TINY, "--random-init", "--onnx", "m.onnx", "--tolerance", "nan"],
     ["--tolerance"]),
    (["data", "synth", "--out", "s", "--frames", "0"], ["--frames"]),
    (["data", "synth", "--out", "s", "--height", "100000"], ["--height"]),
])
def test_negative_or_out_of_range_numbers(argv, names, capsys):
    code, err = cli(capsys, *argv)
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, *names)


def test_evaluate_refuses_a_negative_video_count():
    from vidseg.engine.evaluate import evaluate

    with pytest.raises(ValueError, match="max_videos=-1"):
        evaluate(None, load_config(TINY), max_videos=-1)


@pytest.fixture()
def a_file(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("x")
    return path


@pytest.mark.parametrize("make_argv, flag, problem", [
    (lambda f, fr, t: ["stream", TINY, fr, "--random-init", "--out", f], "--out", "is a file"),
    (lambda f, fr, t: ["stream", TINY, fr, "--random-init", "--out", t / "o", "--json",
                       f / "s.json"], "--json", "is a file, not a folder"),
    (lambda f, fr, t: ["stream", TINY, fr, "--random-init", "--out", t / "o", "--json", t],
     "--json", "is a folder"),
    (lambda f, fr, t: ["eval", TINY, "--checkpoint", t / "missing.pth", "--out", f],
     "--out", "is a file"),
    (lambda f, fr, t: ["score", "--data", t / "nodata", "--pred", t / "nopred", "--out", t],
     "--out", "is a folder"),
    (lambda f, fr, t: ["export", TINY, "--random-init", "--onnx", f / "m.onnx"],
     "--onnx", "not a folder"),
    (lambda f, fr, t: ["export", TINY, "--random-init", "--onnx", t / "m.onnx", "--json", t],
     "--json", "is a folder"),
    (lambda f, fr, t: ["convert", "sssegmentation", t / "missing.pth", t, "--config", TINY],
     "DST", "is a folder"),
    (lambda f, fr, t: ["train", TINY, "--work-dir", f], "--work-dir", "is a file"),
    (lambda f, fr, t: ["data", "synth", "--out", f / "d"], "--out", "not a folder"),
    (lambda f, fr, t: ["data", "check", t, "--json", t], "--json", "is a folder"),
])
def test_output_locations_are_checked_before_any_work(make_argv, flag, problem, a_file, frames,
                                                      tmp_path, capsys):
    """The output error wins over later problems (missing data, checkpoint, source)."""
    code, err = cli(capsys, *make_argv(a_file, frames, tmp_path))
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, flag, problem)


def test_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    # root may write anywhere, so the permission check itself is what is exercised
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked
                        else real_access(p, mode))
    code, err = cli(capsys, "score", "--data", tmp_path, "--pred", tmp_path, "--out",
                    locked / "sub" / "m.json")
    assert code == EXIT_BAD_INPUT
    assert_one_error(err, "--out", str(locked), "not writable")


def test_argument_errors_are_one_line(capsys):
    code, err = cli(capsys, "stream")
    assert code == EXIT_BAD_INPUT
    line = assert_one_error(err, "vidseg stream", "required")
    assert "usage:" not in err and "--help" in line


def test_worker_reraised_errors_keep_their_message():
    """An error re-created by torch's DataLoader from a worker prints its own message."""
    from torch._utils import ExceptionWrapper

    from vidseg.data.image_files import UnreadableImageError

    try:
        raise UnreadableImageError("frame.jpg: cannot decode")
    except UnreadableImageError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(UnreadableImageError) as info:
        wrapper.reraise()
    assert info.value.one_line() == "frame.jpg: cannot decode"


def test_training_errors_have_documented_codes():
    from vidseg.engine.train import NonFiniteLossError, RunDirExistsError

    assert NonFiniteLossError("nan").code == EXIT_PARTIAL
    assert RunDirExistsError("run").code == EXIT_BAD_INPUT
    assert isinstance(RunDirExistsError("x"), VidsegError)
    assert isinstance(RunDirExistsError("x"), FileExistsError)  # callers catching it still do
