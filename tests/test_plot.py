"""Training records: `vidseg plot` (curves.png from scalars.jsonl), the TensorBoard events and
hint line of the run logger, and the demo's curves step."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from vidseg.cli import main
from vidseg.engine.logger import RunLogger
from vidseg.engine.plot import PlotError, collect_series, plot_curves, read_scalars, smooth

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (pip install 'vidseg[tb]')",
)


def _image_size(path) -> tuple[int, int]:
    """(width, height) of an image file, decoded in full (a cut-short PNG fails here)."""
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    return width, height


def _has_tensorboard() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real 2-iteration training run of the tiny model, validated after each iteration on a
    10-frame synthetic video (long enough for mVC_8)."""
    from vidseg.config import load_config
    from vidseg.data.synthetic import make_synthetic_vspw
    from vidseg.engine.train import train

    root = tmp_path_factory.mktemp("synth")
    make_synthetic_vspw(
        root,
        num_train=2,
        num_val=1,
        num_test=0,
        frames=10,
        height=48,
        width=64,
        seed=1,
        write_mp4=False,
        workers=1,
    )
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config(
        "configs/synthetic/tiny.yaml",
        [
            f"data.root={root}",
            f"work_dir={run}",
            "train.iters=2",
            "train.val_interval=1",
            "train.ckpt_interval=100",
            "train.backbone_lr_mult=0.1",
            "data.short_side=48",
            "data.crop_size=[48,48]",
            "eval.tc=false",
        ],
    )
    train(cfg)
    return run


def _write_rows(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


@needs_matplotlib
def test_tiny_run_curves_and_cli(tiny_run, capsys):
    rows, bad = read_scalars(tiny_run / "scalars.jsonl")
    assert bad == 0 and {"lr_backbone", "lr_heads"} <= rows[0].keys()
    assert rows[0]["lr_backbone"] == pytest.approx(0.1 * rows[0]["lr_heads"])

    assert main(["plot", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tiny_run / 'curves.png'} (1500x440 px) from {len(rows)} rows")
    assert _image_size(tiny_run / "curves.png") == (1500, 440)

    summary = plot_curves(tiny_run, tiny_run / "other" / "c.png")
    assert summary.out.is_file() and summary.size == (1500, 440) and summary.last_iter == 2
    assert summary.panels["loss"][0] == "loss (total)"
    assert {"loss_cls", "loss_aux"} <= set(summary.panels["loss"])
    assert summary.panels["lr"] == ["backbone", "heads"]
    assert summary.panels["val"] == ["mIoU", "mVC_8"]
    assert "mVC_16" in summary.no_values  # 10-frame videos have no 16-frame window
    assert "train/iter_time" in summary.not_plotted and "train/lr" in summary.not_plotted


def test_tiny_run_tensorboard_events(tiny_run):
    log = (tiny_run / "train.log").read_text()
    if not _has_tensorboard():
        assert log.count("pip install 'vidseg[tb]'") == 1 and not (tiny_run / "tb").exists()
        return
    assert log.count("TensorBoard:") == 1
    assert f"TensorBoard: tensorboard --logdir {tiny_run}" in log
    events = list((tiny_run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr_backbone", "val/miou"} <= set(tags)
    assert [e.step for e in acc.Scalars("val/miou")] == [1, 2]


@needs_matplotlib
def test_truncated_line_resume_duplicates_and_unknown_tags(tmp_path):
    rows = [
        {
            "iter": 10,
            "phase": "train",
            "loss": 4.0,
            "loss_cls": 3.0,
            "loss_w": 0.01,
            "lr": 0.01,
            "memory_mean": 0.5,
            "shiny_new_tag": 1.0,
            "note": "text",
            "flag": True,
        },
        {"iter": 20, "phase": "train", "loss": 9.0, "loss_cls": 8.0, "loss_w": 0.01, "lr": 0.008},
        # a resumed run logged iteration 20 again: the later row wins
        {"iter": 20, "phase": "train", "loss": 2.0, "loss_cls": 1.5, "loss_w": 0.02, "lr": 0.008},
        {
            "iter": 20,
            "phase": "val",
            "miou": 0.25,
            "mvc8": 0.5,
            "mvc16": float("nan"),
            "tc": 0.75,
            "tc_method": "TC-DIS",
            "include_last_window": False,
        },
        {"iter": 30, "phase": "train", "loss": 1.0, "loss_cls": 0.5, "loss_w": 0.03, "lr": 0.005},
        {"iter": 30, "phase": "bench", "loss": 7.0},
        [1, 2],
    ]
    _write_rows(tmp_path / "scalars.jsonl", rows, tail='{"iter": 40, "phase": "tra')
    parsed, bad = read_scalars(tmp_path / "scalars.jsonl")
    assert len(parsed) == 6 and bad == 2  # the JSON list and the cut-short last line

    panels, not_plotted, no_values = collect_series(parsed)
    assert list(panels["loss"]) == ["loss (total)", "loss_cls", "loss_w"]
    assert panels["loss"]["loss (total)"] == ([10, 20, 30], [4.0, 2.0, 1.0])
    assert panels["lr"] == {"lr": ([10, 20, 30], [0.01, 0.008, 0.005])}
    assert panels["val"] == {"mIoU": ([20], [25.0]), "mVC_8": ([20], [50.0]), "TC": ([20], [75.0])}
    assert no_values == ["mVC_16"]
    assert not_plotted == ["bench/loss", "train/memory_mean", "train/shiny_new_tag"]

    summary = plot_curves(tmp_path)
    assert summary.bad_lines == 2 and summary.rows == 6 and summary.last_iter == 30
    assert "skipped 2 unreadable line(s)" in summary.describe()
    assert _image_size(tmp_path / "curves.png") == summary.size


@needs_matplotlib
def test_train_rows_only_leave_a_noted_validation_panel(tmp_path):
    _write_rows(
        tmp_path / "scalars.jsonl",
        [{"iter": i, "phase": "train", "loss": 1.0 / i, "lr_heads": 0.01} for i in range(1, 61)],
    )
    summary = plot_curves(tmp_path)
    assert summary.panels == {"loss": ["loss (total)"], "lr": ["heads"], "val": []}
    assert "validation: no rows" in summary.describe()


def test_smooth_is_a_bias_corrected_ema():
    # alpha = 2 / (3 + 1) = 0.5: (0.5 * 1) / 0.5 = 1; (0.25 + 0.5 * 3) / 0.75 = 7 / 3
    assert smooth([1.0, 3.0], span=3) == pytest.approx([1.0, 7.0 / 3.0])
    assert smooth([2.0] * 5, span=4) == pytest.approx([2.0] * 5)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "no such run folder"),
        (lambda d: d.mkdir(), "no scalars.jsonl"),
        (lambda d: (d.mkdir(), (d / "scalars.jsonl").write_text("")), "no rows yet"),
        (lambda d: (d.mkdir(), (d / "scalars.jsonl").write_text('{"it')), "only 1 unreadable line"),
        (
            lambda d: (
                d.mkdir(),
                (d / "scalars.jsonl").write_text(
                    '{"iter": 1, "phase": "train", "iter_time": 2.0}\n'
                ),
            ),
            "no loss, learning-rate or validation values",
        ),
    ],
)
def test_bad_run_folders_fail_in_one_line(tmp_path, capsys, setup, message):
    run = tmp_path / "run"
    setup(run)
    with pytest.raises(PlotError, match=message):
        plot_curves(run)
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vidseg plot: error: ")
    assert str(run) in err and message in err


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    from vidseg.commands.demo import _curves

    _write_rows(tmp_path / "scalars.jsonl", [{"iter": 1, "phase": "train", "loss": 1.0}])
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `import` then raises ImportError
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib is not installed" in err
    assert "pip install 'vidseg[tb]'" in err
    note = _curves(tmp_path)
    assert note.startswith("not drawn: matplotlib is not installed") and "\n" not in note
    assert not (tmp_path / "curves.png").exists()


@needs_matplotlib
def test_demo_curves_step_returns_the_png(tmp_path):
    from vidseg.commands.demo import _curves

    _write_rows(tmp_path / "scalars.jsonl", [{"iter": 1, "phase": "train", "loss": 1.0}])
    assert _curves(tmp_path) == str(tmp_path / "curves.png")
    assert _image_size(tmp_path / "curves.png") == (1500, 440)


def test_logger_hint_line_and_rank_zero_only(tmp_path, monkeypatch):
    if _has_tensorboard():
        (tmp_path / "a").mkdir()
        log = RunLogger(tmp_path / "a", 1, progress=False)
        log.scalars(1, {"loss": 0.5, "flag": True})
        log.close()
        text = (tmp_path / "a" / "train.log").read_text()
        assert text.count("TensorBoard: tensorboard --logdir") == 1
        assert any((tmp_path / "a" / "tb").glob("events.out.tfevents.*"))

    # without the tensorboard package: one line naming the extra, no tb/ folder
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    (tmp_path / "b").mkdir()
    log = RunLogger(tmp_path / "b", 1, progress=False)
    log.close()
    lines = [
        ln for ln in (tmp_path / "b" / "train.log").read_text().splitlines() if "TensorBoard" in ln
    ]
    assert len(lines) == 1 and "not installed; `pip install 'vidseg[tb]'` adds it" in lines[0]
    assert not (tmp_path / "b" / "tb").exists()

    # ranks other than 0 write nothing
    (tmp_path / "c").mkdir()
    RunLogger(tmp_path / "c", 1, enabled=False, progress=False).close()
    assert list((tmp_path / "c").iterdir()) == []
