"""The error classes below the command line: exit codes, one-line messages, `--debug`, and the
checks the Python API shares with the CLI (devices, input sizes, config ranges, counts).

Every command-line case (a bad argument, config, checkpoint, source or output location, and
what survives on disk) is a row of the matrix in test_bad_inputs.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg.cli import main
from vidseg.config import ConfigError, load_config
from vidseg.errors import EXIT_BAD_INPUT, EXIT_PARTIAL, VidsegError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")


def test_check_device_names_and_indices():
    from vidseg.engine.inference import check_device
    from vidseg.errors import DeviceError

    assert check_device(None) == torch.device("cpu")
    with pytest.raises(DeviceError, match="cuda:0 to|CUDA is not available"):
        check_device(f"cuda:{torch.cuda.device_count() + 3}")
    with pytest.raises(DeviceError, match="not supported"):
        check_device("meta")


def test_segmenter_refuses_an_extreme_aspect_ratio_before_the_resize():
    """An 8 x 1200 strip at short side 64 would be 64 x 9600: refused before it is resized."""
    from vidseg import Segmenter
    from vidseg.engine.input_size import InputSizeError

    with pytest.warns(UserWarning, match="UNTRAINED"):
        seg = Segmenter(TINY, None)
    with pytest.raises(InputSizeError, match="64x9600"):
        seg.predict(np.zeros((8, 1200, 3), np.uint8))


def test_config_range_checks_name_the_file_and_accept_documented_zeros(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {TINY}\ntrain:\n  momentum: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.momentum=1\.0, expected .*\[0, 1\)"):
        load_config(bad)
    zeros = [
        "train.val_videos=0",
        "train.keep_checkpoints=0",
        "eval.tc_videos=0",
        "data.num_workers=0",
        "model.aux_weight=0",
        "train.warmup_iters=0",
    ]
    cfg = load_config(TINY, zeros)
    assert cfg.train.val_videos == 0 and cfg.eval.tc_videos == 0


def test_evaluate_refuses_a_negative_video_count():
    from vidseg.engine.evaluate import evaluate

    with pytest.raises(ValueError, match="max_videos=-1"):
        evaluate(None, load_config(TINY), max_videos=-1)


def test_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    # root may write anywhere, so the permission check itself is what is exercised
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
    )
    code = main(
        [
            "score",
            "--data",
            str(tmp_path),
            "--pred",
            str(tmp_path),
            "--out",
            str(locked / "sub" / "m.json"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and len(err.splitlines()) == 1
    assert "--out" in err and str(locked) in err and "not writable" in err


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path, capsys):
    argv = [
        "stream",
        TINY,
        str(tmp_path / "nope.mp4"),
        "--random-init",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == EXIT_BAD_INPUT
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", *argv]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("vidseg stream: error:")


def test_mask_errors_are_value_errors_with_the_file_name():
    from vidseg.data.image_files import MaskError, to_vspw_raw

    with pytest.raises(MaskError, match=r"mask a/b\.png: raw values \[200\]") as info:
        to_vspw_raw(np.full((4, 4), 200, np.uint8), "a/b.png")
    assert isinstance(info.value, ValueError) and info.value.code == EXIT_BAD_INPUT


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
