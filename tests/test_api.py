"""The Python API: `vidseg.train`, `vidseg.score` and `Segmenter.stream(source, out=...)` against
the commands they mirror (`vidseg train`, `vidseg score`, `vidseg stream --out`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _video_fixtures import count_frames

import vidseg
from vidseg.cli import main
from vidseg.config import ConfigError, load_config

CONFIG = "synthetic/tiny"
# one iteration without validation: the checks below are about the plumbing, not accuracy
FAST = {"iters": 1, "validate": False, "ckpt_interval": 1, "log_interval": 1}
H, W = 48, 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a small busy CPU, OpenMP's spinning threads slow tiny models ~10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from vidseg.data.synthetic import make_synthetic_vspw

    root = tmp_path_factory.mktemp("api") / "synth"
    make_synthetic_vspw(
        root, num_train=2, num_val=1, num_test=0, frames=4, height=H, width=W, workers=1
    )
    return root


@pytest.fixture(scope="module")
def run(synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("api_run") / "run"
    return vidseg.train(CONFIG, work_dir=work, data={"root": synth, "num_workers": 0}, train=FAST)


@pytest.fixture(scope="module")
def video(synth) -> Path:
    return next((synth / "videos").glob("*.mp4"))


def test_train_is_the_cli_run_and_resumes(run, synth, tmp_path, capsys):
    assert run.iterations == 1 and run.stopped is None and run.moved_to is None
    assert run.checkpoint == run.work_dir / "iter_0000001.pth" and run.checkpoint.is_file()
    assert run.val is None and run.best_miou is None and np.isfinite(run.loss)
    saved = load_config(run.work_dir / "config.yaml")
    assert saved.train.iters == 1 and saved.data.root == str(synth)
    # `vidseg train` with the same settings as --set gives the same weights, bit for bit
    cli = tmp_path / "cli"
    sets = [
        f"data.root={synth}",
        "data.num_workers=0",
        *(f"train.{k}={v}" for k, v in FAST.items()),
    ]
    assert main(["train", CONFIG, "--work-dir", str(cli), "--set", *sets]) == 0, capsys.readouterr()
    ours = torch.load(run.checkpoint, weights_only=True)["model"]
    theirs = torch.load(cli / "iter_0000001.pth", weights_only=True)["model"]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # an existing run is refused before any work, then resumed with resume=True
    from vidseg.engine.train import RunDirExistsError

    with pytest.raises(RunDirExistsError, match="--resume"):
        vidseg.train(CONFIG, work_dir=cli, overrides=sets)
    resumed = vidseg.train(CONFIG, work_dir=cli, overrides=sets, train={"iters": 2}, resume=True)
    assert resumed.iterations == 2 and resumed.checkpoint.name == "iter_0000002.pth"


def test_sections_become_typed_overrides(tmp_path):
    from vidseg.api import resolve_config, section_overrides

    texts = section_overrides(
        {
            "train": {"lr": 1e-4, "iters": 2},
            "data": {"root": tmp_path / "a b", "crop_size": (32, 32)},
            "model": {"backbone": {"name": "resnet34"}},
        }
    )
    assert texts == [
        "train.lr=0.0001",
        "train.iters=2",
        f"data.root={tmp_path / 'a b'}",
        "data.crop_size=[32, 32]",
        "model.backbone.name=resnet34",
    ]
    cfg = resolve_config(CONFIG, ["train.iters=5"], train={"lr": 1e-20}, eval={"flip": True})
    assert cfg.train.iters == 5 and cfg.train.lr == 1e-20 and cfg.eval.flip is True
    assert cfg.model.backbone.output_stride == 8  # a nested section changes only its keys
    # a Config is copied, not modified
    base = load_config(CONFIG)
    changed = resolve_config(base, train={"iters": 3})
    assert changed.train.iters == 3 and base.train.iters == 6
    assert resolve_config(base) is base


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"trian": {"iters": 2}}, "trian= is not a config section"),
        ({"train": 2}, "takes a dict"),
        ({"train": {"max_iters": 2}}, "max_iters"),
        ({"overrides": ["train.iters=two"]}, "expected an integer"),
    ],
)
def test_bad_overrides_fail_in_one_line_before_any_work(kwargs, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as info:
        vidseg.train(CONFIG, work_dir=tmp_path / "run", **kwargs)
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_stream_overlay_is_lazy_and_unpacks_as_four(run, video, monkeypatch):
    import vidseg.engine.stream_outputs as outputs
    from vidseg.io.sinks import OverlayVideoWriter

    calls = []
    real = outputs.render_overlay
    monkeypatch.setattr(outputs, "render_overlay", lambda *a, **k: calls.append(1) or real(*a, **k))
    seg = vidseg.Segmenter(CONFIG, run.checkpoint)
    results = list(seg.stream(video))
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert all(r.labels.shape == (H, W) and r.labels.dtype == np.int64 for r in results)
    assert calls == []  # labels only: no overlay drawn
    first = results[0]
    assert first.overlay is first.overlay and len(calls) == 1  # drawn once, then kept
    index, timestamp, labels, overlay = first
    assert (index, timestamp) == (0, 0.0) and labels is first.labels and overlay is first.overlay
    assert overlay.shape == (H, W, 3) and overlay.dtype == np.uint8
    # the overlay video's rendering (legend included), less its FPS counter
    writer = OverlayVideoWriter(Path(video).parent / "unused.mp4", fps=10, show_fps=False)
    expected = writer._render(first.frame, first.labels.astype(np.uint8), None)
    assert np.array_equal(overlay, expected)
    assert not np.array_equal(overlay, first.frame)


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "sets",
    [[], ["eval.mode=slide", "eval.crop_size=[48,48]", "eval.stride=[40,40]"]],
    ids=["whole", "slide"],
)
def test_stream_out_writes_what_vidseg_stream_writes(run, video, tmp_path, sets, capsys):
    seg = vidseg.Segmenter(CONFIG, run.checkpoint, overrides=sets)
    results = list(seg.stream(video, out=tmp_path / "api", save_labels=True))
    args = [
        "stream",
        CONFIG,
        str(video),
        "--checkpoint",
        str(run.checkpoint),
        "--out",
        str(tmp_path / "cli"),
        "--labels",
        "--quiet",
    ]
    assert main(args + (["--set", *sets] if sets else [])) == 0, capsys.readouterr().err
    ours, theirs = _files(tmp_path / "api"), _files(tmp_path / "cli")
    assert ours.keys() == theirs.keys()
    assert f"{video.stem}_overlay.mp4" in ours and len(ours) == 1 + len(results)
    assert count_frames(ours[f"{video.stem}_overlay.mp4"]) == (4, (H, W))
    for r in results:
        name = f"labels/{video.stem}/{r.index:06d}.png"
        png = cv2.imread(str(ours[name]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(png, cv2.imread(str(theirs[name]), cv2.IMREAD_UNCHANGED))
        assert np.array_equal(png, r.labels)


def test_leaving_the_loop_early_finishes_the_files(run, video, tmp_path):
    seg = vidseg.Segmenter(CONFIG, run.checkpoint)
    for r in seg.stream(video, out=tmp_path, save_color=True):
        if r.index == 1:
            break
    assert count_frames(tmp_path / f"{video.stem}_overlay.mp4") == (2, (H, W))
    assert len(list((tmp_path / "color" / video.stem).glob("*.png"))) == 2


def test_stream_bad_arguments(run, tmp_path):
    from vidseg.errors import VidsegError

    seg = vidseg.Segmenter(CONFIG, run.checkpoint)
    with pytest.raises(ValueError, match="out=DIR"):
        next(seg.stream(tmp_path, save_labels=True))
    with pytest.raises(VidsegError, match="missing.mp4"):
        next(seg.stream(tmp_path / "missing.mp4"))


def _write_predictions(synth: Path, pred: Path, shift: int) -> None:
    """GT train ids as predictions, rolled by `shift` pixels (0 = perfect)."""
    from vidseg.data.vspw import to_train_ids

    for video in (synth / "val.txt").read_text().split():
        for mask in sorted((synth / "data" / video / "mask").glob("*.png")):
            ids = to_train_ids(cv2.imread(str(mask), cv2.IMREAD_UNCHANGED))
            ids = np.roll(np.where(ids == 255, 0, ids), shift, axis=1).astype(np.uint8)
            (pred / video).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(pred / video / mask.name), ids)


def test_score_equals_vidseg_score(synth, tmp_path, capsys):
    from vidseg.metrics.report import _jsonable

    perfect = tmp_path / "perfect"
    _write_predictions(synth, perfect, 0)
    assert vidseg.score(synth, perfect, tc=False)["miou"] == 1.0
    pred = tmp_path / "pred"
    _write_predictions(synth, pred, 5)
    ours = vidseg.score(synth, pred, out=tmp_path / "api.json")
    assert 0.0 < ours["miou"] < 1.0 and ours["tc_method"] == "TC-DIS"
    assert (
        main(
            [
                "score",
                "--data",
                str(synth),
                "--pred",
                str(pred),
                "--out",
                str(tmp_path / "cli.json"),
                "--quiet",
            ]
        )
        == 0
    ), capsys.readouterr().err
    cli = json.loads((tmp_path / "cli.json").read_text())
    written = json.loads((tmp_path / "api.json").read_text())
    assert _jsonable(ours) == cli == written
    with pytest.raises(ValueError, match="raft_weights"):
        vidseg.score(synth, pred, flow="raft")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        vidseg.score(synth, tmp_path / "nowhere")


def test_import_vidseg_stays_light():
    code = "import sys, vidseg; vidseg.train, vidseg.score; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        vidseg.trian  # noqa: B018
