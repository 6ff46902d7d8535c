"""`vidseg data synth` / `vidseg data check` and the data_tools scripts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest
from test_vspw import make_vspw_root

from vidseg.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO,
        timeout=120,
    )


def load_tool(script):
    """Import a data_tools script as a module (in-process: no second torch import)."""
    spec = importlib.util.spec_from_file_location(
        script[:-3], os.path.join(REPO, "data_tools", script)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_exit_codes_via_python_m(tmp_path, capsys):
    root = make_vspw_root(tmp_path / "v")
    assert main(["data", "check", root, "--json", str(tmp_path / "ok.json")]) == 0
    assert "OK: 0 error(s)" in capsys.readouterr().out
    assert json.load(open(tmp_path / "ok.json"))["ok"] is True

    data = os.path.join(root, "data")
    open(os.path.join(data, "1_vid-a_b", "origin", "00000377.jpg"), "wb").close()
    os.remove(os.path.join(data, "2_vidB", "mask", "00000012.png"))
    cv2.imwrite(
        os.path.join(data, "4_val", "mask", "00000100.png"), np.full((32, 48), 200, np.uint8)
    )
    bad = run_cli("-m", "vidseg", "data", "check", root, "--json", str(tmp_path / "bad.json"))
    assert bad.returncode == 1
    assert "00000377.jpg: empty file (0 bytes)" in bad.stdout
    assert "00000012.jpg: frame without mask" in bad.stdout
    assert "00000100.png: values [200] outside" in bad.stdout
    report = json.load(open(tmp_path / "bad.json"))
    assert report["ok"] is False and report["num_errors"] == 3


def test_check_missing_root_is_one_line_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_check_one_split(tmp_path, capsys):
    root = make_vspw_root(tmp_path / "v")
    assert main(["data", "check", root, "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "val" in out and "\ntrain " not in out


def test_synth_passes_keyword_arguments(tmp_path, monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("vidseg.data.synthetic")
    fake.make_synthetic_vspw = lambda out_dir, **kw: calls.append((out_dir, kw))
    monkeypatch.setitem(sys.modules, "vidseg.data.synthetic", fake)
    out = str(tmp_path / "syn")
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                out,
                "--seed",
                "5",
                "--train-videos",
                "3",
                "--val-videos",
                "2",
                "--test-videos",
                "1",
                "--frames",
                "9",
                "--height",
                "40",
                "--width",
                "64",
                "--no-mp4",
            ]
        )
        == 0
    )
    assert calls == [
        (
            out,
            {
                "num_train": 3,
                "num_val": 2,
                "num_test": 1,
                "frames": 9,
                "height": 40,
                "width": 64,
                "seed": 5,
                "write_mp4": False,
            },
        )
    ]
    assert main(["data", "synth", "--out", out]) == 0
    assert calls[1] == (out, {"write_mp4": True})  # unset sizes: the generator's defaults
    assert "vidseg data check" in capsys.readouterr().out


def test_synth_then_check_succeeds(tmp_path):
    out = str(tmp_path / "syn")
    made = run_cli(
        "-m",
        "vidseg",
        "data",
        "synth",
        "--out",
        out,
        "--train-videos",
        "2",
        "--val-videos",
        "1",
        "--test-videos",
        "1",
        "--frames",
        "6",
        "--height",
        "48",
        "--width",
        "64",
        "--no-mp4",
    )
    assert made.returncode == 0, made.stderr
    checked = run_cli("-m", "vidseg", "data", "check", out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK: 0 error(s)" in checked.stdout


def test_data_tool_runs_from_anywhere(tmp_path):
    # no PYTHONPATH, another cwd: the script must find the package by itself
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "data_tools", "check_vspw.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("script", ["check_vspw.py", "resize_vspw.py", "video_to_frames.py"])
def test_data_tools_help(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool(script).main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_resize_vspw_keeps_names_and_labels(tmp_path):
    src = make_vspw_root(tmp_path / "full")
    dst = str(tmp_path / "small")
    assert load_tool("resize_vspw.py").main([src, dst, "--height", "16", "--workers", "1"]) == 0
    frame = cv2.imread(os.path.join(dst, "data", "4_val", "origin", "00000101.jpg"))
    mask = cv2.imread(
        os.path.join(dst, "data", "4_val", "mask", "00000101.png"), cv2.IMREAD_UNCHANGED
    )
    assert frame.shape == (16, 24, 3) and mask.shape == (16, 24)
    assert set(np.unique(mask).tolist()) <= {0, 2, 255}  # nearest: no new label values
    assert open(os.path.join(dst, "val.txt")).read() == "4_val\n"
    assert os.path.isfile(os.path.join(dst, "label_num_dic_final.json"))


def test_video_to_frames_makes_a_vspw_layout(tmp_path):
    av = pytest.importorskip("av")
    video = str(tmp_path / "clip.mp4")
    with av.open(video, "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            img = np.full((48, 64, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = str(tmp_path / "mine")
    assert load_tool("video_to_frames.py").main([video, out, "--fps", "15"]) == 0
    frames = sorted(os.listdir(os.path.join(out, "data", "clip", "origin")))
    assert frames == [f"{i:08d}.jpg" for i in range(6)]
    assert open(os.path.join(out, "test.txt")).read() == "clip\n"
    # frame j at 15 fps is source frame 2j: grey level 40j
    third = cv2.imread(os.path.join(out, "data", "clip", "origin", "00000002.jpg"))
    assert abs(float(third.mean()) - 80) < 6
