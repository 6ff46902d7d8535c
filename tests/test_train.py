"""Training engine on a tiny VSPW-format dataset: learning, exact SIGKILL resume, NaN stop,
config typos, bad data roots and the sampler."""

from __future__ import annotations

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
from torch import nn
from torch.nn import functional as F

from vidseg.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
H, W = 40, 56


def make_tiny_vspw(root: Path, videos: int = 4, frames: int = 4, seed: int = 0) -> str:
    """A VSPW-format root whose classes are learnable from colour: raw 1 red, 2 green, 3 blue."""
    rng = np.random.default_rng(seed)
    colours = {1: (200, 40, 40), 2: (40, 200, 40), 3: (40, 40, 200)}
    names = [f"{v}_vid" for v in range(videos + 1)]
    for name in names:
        for sub in ("origin", "mask"):
            (root / "data" / name / sub).mkdir(parents=True)
        for t in range(frames):
            mask = np.ones((H, W), np.uint8)
            x = int(rng.integers(W // 4, 3 * W // 4))
            y = int(rng.integers(H // 4, 3 * H // 4))
            mask[:, x:] = 2
            mask[y:, : x // 2] = 3
            img = np.zeros((H, W, 3), np.uint8)
            for k, c in colours.items():
                img[mask == k] = c
            img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
            stem = f"{t:08d}"
            cv2.imwrite(str(root / "data" / name / "origin" / f"{stem}.jpg"), img[:, :, ::-1])
            cv2.imwrite(str(root / "data" / name / "mask" / f"{stem}.png"), mask)
    (root / "train.txt").write_text("".join(n + "\n" for n in names[:-1]))
    (root / "val.txt").write_text(names[-1] + "\n")
    (root / "test.txt").write_text("")
    (root / "label_num_dic_final.json").write_text(
        '{"others": 0, "red": 1, "green": 2, "blue": 3, "grey": 4}'
    )
    return str(root)


class TinySeg(nn.Module):
    """Stand-in with the VideoSegmentor training interface: a backbone, a head with dropout (so
    the loop's RNG matters), a memory buffer updated in forward, and `set_progress`."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(16, num_classes, 1))
        self.register_buffer("memory_mean", torch.zeros(8))
        self.progress = 0.0
        self.nan_at: int | None = None  # progress step at which the loss becomes NaN (tests)
        self.calls = 0

    def set_progress(self, progress: float) -> None:
        self.progress = progress

    def memory_stats(self) -> dict:
        return {"mean": self.memory_mean.mean()}

    def forward(self, frames, labels=None):
        feats = self.backbone(frames.flatten(0, 1)).view(*frames.shape[:2], 8, *frames.shape[-2:])
        x = torch.cat(
            [feats[:, -1], feats[:, :-1].mean(1) if frames.shape[1] > 1 else feats[:, -1]], 1
        )
        logits = self.head(x)
        self.calls += 1
        with torch.no_grad():
            mean = feats[:, -1].mean((0, 2, 3)).detach()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(mean)
                mean /= torch.distributed.get_world_size()
            self.memory_mean.mul_(0.9).add_(0.1 * mean)
        loss = F.cross_entropy(logits, labels, ignore_index=255)
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return {"loss_ce": loss, "loss_small": 0.1 * loss}


def factory(cfg):
    """The real model: `build_model` on the tiny config."""
    from vidseg.models.build import build_model

    return build_model(cfg)


def standin(cfg):
    return TinySeg(cfg.model.num_classes)


def tiny_cfg(root: str, work_dir: Path, *extra: str):
    return load_config(
        TINY,
        [
            f"data.root={root}",
            f"work_dir={work_dir}",
            "train.iters=8",
            "train.ckpt_interval=2",
            "train.log_interval=1",
            "data.num_workers=0",
            "train.lr=0.05",
            "model.num_classes=4",
            "data.short_side=40",
            "data.crop_size=[32,32]",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def vspw_root(tmp_path_factory):
    return make_tiny_vspw(tmp_path_factory.mktemp("vspw"))


@pytest.fixture
def no_val(monkeypatch):
    import vidseg.engine.train as tr

    monkeypatch.setattr(tr, "_validate", lambda *a, **k: None)


# The child runs the same training as the in-process tests; `slow` sleeps per iteration so the
# parent can kill it between two checkpoints.
def slowed(make_model, seconds: float):
    """A model factory whose models sleep `seconds` per forward (for the signal/kill tests)."""

    def make(cfg):
        model = make_model(cfg)
        forward = model.forward

        def slow_forward(*args, **kwargs):
            time.sleep(seconds)
            return forward(*args, **kwargs)

        model.forward = slow_forward
        return model

    return make


CHILD = """
import sys
sys.path.insert(0, {tests!r})
import vidseg.engine.train as tr
from test_train import factory, slowed, tiny_cfg
tr._validate = lambda *a, **k: None
resume = sys.argv[4] if len(sys.argv) > 4 else None
tr.train(tiny_cfg(sys.argv[1], sys.argv[2], "train.iters=10"), resume=resume,
         model_factory=slowed(factory, float(sys.argv[3])))
"""


def _child(root, work_dir, slow=0.0, resume=None):
    args = [
        sys.executable,
        "-c",
        CHILD.format(tests=str(Path(__file__).parent)),
        root,
        str(work_dir),
        str(slow),
    ]
    if resume:
        args.append(resume)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _final_state(work_dir: Path) -> dict:
    ckpt = torch.load(work_dir / "iter_0000010.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 10
    return ckpt["model"]


def test_sigkill_and_resume_is_bit_identical(vspw_root, tmp_path):
    full = _child(vspw_root, tmp_path / "full")
    killed_dir = tmp_path / "killed"
    victim = _child(vspw_root, killed_dir, slow=0.4)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill right after the first checkpoint landed
        latest = killed_dir / "latest"
        if latest.exists() and latest.read_text().strip() in (
            "iter_0000002.pth",
            "iter_0000004.pth",
        ):
            break
        assert victim.poll() is None, victim.stdout.read().decode()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "iter_0000010.pth").exists()  # it really died mid-run
    resumed = _child(vspw_root, killed_dir, resume="latest")
    for proc in (full, resumed):
        out = proc.communicate(timeout=180)[0].decode()
        assert proc.returncode == 0, out[-3000:]
    a, b = _final_state(tmp_path / "full"), _final_state(killed_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loss_decreases_and_logs(vspw_root, tmp_path, no_val):
    from vidseg.engine.train import train

    cfg = tiny_cfg(vspw_root, tmp_path / "run", "train.iters=12", "train.ckpt_interval=6")
    result = train(cfg, model_factory=factory)
    import json

    rows = [
        json.loads(line) for line in (tmp_path / "run" / "scalars.jsonl").read_text().splitlines()
    ]
    assert [r["iter"] for r in rows] == list(range(1, 13))
    losses = [r["loss"] for r in rows]
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4]), losses
    for key in ("lr", "iter_time", "data_time", "samples_per_s", "substituted"):
        assert key in rows[0]
    terms = [k for k in rows[0] if k.startswith("loss_")]
    assert terms and sum(rows[0][k] for k in terms) == pytest.approx(rows[0]["loss"], rel=1e-5)
    assert any(k.startswith("memory_") for k in rows[0])
    assert rows[0]["lr"] > rows[-1]["lr"]
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert "iter 12/12" in (tmp_path / "run" / "train.log").read_text()
    assert result["checkpoint"].endswith("iter_0000012.pth") and result["iterations"] == 12
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    assert ckpt["sampler"]["batches"] == 12 and ckpt["config"]["train"]["iters"] == 12
    assert isinstance(ckpt["git_revision"], str) and ckpt["vidseg_version"]


def test_nan_loss_stops_and_keeps_last_checkpoint(vspw_root, tmp_path, no_val):
    from vidseg.engine.checkpoint import load_checkpoint
    from vidseg.engine.train import NonFiniteLossError, train

    def nan_model(cfg):
        m = standin(cfg)
        m.nan_at = 5  # the loss of the 5th forward is NaN
        return m

    cfg = tiny_cfg(vspw_root, tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match="iteration 5"):
        train(cfg, model_factory=nan_model)
    latest = (tmp_path / "run" / "latest").read_text().strip()
    assert latest == "iter_0000004.pth"
    ckpt = load_checkpoint(tmp_path / "run" / latest)
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_resume_other_model_lists_mismatched_keys(vspw_root, tmp_path, no_val):
    from vidseg.engine.checkpoint import CheckpointError
    from vidseg.engine.train import train

    train(tiny_cfg(vspw_root, tmp_path / "run", "train.iters=2"), model_factory=standin)
    with pytest.raises(CheckpointError, match="holds none of this model's 2 tensors") as info:
        train(
            tiny_cfg(vspw_root, tmp_path / "run", "train.iters=4"),
            resume="latest",
            model_factory=lambda cfg: nn.Sequential(nn.Conv2d(3, 4, 1)),
        )
    assert "another model" in str(info.value) and "backbone" in str(info.value)


def test_config_typo_fails_before_any_work(tmp_path, capsys):
    from vidseg.cli import main

    work = tmp_path / "run"
    code = main(["train", str(TINY), "--set", "train.itres=5", f"--work-dir={work}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.itres" in err and "train.iters" in err
    assert not work.exists()


def test_missing_or_non_vspw_root_points_to_data_check(tmp_path, monkeypatch):
    from vidseg.cli import main

    monkeypatch.delenv("VSPW_ROOT", raising=False)
    (tmp_path / "notvspw").mkdir()
    for root in (tmp_path / "absent", tmp_path / "notvspw"):
        code = main(
            ["train", str(TINY), "--set", f"data.root={root}", "--work-dir", str(tmp_path / "w")]
        )
        assert code == 2
    from vidseg.engine.data import resolve_data_root

    with pytest.raises(FileNotFoundError, match="vidseg data check"):
        resolve_data_root(str(tmp_path / "notvspw"), "train")
    with pytest.raises(FileNotFoundError, match="VSPW_ROOT"):
        resolve_data_root("", "train")


def test_sampler_order_splits_ranks_and_resumes():
    from vidseg.engine.data import InfiniteBatchSampler

    single = InfiniteBatchSampler(5, 4, seed=3)
    stream = [single.batch(s) for s in range(6)]
    flat = [pair for b in stream for pair in b]
    # every epoch visits each of the 5 indices once, in a seed-dependent order
    for e in range(4):
        assert sorted(i for ep, i in flat if ep == e) == list(range(5))
    ranks = [InfiniteBatchSampler(5, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    for s in range(6):
        assert ranks[0].batch(s) + ranks[1].batch(s) == stream[s]
    resumed = iter(InfiniteBatchSampler(5, 4, seed=3, start=3))
    assert [next(resumed) for _ in range(3)] == stream[3:]
    assert single.position(3) == {"batches": 3, "epoch": 2, "index": 2}
    with pytest.raises(ValueError, match="multiple"):
        InfiniteBatchSampler(5, 3, world_size=2)


def test_periodic_validation_keeps_best_checkpoint(vspw_root, tmp_path, monkeypatch):
    import vidseg.engine.evaluate as ev
    from vidseg.engine.train import train

    scores = iter([0.1, 0.3, 0.2])
    calls = []

    def fake_evaluate(model, cfg, split=None, max_videos=None, out_dir=None, **kw):
        assert not model.training and split == "val" and max_videos == 1
        calls.append(out_dir)
        return {"miou": next(scores), "mvc8": 0.5}

    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    cfg = tiny_cfg(
        vspw_root,
        tmp_path / "run",
        "train.iters=6",
        "train.val_interval=2",
        "train.val_videos=1",
        "train.ckpt_interval=100",
    )
    result = train(cfg, model_factory=standin)
    assert len(calls) == 3 and calls[0].endswith("iter_0000002")
    assert result["best_miou"] == pytest.approx(0.3) and result["val"]["miou"] == pytest.approx(0.2)
    best = torch.load(tmp_path / "run" / "best.pth", weights_only=True)
    assert best["iteration"] == 4 and best["best_miou"] == pytest.approx(0.3)
    assert (tmp_path / "run" / "latest").read_text().strip() == "iter_0000006.pth"
    import json

    rows = [
        json.loads(line) for line in (tmp_path / "run" / "scalars.jsonl").read_text().splitlines()
    ]
    assert [r["miou"] for r in rows if r["phase"] == "val"] == pytest.approx([0.1, 0.3, 0.2])


class _EpochData(torch.utils.data.Dataset):
    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"value": torch.tensor([self.epoch * 10 + i])}


def test_loader_does_not_touch_global_rng_and_resumes_in_place(vspw_root, tmp_path):
    from vidseg.engine.data import build_train_loader

    cfg = tiny_cfg(vspw_root, tmp_path, "data.batch_size=2")
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loader, _ = build_train_loader(cfg, dataset=_EpochData())
    it = iter(loader)
    assert torch.equal(torch.get_rng_state(), before)
    values = [next(it)["value"].flatten().tolist() for _ in range(4)]
    flat = sum(values, [])
    assert sorted(v % 10 for v in flat[:3]) == [0, 1, 2] and all(v // 10 == 0 for v in flat[:3])
    assert all(v // 10 == 1 for v in flat[3:6])  # the second epoch's samples know their epoch
    # a worker process loads the same samples from the same position
    cfg.data.num_workers = 1
    resumed, _ = build_train_loader(cfg, start_batch=2, dataset=_EpochData())
    assert [b["value"].flatten().tolist() for b, _ in zip(resumed, range(2))] == values[2:]


def test_cli_trains_real_model_validates_and_resumes(vspw_root, tmp_path, capsys):
    """`vidseg train` end to end with `build_model`, the evaluator at the end, and `--resume`."""
    from vidseg.cli import main

    work = tmp_path / "run"
    common = [
        "--work-dir",
        str(work),
        "--set",
        f"data.root={vspw_root}",
        "train.log_interval=1",
        "data.num_workers=0",
        "model.num_classes=4",
        "data.short_side=40",
        "data.crop_size=[32,32]",
        "train.ckpt_interval=1",
    ]
    assert main(["train", str(TINY), *common, "train.iters=2"]) == 0, capsys.readouterr().err
    first = torch.load(work / "iter_0000002.pth", weights_only=True)
    assert (work / "best.pth").is_file() and "miou" in (work / "train.log").read_text()
    assert main(["train", str(TINY), *common, "train.iters=3", "--resume"]) == 0, (
        capsys.readouterr().err
    )
    ckpt = torch.load(work / "iter_0000003.pth", weights_only=True)
    assert ckpt["iteration"] == 3 and ckpt["model"].keys() == first["model"].keys()
    assert any("memory" in k for k in ckpt["model"])
    assert "trained 3 iterations" in capsys.readouterr().out
    # resuming with another model (a PPM context) is refused with the keys that do not fit
    assert (
        main(["train", str(TINY), *common, "train.iters=4", "model.context=ppm", "--resume"]) == 2
    )
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "missing in checkpoint" in err
    assert "image_model.context" in err
    assert not (work / "iter_0000004.pth").exists()


@pytest.mark.parametrize("context", ["none", "upernet"])
def test_real_model_uses_every_parameter_in_training(vspw_root, tmp_path, context):
    """DDP runs with find_unused_parameters=False: every trainable parameter must get a gradient."""
    from vidseg.engine.data import build_train_loader
    from vidseg.models.build import build_model

    cfg = tiny_cfg(vspw_root, tmp_path, f"model.context={context}")
    model = build_model(cfg).train()
    batch = next(iter(build_train_loader(cfg)[0]))
    sum(model(batch["frames"], batch["label"]).values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused


@pytest.mark.parametrize(
    "script,args,expected",
    [
        ("train_vspw.sh", ["cfg.yaml"], "-m vidseg train cfg.yaml"),
        ("train_vspw.sh", ["cfg.yaml", "1", "--resume"], "-m vidseg train cfg.yaml --resume"),
        (
            "train_vspw.sh",
            ["cfg.yaml", "4", "--set", "train.iters=9"],
            "-m torch.distributed.run --standalone --nproc_per_node=4 -m vidseg train cfg.yaml --set train.iters=9",
        ),
        (
            "eval_vspw.sh",
            ["cfg.yaml", "run/best.pth"],
            "-m vidseg eval cfg.yaml --checkpoint run/best.pth",
        ),
        (
            "eval_vspw.sh",
            ["cfg.yaml", "run", "2", "--no-tc"],
            "-m torch.distributed.run --standalone --nproc_per_node=2 -m vidseg eval cfg.yaml --checkpoint run "
            "--no-tc",
        ),
    ],
)
def test_scripts_build_the_right_command(script, args, expected):
    # PYTHON=echo prints the command line the script would run
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args],
        env={**os.environ, "PYTHON": "echo"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == expected


def test_scripts_usage_and_no_machine_paths():
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "train_vspw.sh")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "usage" in proc.stderr
    for script in ("train_vspw.sh", "eval_vspw.sh"):
        text = (REPO / "scripts" / script).read_text()
        assert str(REPO) not in text and "/work/" not in text
