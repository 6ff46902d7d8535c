"""Nothing lost in training: an existing run is refused or moved aside (never overwritten),
SIGINT / SIGTERM checkpoint the current iteration and exit 3, resumed runs are bit-identical, and
scalars.jsonl holds one row per iteration after a kill and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import REPO, TINY, make_tiny_vspw, standin, tiny_cfg

ITERS = 10
# the same run as test_train.tiny_cfg(root, dir, "train.iters=10"), through the command line
SETTINGS = [
    "train.iters=10",
    "train.ckpt_interval=2",
    "train.log_interval=1",
    "data.num_workers=0",
    "train.lr=0.05",
    "model.num_classes=4",
    "data.short_side=40",
    "data.crop_size=[32,32]",
]

# `vidseg train` in a child process with the stand-in model (dropout, BatchNorm, a buffer: the
# RNG state matters); `slow` sleeps per iteration so the parent can signal it between two
# checkpoints
CHILD = """
import sys
sys.path.insert(0, {tests!r})
import vidseg.engine.train as tr
from test_train import slowed, standin
from vidseg.cli import main
tr._validate = lambda *a, **k: None
tr._build_model = slowed(standin, float(sys.argv[1]))
raise SystemExit(main(sys.argv[2:]))
"""


def _cli_child(root, work_dir: Path, slow: float = 0.0, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-c",
        CHILD.format(tests=str(Path(__file__).parent)),
        str(slow),
        "train",
        str(TINY),
        "--work-dir",
        str(work_dir),
        *extra,
        "--set",
        f"data.root={root}",
        *SETTINGS,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out = proc.communicate(timeout=180)[0].decode()
    return proc.returncode, out


def _weights(work_dir: Path, iteration: int = ITERS) -> dict:
    ckpt = torch.load(work_dir / f"iter_{iteration:07d}.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == iteration
    return ckpt["model"]


def _rows(work_dir: Path) -> list[int]:
    lines = (work_dir / "scalars.jsonl").read_text().splitlines()
    return [json.loads(line)["iter"] for line in lines if line.strip()]


def _latest_iter(work_dir: Path) -> int:
    latest = work_dir / "latest"
    if not latest.exists():
        return 0
    name = latest.read_text().strip()
    return int(name[len("iter_") : -len(".pth")]) if name else 0


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture(scope="module")
def vspw_root(tmp_path_factory):
    return make_tiny_vspw(tmp_path_factory.mktemp("vspw"))


@pytest.fixture(scope="module")
def uninterrupted(vspw_root, tmp_path_factory):
    """Final weights of the uninterrupted run (started once, read when first needed)."""
    work = tmp_path_factory.mktemp("full") / "run"
    proc = _cli_child(vspw_root, work)
    cache = {}

    def get():
        if not cache:
            code, out = _finish(proc)
            assert code == 0, out[-3000:]
            assert _rows(work) == list(range(1, ITERS + 1))
            cache["w"] = _weights(work)
        return cache["w"]

    yield get
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_signals_checkpoint_and_resume_bit_identical_with_one_row_per_iteration(
    vspw_root, tmp_path, uninterrupted
):
    """SIGTERM and SIGINT: exit 3 with a checkpoint at the current iteration; SIGKILL after rows
    were logged past the last checkpoint; each resumed run ends bit-identical to an
    uninterrupted one, with exactly one scalars row per iteration. (The three runs overlap.)"""
    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)
    works = {sig: tmp_path / sig.name for sig in sigs}
    victims = {sig: _cli_child(vspw_root, works[sig], 0.3) for sig in sigs}

    def ready(sig):
        work = works[sig]
        latest = _latest_iter(work)
        if sig != signal.SIGKILL:
            return latest == 2  # iteration 3 is running now
        # SIGKILL once the run logged iterations its last checkpoint does not hold
        return latest >= 2 and (work / "scalars.jsonl").exists() and max(_rows(work)) > latest

    pending, seen = set(sigs), {}
    deadline = time.time() + 120
    while pending and time.time() < deadline:
        for sig in list(pending):
            assert victims[sig].poll() is None, victims[sig].stdout.read().decode()[-3000:]
            if sig not in seen and ready(sig):
                seen[sig] = time.time()
            # SIGTERM / SIGINT a moment later: inside iteration 3 (0.3 s), past 2's stop check
            if sig in seen and (sig == signal.SIGKILL or time.time() > seen[sig] + 0.1):
                victims[sig].send_signal(sig)
                pending.discard(sig)
        time.sleep(0.02)
    assert not pending, pending

    for sig in sigs:
        work = works[sig]
        code, out = _finish(victims[sig])
        stopped_at = _latest_iter(work)
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
            assert max(_rows(work)) > stopped_at  # rows to drop on resume
            continue
        assert code == 3, out[-3000:]
        # usually 3: a checkpoint outside the periodic ones (2 if the signal came very early)
        assert 2 <= stopped_at < ITERS, out[-3000:]
        assert _weights(work, stopped_at)  # complete and loadable, `latest` names it
        assert f"stopped by {sig.name} after iteration {stopped_at}" in out
        assert (
            f"{sig.name} received: stopped after iteration {stopped_at}"
            in (work / "train.log").read_text()
        )
        assert _rows(work) == list(range(1, stopped_at + 1))
        assert not list(work.glob(".*.tmp"))

    resumed = {sig: _cli_child(vspw_root, works[sig], 0.0, "--resume") for sig in sigs}
    for sig in sigs:
        code, out = _finish(resumed[sig])
        assert code == 0, out[-3000:]
        assert _rows(works[sig]) == list(range(1, ITERS + 1)), sig  # no duplicates, no gaps
        _assert_same(uninterrupted(), _weights(works[sig]))
    assert "scalars.jsonl: dropped" in (works[signal.SIGKILL] / "train.log").read_text()


@pytest.fixture
def fast_model(monkeypatch):
    import vidseg.engine.train as tr

    monkeypatch.setattr(tr, "_build_model", standin)
    monkeypatch.setattr(tr, "_validate", lambda *a, **k: None)


def _cli(root, work: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(TINY),
        "--work-dir",
        str(work),
        *extra,
        "--set",
        f"data.root={root}",
        *SETTINGS[1:],
        "train.iters=2",
    ]


def test_existing_run_is_refused_before_any_work(vspw_root, tmp_path, capsys, fast_model):
    from vidseg.cli import main

    work = tmp_path / "run"
    assert main(_cli(vspw_root, work)) == 0, capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    capsys.readouterr()
    # refused before the data root is even looked at (this one does not exist)
    code = main(_cli(tmp_path / "absent", work))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(work) in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # any one of the run's files is enough
    for name in ("latest", "config.yaml", "train.log", "scalars.jsonl", "iter_0000002.pth"):
        other = tmp_path / f"only_{name}"
        other.mkdir()
        (other / name).write_text("x")
        assert main(_cli(vspw_root, other)) == 2, name
    # --resume and --overwrite exclude each other
    with pytest.raises(SystemExit) as info:
        main(_cli(vspw_root, work, "--resume", "--overwrite"))
    assert info.value.code == 2


def test_empty_or_missing_folder_is_fine(vspw_root, tmp_path, fast_model):
    from vidseg.engine.train import train

    (tmp_path / "empty").mkdir()
    for name in ("empty", "missing"):
        result = train(tiny_cfg(vspw_root, tmp_path / name, "train.iters=2"))
        assert result["iterations"] == 2 and result["moved_to"] is None and not result["stopped"]


def test_overwrite_moves_the_old_run_aside(vspw_root, tmp_path, capsys, fast_model):
    from vidseg.cli import main

    work = tmp_path / "run"
    assert main(_cli(vspw_root, work)) == 0
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(_cli(vspw_root, work, "--overwrite")) == 0
    err = capsys.readouterr().err
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and f"moved to {moved[0]}" in err
    assert {p.name: p.read_bytes() for p in moved[0].iterdir() if p.is_file()} == before
    assert f"moved to {moved[0]}" in (work / "train.log").read_text()
    assert _rows(work) == [1, 2] and (work / "iter_0000002.pth").is_file()
    # a second overwrite in the same second gets its own name
    assert main(_cli(vspw_root, work, "--overwrite")) == 0
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]) == 2


def test_python_api_refuses_and_overwrites_like_the_cli(vspw_root, tmp_path, fast_model):
    from vidseg.engine.train import RunDirExistsError, train

    cfg = tiny_cfg(vspw_root, tmp_path / "run", "train.iters=2")
    train(cfg)
    with pytest.raises(RunDirExistsError, match="overwrite=True"):
        train(cfg)
    result = train(cfg, overwrite=True)
    assert Path(result["moved_to"]).name.startswith("run.old-")
    assert (Path(result["moved_to"]) / "iter_0000002.pth").is_file()
    with pytest.raises(ValueError, match="exclude"):
        train(cfg, resume="latest", overwrite=True)
