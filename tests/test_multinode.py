"""Multi-node launch: the scripts' SLURM / NNODES derivation (dry runs), the nodelist parser, and
a real 2-"node" gloo training + evaluation on localhost through scripts/*_vspw.sh."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys

import pytest
import torch
from test_train import REPO, TINY, make_tiny_vspw

SCRIPTS = REPO / "scripts"
LAUNCH_VARS = ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE", "DRY_RUN")


def _clean_env(**extra: str) -> dict:
    """The current environment without any launch or SLURM variable, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")
    }
    env.update(PYTHON=sys.executable, **extra)
    return env


def _dry_run(*args: str, script: str = "train_vspw.sh", **env: str) -> list[str]:
    proc = subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env=_clean_env(DRY_RUN="1", **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout)


def _fails(*args: str, **env: str) -> str:
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "train_vspw.sh"), *args],
        env=_clean_env(DRY_RUN="1", **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train_vspw.sh: error: "), proc.stderr
    return lines[0]


def _torchrun(*launch: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch]


def test_first_host_of_a_nodelist():
    cases = {
        "node07": "node07",
        "node[01-02]": "node01",
        "node[01-02,05],gpu3": "node01",
        "gpu-a[1-3]-ib": "gpu-a1-ib",
        "a[1-2]b[3-4]": "a1b3",
        "x1,x2": "x1",
        "n[001-004]": "n001",
        "host[7,9-11]": "host7",
    }
    loop = 'source "$0"; for list in "$@"; do slurm_first_host "$list"; done'
    proc = subprocess.run(
        ["bash", "-c", loop, str(SCRIPTS / "_slurm.sh"), *cases],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == list(cases.values())


def test_scontrol_is_preferred_when_present(tmp_path):
    fake = tmp_path / "scontrol"
    fake.write_text(
        '#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "first-%s\\nsecond\\n" "$3"\n'
    )
    fake.chmod(0o755)
    cmd = _dry_run(
        "cfg",
        SLURM_JOB_ID="7",
        SLURM_NNODES="2",
        SLURM_NODEID="0",
        SLURM_JOB_NODELIST="n[1-2]",
        PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
    )
    assert "--master_addr=first-n[1-2]" in cmd


def test_slurm_variables_make_the_torchrun_command():
    cmd = _dry_run(
        "configs/x.yaml",
        "--set",
        "train.iters=5",
        SLURM_JOB_ID="123456",
        SLURM_NNODES="2",
        SLURM_NODEID="1",
        SLURM_NTASKS="2",
        SLURM_JOB_NODELIST="gpu[07-08]",
        SLURM_GPUS_ON_NODE="8",
    )
    assert cmd == _torchrun(
        "--nnodes=2",
        "--node_rank=1",
        "--master_addr=gpu07",
        "--master_port=29956",
        "--nproc_per_node=8",
        "-m",
        "vidseg",
        "train",
        "configs/x.yaml",
        "--set",
        "train.iters=5",
    )
    # SLURM_GPUS_PER_NODE with a GPU type; a step nodelist wins over the job's; explicit values win
    cmd = _dry_run(
        "cfg",
        "ck",
        "--no-tc",
        script="eval_vspw.sh",
        SLURM_JOB_ID="5",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NODEID="0",
        SLURM_JOB_NODELIST="a[1-4]",
        SLURM_STEP_NODELIST="a[3-4]",
        SLURM_GPUS_PER_NODE="gpu:h100:4(S:0-1)",
        MASTER_PORT="40000",
    )
    assert cmd == _torchrun(
        "--nnodes=2",
        "--node_rank=0",
        "--master_addr=a3",
        "--master_port=40000",
        "--nproc_per_node=4",
        "-m",
        "vidseg",
        "eval",
        "cfg",
        "--checkpoint",
        "ck",
        "--no-tc",
    )
    # one SLURM node: the standalone rendezvous, as without SLURM
    cmd = _dry_run(
        "cfg",
        SLURM_JOB_ID="5",
        SLURM_NNODES="1",
        SLURM_NODEID="0",
        SLURM_JOB_NODELIST="solo",
        SLURM_GPUS_ON_NODE="8",
    )
    assert cmd == _torchrun("--standalone", "--nproc_per_node=8", "-m", "vidseg", "train", "cfg")
    # a CPU-only job (0 GPUs): one process, unless GPUS says how many
    cmd = _dry_run("cfg", SLURM_JOB_ID="5", SLURM_NNODES="1", SLURM_GPUS_ON_NODE="0")
    assert cmd == [sys.executable, "-m", "vidseg", "train", "cfg"]


def test_by_hand_variables_and_defaults():
    assert _dry_run("cfg", "--resume") == [
        sys.executable,
        "-m",
        "vidseg",
        "train",
        "cfg",
        "--resume",
    ]
    assert _dry_run("cfg", "4") == _torchrun(
        "--standalone", "--nproc_per_node=4", "-m", "vidseg", "train", "cfg"
    )
    cmd = _dry_run("cfg", "8", NNODES="2", NODE_RANK="1", MASTER_ADDR="10.1.2.3")
    assert cmd == _torchrun(
        "--nnodes=2",
        "--node_rank=1",
        "--master_addr=10.1.2.3",
        "--master_port=29500",
        "--nproc_per_node=8",
        "-m",
        "vidseg",
        "train",
        "cfg",
    )
    # one node with a given master: its address and port, not the standalone rendezvous
    cmd = _dry_run("cfg", NPROC_PER_NODE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="29600")
    assert cmd == _torchrun(
        "--nnodes=1",
        "--node_rank=0",
        "--master_addr=127.0.0.1",
        "--master_port=29600",
        "--nproc_per_node=2",
        "-m",
        "vidseg",
        "train",
        "cfg",
    )


def test_bad_launch_values_fail_in_one_line():
    assert "NODE_RANK=2 must be < NNODES=2" in _fails("cfg", NNODES="2", NODE_RANK="2")
    assert "NNODES=two is not a whole number" in _fails("cfg", NNODES="two")
    assert "MASTER_PORT=70000" in _fails("cfg", NNODES="2", MASTER_PORT="70000")
    assert "GPUS (processes per node)=0" in _fails("cfg", "0")
    assert "srun --ntasks-per-node=1" in _fails(
        "cfg",
        SLURM_JOB_ID="9",
        SLURM_NNODES="2",
        SLURM_NODEID="0",
        SLURM_NTASKS="16",
        SLURM_JOB_NODELIST="n[1-2]",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(script: str, *args: str) -> list[str]:
    """Start `script` as node 0 and node 1 of a 2-node job on localhost; returns their outputs."""
    env = _clean_env(
        NNODES="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        NPROC_PER_NODE="1",
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
    )
    procs = [
        subprocess.Popen(
            ["bash", str(SCRIPTS / script), *args],
            env={**env, "NODE_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for r in (0, 1)
    ]
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:  # a hung rendezvous: end the node and its workers
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for rank, (proc, out) in enumerate(zip(procs, outs)):
        assert proc.returncode == 0, f"node {rank}:\n{out[-4000:]}"
    return outs


@pytest.fixture(scope="module")
def vspw_root(tmp_path_factory):
    return make_tiny_vspw(tmp_path_factory.mktemp("vspw"))


def test_two_nodes_train_then_evaluate(vspw_root, tmp_path):
    work = tmp_path / "run"
    sets = [
        "--set",
        f"data.root={vspw_root}",
        "model.num_classes=4",
        "data.short_side=40",
        "data.crop_size=[32,32]",
        "data.num_workers=0",
    ]
    outs = _two_nodes(
        "train_vspw.sh",
        str(TINY),
        *sets,
        "train.iters=2",
        "train.ckpt_interval=2",
        "train.log_interval=1",
        "--work-dir",
        str(work),
    )
    assert "trained 2 iterations" in outs[0] and "trained 2 iterations" not in outs[1]
    # global rank 0 (node 0) alone wrote the run directory, once
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_0000002.pth"]
    ckpt = torch.load(work / "iter_0000002.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_per_rank"]) == 2
    log = (work / "train.log").read_text()
    assert log.count("starting iteration 0/2 on cpu x2") == 1
    rows = [json.loads(line) for line in (work / "scalars.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if r["phase"] == "train"] == [1, 2]
    assert len([r for r in rows if r["phase"] == "val"]) == 1

    out = tmp_path / "eval"
    outs = _two_nodes(
        "eval_vspw.sh",
        str(TINY),
        str(work),
        "--data",
        vspw_root,
        "--split",
        "train",
        "--max-videos",
        "2",
        "--no-tc",
        "--out",
        str(out),
        *sets,
    )
    # each node scored one video; node 0 merged both and alone printed the table
    assert "\n".join(outs).count("metrics: ") == 1 and "metrics: " in outs[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["videos"] == 2 and metrics["frames"] == 8 and 0.0 <= metrics["miou"] <= 1.0
    assert sorted(p.name for p in (out / "pred").iterdir()) == ["0_vid", "1_vid"]


@pytest.mark.parametrize(
    "env,message",
    [
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not set"),
        (
            {"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"},
            "RANK=2, LOCAL_RANK=0 do not fit WORLD_SIZE=2",
        ),
        ({"WORLD_SIZE": "2", "RANK": "one", "LOCAL_RANK": "0"}, "RANK='one'"),
    ],
)
def test_inconsistent_torchrun_environment_is_refused(monkeypatch, env, message):
    from vidseg.engine import distributed as du

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(du.DistributedSetupError, match=message):
        du.init_distributed(device_type="cpu")
    assert not du.is_distributed()
