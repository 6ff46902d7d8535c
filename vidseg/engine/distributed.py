"""Process-group set-up from torchrun's environment, rank helpers and small collectives.

A plain `vidseg train` (no `WORLD_SIZE` > 1 in the environment) never calls into
`torch.distributed`: every helper checks the module-level flag set by `init_distributed`.

On several nodes torchrun gives every process its global `RANK` (rank-0 duties: run directory,
logs, checkpoints, metrics files), its `LOCAL_RANK` on its node (which GPU it drives) and the
global `WORLD_SIZE`; the two ranks differ on every node but the first, so they are never mixed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from vidseg.errors import VidsegError

_INITIALISED = False


class DistributedSetupError(VidsegError):
    """torchrun's environment is inconsistent, or names a GPU this node does not have."""


@dataclass
class DistInfo:
    """Where this process sits: global `rank` of `world_size`, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int | None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise DistributedSetupError(
                f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {name} is not "
                f"set; start the processes with torchrun (scripts/train_vspw.sh)"
            )
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(
            f"environment variable {name}={value!r}; expected an integer (set by torchrun)"
        ) from None


def init_distributed(timeout_s: float = 1800.0, device_type: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK).

    Each process drives `cuda:LOCAL_RANK` with nccl when CUDA is used, else the CPU with gloo.
    Without WORLD_SIZE > 1 returns a single-process `DistInfo` on `cuda:0` or the CPU.

    Args:
        timeout_s: how long a collective may wait for the other ranks.
        device_type: "cuda" or "cpu" to choose; None = CUDA when it is available.
    Raises:
        DistributedSetupError: RANK / LOCAL_RANK missing or out of range, or CUDA asked for and
            LOCAL_RANK names a GPU that this node does not have.
    """
    global _INITIALISED
    world = _env_int("WORLD_SIZE", 1)
    cuda = torch.cuda.is_available() if device_type is None else device_type == "cuda"
    if world <= 1:
        return DistInfo(device=torch.device("cuda", 0) if cuda else torch.device("cpu"))
    import datetime

    import torch.distributed as dist

    # a default of 0 here would make every process rank 0: all of them would write the run
    rank = _env_int("RANK", None)
    local_rank = _env_int("LOCAL_RANK", None)
    if not 0 <= rank < world or local_rank < 0:
        raise DistributedSetupError(
            f"RANK={rank}, LOCAL_RANK={local_rank} do not fit "
            f"WORLD_SIZE={world} (expected 0 <= RANK < WORLD_SIZE)"
        )
    if cuda:
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise DistributedSetupError(
                f"LOCAL_RANK={local_rank} but only {visible} GPU(s) are visible on this node; use "
                f"--nproc-per-node (the scripts' GPUS) <= the number of GPUs per node"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    _INITIALISED = True
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def is_distributed() -> bool:
    return _INITIALISED


def get_rank() -> int:
    if not _INITIALISED:
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def get_world_size() -> int:
    if not _INITIALISED:
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def barrier() -> None:
    if _INITIALISED:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity in a single process); returns `tensor`."""
    if _INITIALISED:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    all_reduce_sum(tensor)
    if _INITIALISED:
        tensor /= get_world_size()
    return tensor


def reduce_scalars(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of each scalar over ranks (for logging)."""
    if not _INITIALISED or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    all_reduce_mean(t)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on at least one."""
    if not _INITIALISED:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    all_reduce_sum(t)
    return bool(t.item() > 0)


def all_gather_object(obj) -> list:
    if not _INITIALISED:
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not _INITIALISED:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_bn_possible(device: torch.device) -> bool:
    """SyncBatchNorm needs a process group and CUDA modules (DDP refuses it on the CPU)."""
    return _INITIALISED and device.type == "cuda"


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BN statistics, memory) to every rank."""
    if not _INITIALISED:
        return
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)


def convert_sync_bn(model: nn.Module, enabled: bool, device: torch.device) -> nn.Module:
    """BatchNorm -> SyncBatchNorm when `enabled` and possible (else unchanged)."""
    if enabled and sync_bn_possible(device):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap_ddp(
    model: nn.Module,
    info: DistInfo,
    find_unused_parameters: bool = False,
    broadcast_buffers: bool = True,
) -> nn.Module:
    """DistributedDataParallel around `model` (unchanged in a single process).

    `broadcast_buffers=False` suits SyncBatchNorm models: the class memory keeps itself in sync
    by all-reducing its per-class sums and SyncBN statistics agree by construction, so copying
    rank 0's buffers before every forward would be wasted traffic.
    """
    if not _INITIALISED:
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # newer torch names the per-forward copy `forward_sync_buffers` and warns on the old name;
    # the new flag still copies once at construction, harmless since all ranks start equal
    sync = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else "broadcast_buffers"
    )
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(
        model,
        device_ids=ids,
        output_device=ids[0] if ids else None,
        find_unused_parameters=find_unused_parameters,
        **{sync: broadcast_buffers},
    )


def cleanup() -> None:
    global _INITIALISED
    if _INITIALISED:
        import torch.distributed as dist

        dist.destroy_process_group()
        _INITIALISED = False
