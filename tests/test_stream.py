"""`vidseg stream` and StreamRunner on the tiny config with random weights (CPU, 48x64 videos)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests._video_fixtures import MjpegServer, count_frames, moving_square, write_video
from vidseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")
KEYS = {
    "frames",
    "dropped",
    "fps_end_to_end",
    "fps_model",
    "fps_model_after_first",
    "ms_decode",
    "ms_model",
    "ms_model_first",
    "ms_write",
    "peak_rss_mb",
}


def stream(*args) -> int:
    return main(["stream", TINY, "--random-init", "--quiet", *map(str, args)])


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("vid") / "clip.mp4", n=12, h=48, w=64)


def test_file_writes_overlay_and_json(video, tmp_path, capsys):
    out = tmp_path / "out"
    assert stream(video, "--out", out, "--json", tmp_path / "s.json") == 0
    assert count_frames(out / "clip_overlay.mp4") == (12, (48, 64))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert KEYS <= summary.keys()
    assert summary["frames"] == 12 and summary["dropped"] == 0 and not summary["stopped_early"]
    assert summary["fps_end_to_end"] > 0 and summary["fps_model"] >= summary["fps_end_to_end"] * 0.5
    rest_s = summary["ms_model"] * 12 / 1000 - summary["ms_model_first"] / 1000
    assert summary["fps_model_after_first"] == pytest.approx(11 / rest_s, rel=1e-6)
    assert summary["state_bytes"] > 0 and summary["peak_rss_mb"] > 10
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.err and "FPS end to end" in captured.out


def test_frame_folder_labels_match_direct_steps(tmp_path):
    """Label PNGs of a frame folder equal argmax(step()) run by hand on the same frames."""
    from vidseg.data.transforms import prepare_frame
    from vidseg.engine.inference import load_inference_model
    from vidseg.engine.stream import StreamRunner, model_short_side
    from vidseg.engine.stream_outputs import StreamOutputs
    from vidseg.io.sinks import LabelPngWriter
    from vidseg.io.sources import FrameDirSource

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for k in range(5):
        cv2.imwrite(str(frames_dir / f"{k * 10:05d}.png"), moving_square(k, 48, 64)[..., ::-1])
    cfg, model = load_inference_model(TINY, random_init=True)
    outputs = StreamOutputs("frames", labels=LabelPngWriter(tmp_path / "labels"))
    runner = StreamRunner(model, cfg, outputs=outputs)
    summary = runner.run(FrameDirSource(frames_dir))
    assert summary.frames == 5 and not summary.stopped_early
    written = sorted((tmp_path / "labels" / "frames").glob("*.png"))
    assert [p.stem for p in written] == [f"{k * 10:05d}" for k in range(5)]
    state = None
    for k, path in enumerate(written):
        png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == (48, 64)
        x = prepare_frame(
            moving_square(k, 48, 64), model_short_side(cfg), cfg.data.mean, cfg.data.std
        )
        logits, state = model.step(x, state, output_size=(48, 64))
        assert np.array_equal(png, logits[0].argmax(0).numpy().astype(np.uint8))


def test_cli_frame_folder_labels_single_channel(tmp_path):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for k in range(4):
        cv2.imwrite(str(frames_dir / f"f{k}.jpg"), moving_square(k, 48, 64))
    assert stream(frames_dir, "--out", tmp_path / "o", "--labels", "--no-history") == 0
    pngs = sorted((tmp_path / "o" / "labels" / "frames").glob("*.png"))
    assert len(pngs) == 4
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ndim == 2 for p in pngs)
    assert count_frames(tmp_path / "o" / "frames_overlay.mp4")[0] == 4


def test_truncated_video_partial_exit_keeps_output(tmp_path, capsys):
    full = write_video(tmp_path / "full.mp4", n=30, h=48, w=64, faststart=True, noise=True)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert stream(cut, "--out", out, "--json", tmp_path / "s.json") == 3
    n, _ = count_frames(out / "cut_overlay.mp4")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert 0 < n < 30 and summary["frames"] == n and summary["stopped_early"]
    err = capsys.readouterr().err
    assert "truncated" in err or "corrupt" in err


def _bad_sources(tmp_path: Path) -> dict:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    return {
        "missing": (str(tmp_path / "nope.mp4"), "no such video file"),
        "not_video": (str(text), "not a readable video"),
        "empty_dir": (str(empty), "holds no images"),
        "camera": ("0", "could not open"),
    }


@pytest.mark.parametrize("case", ["missing", "not_video", "empty_dir", "camera"])
def test_bad_source_exit_2_one_line(case, tmp_path, capsys):
    source, cause = _bad_sources(tmp_path)[case]
    assert stream(source, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and source in err[0] and cause in err[0], err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.mp4"))


def test_unwritable_out_dir_exit_2(video, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a folder below a regular file cannot be created, even by root
    assert stream(video, "--out", blocker / "out") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(blocker / "out") in last and "not writable" in last and "Traceback" not in last


def test_scales_without_hmsa_exit_2(video, tmp_path, capsys):
    assert stream(video, "--out", tmp_path / "o", "--scales", "0.5,1.0") == 2
    assert "HMSA" in capsys.readouterr().err


def test_scales_with_hmsa_runs_two_scales(video, tmp_path):
    code = stream(
        video,
        "--out",
        tmp_path / "o",
        "--scales",
        "0.5,1.0",
        "--max-frames",
        "3",
        "--set",
        "model.hmsa.enabled=true",
        "--json",
        tmp_path / "s.json",
    )
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 3 and count_frames(tmp_path / "o" / "clip_overlay.mp4")[0] == 3


def test_mjpeg_loopback_camera(tmp_path):
    with MjpegServer(n_frames=40, fps=30) as server:
        code = stream(
            server.url, "--out", tmp_path / "o", "--max-frames", "4", "--json", tmp_path / "s.json"
        )
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 4
    assert count_frames(tmp_path / "o" / "stream_overlay.mp4") == (4, (64, 96))


def test_sigterm_leaves_playable_mp4(tmp_path):
    video = write_video(tmp_path / "long.mp4", n=400, h=48, w=64)
    out = tmp_path / "out"
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidseg",
            "stream",
            TINY,
            "--random-init",
            "--quiet",
            str(video),
            "--out",
            str(out),
            "--labels",
            "--json",
            str(tmp_path / "s.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    labels = out / "labels" / "long"
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and proc.poll() is None:
        if labels.is_dir() and len(list(labels.glob("*.png"))) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    n, size = count_frames(out / "long_overlay.mp4")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert 0 < n < 400 and size == (48, 64) and n == summary["frames"]
    assert "interrupted" in summary["error"]


@pytest.mark.parametrize("spread", [0.3, 3.0, 30.0])
def test_upsample_argmax_equals_full_resize(spread):
    """The class-pruned resize gives exactly the argmax of the full bilinear resize."""
    import torch.nn.functional as F

    from vidseg.engine.predict import upsample_argmax

    g = torch.Generator().manual_seed(int(spread * 10))
    smooth = F.interpolate(torch.randn(1, 40, 3, 4, generator=g), size=(9, 13), mode="bilinear")
    logits = spread * smooth + torch.randn(1, 40, 9, 13, generator=g)
    for size in [(48, 64), (37, 101), (5, 7)]:
        full = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
        assert torch.equal(upsample_argmax(logits, size), full)


def test_size_change_resizes_every_output_to_the_first_frame(tmp_path, caplog):
    """`vidseg stream` and `Segmenter.stream` share StreamOutputs: one size per run, one warning."""
    import vidseg

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for k in range(5):
        h, w = (48, 64) if k < 3 else (40, 60)
        cv2.imwrite(str(frames_dir / f"f{k}.png"), moving_square(k, h, w)[..., ::-1])
    for run in ("cli", "api"):
        out = tmp_path / run
        caplog.clear()
        if run == "cli":
            assert stream(frames_dir, "--out", out, "--labels", "--color") == 0
        else:
            with pytest.warns(UserWarning, match="UNTRAINED"):
                seg = vidseg.Segmenter(TINY)
            results = list(seg.stream(str(frames_dir), out=out, save_labels=True, save_color=True))
            assert [r.labels.shape for r in results] == [(48, 64)] * 3 + [(40, 60)] * 2
        for kind in ("labels", "color"):
            pngs = sorted((out / kind / "frames").glob("*.png"))
            assert [p.stem for p in pngs] == [f"f{k}" for k in range(5)]
            assert all(cv2.imread(str(p)).shape[:2] == (48, 64) for p in pngs)
        assert count_frames(out / "frames_overlay.mp4") == (5, (48, 64))
        resized = [r for r in caplog.records if "resized to the first size" in r.getMessage()]
        assert len(resized) == 1 and "frame f3 is (40, 60)" in resized[0].getMessage()


def test_legend_names_come_from_the_configs_dataset(tmp_path, monkeypatch):
    """Legends (overlay, window, --serve page) name the classes of data.root in data.format."""
    from vidseg.config import load_config
    from vidseg.data.convert_layout import convert_vspw
    from vidseg.data.synthetic import make_synthetic_vspw
    from vidseg.engine.stream_outputs import StreamOutputs, class_names_for
    from vidseg.io.sources import FrameDirSource

    monkeypatch.delenv("VSPW_ROOT", raising=False)
    synth = tmp_path / "synth"
    make_synthetic_vspw(
        synth,
        num_train=1,
        num_val=1,
        num_test=0,
        frames=2,
        height=32,
        width=48,
        write_mp4=False,
        workers=1,
    )
    assert class_names_for(load_config(TINY)) is None  # no dataset: the legend says "class <id>"
    names = class_names_for(load_config(TINY, [f"data.root={synth}"]))
    # the synthetic generator's class list: its drawn classes by name, the rest "unused_<raw id>"
    assert len(names) == 124 and names[0] == "sky" and names[123] == "person"
    assert names[8] == "unused_009"
    monkeypatch.setenv("VSPW_ROOT", str(synth))
    assert class_names_for(load_config(TINY)) == names  # empty data.root = $VSPW_ROOT
    monkeypatch.delenv("VSPW_ROOT")
    frames_root = tmp_path / "frames_layout"
    convert_vspw(synth, frames_root, "frames")
    cfg = load_config(TINY, [f"data.root={frames_root}", "data.format=frames"])
    assert class_names_for(cfg) == names  # from its classes.txt
    video = next(p for p in frames_root.iterdir() if p.is_dir())
    with FrameDirSource(video / "images") as source:
        with StreamOutputs.for_source(tmp_path / "out", source, cfg) as outputs:
            assert outputs.overlay.class_names == names
    (frames_root / "classes.txt").write_text("a\nb\n")
    assert class_names_for(cfg) is None  # not the model's 124 classes: no names rather than wrong


def test_random_init_is_the_same_in_every_process_and_leaves_the_rng_alone():
    """--random-init weights do not depend on the caller's seed (stream, eval and export of one
    random model agree across processes), and building them does not move the global RNG."""
    from vidseg.engine.inference import load_inference_model

    torch.manual_seed(123)
    _, a = load_inference_model(TINY, random_init=True)
    after_a = torch.rand(3)
    torch.manual_seed(456)
    _, b = load_inference_model(TINY, random_init=True)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_a)  # as if the model had not been built
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
