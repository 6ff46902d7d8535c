"""A 2-process gloo run under torchrun: it completes (validation included), and weights and
memory agree across ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from test_train import REPO, make_tiny_vspw

SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
import vidseg.engine.train as tr
from test_train import factory, tiny_cfg
built = []
def make(cfg):
    built.append(factory(cfg))
    return built[-1]
work = sys.argv[2]
result = tr.train(tiny_cfg(sys.argv[1], work, "train.iters=4", "train.sync_bn=true"), model_factory=make)
rank = int(os.environ["RANK"])
torch.save(built[0].state_dict(), os.path.join(work, f"rank{{rank}}.pth"))
print("rank", rank, "done", result["checkpoint"])
"""


def test_two_process_gloo_run_agrees_across_ranks(tmp_path):
    root = make_tiny_vspw(tmp_path / "vspw")
    work = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            root,
            str(work),
        ],
        env={**env, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    a = torch.load(work / "rank0.pth", weights_only=True)
    b = torch.load(work / "rank1.pth", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs across ranks"
    memory = [k for k in a if "memory" in k]
    assert memory and any(a[k].abs().sum() > 0 for k in memory if a[k].is_floating_point())
    # rank 0 alone wrote the run directory; the checkpoint holds both ranks' RNG states
    ckpt = torch.load(work / "iter_0000004.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_per_rank"]) == 2
    assert ckpt["sampler"]["batches"] == 4
    import json

    rows = [json.loads(line) for line in (work / "scalars.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if r["phase"] == "train"] == [1, 2, 3, 4]
    # the final validation ran on both ranks (the evaluator splits the videos) without a hang
    val = [r for r in rows if r["phase"] == "val"]
    assert len(val) == 1 and 0.0 <= val[0]["miou"] <= 1.0
    assert torch.load(work / "best.pth", weights_only=True)["best_miou"] == val[0]["miou"]
    # each process saw batch_size / 2 samples per iteration: throughput counts both
    assert all(r["samples_per_s"] > 0 for r in rows if r["phase"] == "train")
