"""Learning-rate schedule (poly with optional linear warm-up) and optimizer parameter groups.

The schedule is a pure function of the iteration, so resuming needs nothing but the iteration
number; `PolyLR` only keeps its settings for the checkpoint and writes the rates into an
optimizer's groups.
"""

from __future__ import annotations

from torch import nn


def poly_lr(
    iteration: int,
    base_lr: float,
    max_iters: int,
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_ratio: float = 0.1,
    min_lr: float = 0.0,
) -> float:
    """Learning rate of iteration `iteration` (0-based, the update about to be made).

    poly: `lr = (base_lr - min_lr) * (1 - t / T) ** power + min_lr`. During the first
    `warmup_iters` iterations the poly rate is scaled by a factor rising linearly from
    `warmup_ratio` (t = 0) towards 1 (t = warmup_iters).

    Raises:
        ValueError: `max_iters` < 1 or `iteration` outside `[0, max_iters]`.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters={max_iters}; expected >= 1")
    if not 0 <= iteration <= max_iters:
        raise ValueError(f"iteration={iteration} outside [0, {max_iters}]")
    lr = (base_lr - min_lr) * (1.0 - iteration / max_iters) ** power + min_lr
    if warmup_iters > 0 and iteration < warmup_iters:
        lr *= warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters
    return lr


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Split trainable parameters into the backbone (lr * backbone_lr_mult) and everything else,
    the heads (lr), as sssegmentation's `params_rules` (e.g. backbone lr_multiplier 0.1).

    The model must expose its backbone as `model.backbone` (a module); a model without one gets
    a single "heads" group at `lr`. Each group carries `lr_mult`, read by `PolyLR`.
    """
    if backbone_lr_mult < 0:
        raise ValueError(f"backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    backbone = getattr(model, "backbone", None)
    backbone_ids = (
        {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    )
    bb, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (bb if id(p) in backbone_ids else rest).append(p)
    groups = []
    if bb:
        groups.append(
            {
                "params": bb,
                "lr": lr * backbone_lr_mult,
                "lr_mult": float(backbone_lr_mult),
                "name": "backbone",
            }
        )
    if rest:
        groups.append({"params": rest, "lr": lr, "lr_mult": 1.0, "name": "heads"})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


def describe_lrs(optimizer) -> str:
    """One line with every named group's current rate, e.g. `lr: backbone 0.001, heads 0.01`."""
    return "lr: " + ", ".join(
        f"{g.get('name', f'group{i}')} {g['lr']:.4g}" for i, g in enumerate(optimizer.param_groups)
    )


class PolyLR:
    """Writes `poly_lr(t) * group['lr_mult']` into every optimizer group at `step(t)`.

    Args:
        optimizer: optimizer whose groups carry `lr_mult` (default 1).
        base_lr, max_iters, power, warmup_iters, warmup_ratio, min_lr: see `poly_lr`.
    """

    def __init__(
        self,
        optimizer,
        base_lr: float,
        max_iters: int,
        power: float = 0.9,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.1,
        min_lr: float = 0.0,
    ):
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.max_iters = int(max_iters)
        self.power = float(power)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.min_lr = float(min_lr)
        self.last_iter = -1

    def lr_at(self, iteration: int) -> float:
        return poly_lr(
            iteration,
            self.base_lr,
            self.max_iters,
            self.power,
            self.warmup_iters,
            self.warmup_ratio,
            self.min_lr,
        )

    def step(self, iteration: int) -> float:
        """Set the rates for update `iteration` (0-based); returns the base rate (the heads')."""
        lr = self.lr_at(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        self.last_iter = int(iteration)
        return lr

    def state_dict(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "max_iters": self.max_iters,
            "power": self.power,
            "warmup_iters": self.warmup_iters,
            "warmup_ratio": self.warmup_ratio,
            "min_lr": self.min_lr,
            "last_iter": self.last_iter,
        }

    def load_state_dict(self, state: dict) -> None:
        # the schedule settings come from the (possibly edited) config; only the position resumes
        self.last_iter = int(state.get("last_iter", -1))
