"""DDP synchronisation of the memories: 2 gloo processes on CPU must match one process on the full batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vidseg.models.memory import DistributionMemory, VectorMemory

K, Z, IGN = 3, 5, 255
WORLD = 2


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two steps of a 4-image batch. Class 2 only appears in images 0-1 (rank 0's half), and
    classes 0 / 1 have different pixel counts on the two halves, so averaging per-rank results
    (instead of summing sums and counts) would give a different memory."""
    gen = torch.Generator().manual_seed(123)
    batches = []
    for _ in range(2):
        feats = torch.randn(4, Z, 3, 4, generator=gen) + 1.0
        labels = torch.randint(0, 2, (4, 3, 4), generator=gen)
        labels[0, 0, :3] = 2
        labels[1, 2, 1] = 2
        labels[2, :2, :] = 1  # rank 1: class 1 dominates
        labels[3, 1, :] = IGN
        batches.append((feats, labels))
    return batches


def run_updates(feats_labels: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    dmem = DistributionMemory(K, Z, momentum=0.3, noise_seed=4).train()
    vmem = VectorMemory(K, Z, base_momentum=0.9, power=0.9).train()
    for step, (feats, labels) in enumerate(feats_labels):
        dmem.update(feats, labels)
        vmem.update(feats, labels, progress=0.25 * step)
    return {
        "stats": dmem.stats,
        "dseen": dmem.seen,
        "sample": dmem.sample(),
        "memory": vmem.memory,
        "vseen": vmem.seen,
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # two ranks on a small shared CPU
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        half = [
            (f[2 * rank : 2 * rank + 2], lab[2 * rank : 2 * rank + 2]) for f, lab in make_batches()
        ]
        torch.save(run_updates(half), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_memories_match_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = run_updates(make_batches())
    # rank 1 never sees class 2 locally, yet it must hold the same entry as rank 0
    assert single["dseen"].tolist() == [True, True, True]
    for key in single:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        if single[key].dtype == torch.bool:
            assert torch.equal(ranks[0][key], single[key]), key
        else:
            assert torch.allclose(ranks[0][key], single[key], atol=1e-5), key
    # the update really moved the memories away from their initial values
    assert not torch.allclose(single["stats"], torch.tensor([[0.0, 1.0]] * K))
    assert single["memory"].abs().sum() > 0
