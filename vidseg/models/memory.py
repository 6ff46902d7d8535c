"""Dataset-level class memories: MCIBI++ distribution memory and MCIBI v1 vector memory.

Both memories live entirely in registered buffers (so they travel with `state_dict` and every
checkpoint, and never receive gradients). Their `update` runs under `torch.no_grad()` with the
features of the current training step and the labels nearest-downsampled to the feature grid
(`downsample_labels`); features are never upsampled.

Shared semantics of `update` (both classes):
- Eval mode freezes the memory: `update` is a no-op when `self.training` is False.
- A momentum of exactly 0 freezes the memory entirely, including the first-observation
  initialisation (nothing is written, `seen` is not touched). This makes `momentum=0` a clean
  "frozen memory" switch for ablations and fine-tuning.
- The first observation of a class sets its entry directly (no EMA from the arbitrary initial
  value); later observations are blended with `new = (1 - m) * old + m * stat`.
- Classes absent from the batch (after excluding `ignore_index`) keep their entries bit-exactly.
- Under DDP (torch.distributed initialised with world size > 1) the per-class partial sums and
  counts are all-reduced (summed) BEFORE any per-class statistic is formed, so a class seen on
  only some ranks is computed from exactly the pixels that exist, and every rank ends with the
  same memory. Every rank must therefore call `update` in lock-step (the collective is blocking).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def downsample_labels(labels: torch.Tensor, size: tuple[int, int],
                      ignore_index: int = 255) -> torch.Tensor:
    """Nearest-by-centre resampling of a label map to the feature grid.

    Output cell `(i, j)` takes the label at source pixel
    `(floor((i + 0.5) * H / h), floor((j + 0.5) * W / w))`, i.e. the pixel under the centre of the
    cell (PyTorch's "nearest-exact"). Labels are never interpolated, so `ignore_index` and class ids
    survive unchanged; features are never upsampled to the label size.

    Args:
        labels: `(B, H, W)` int64 class ids, `ignore_index` for unlabelled pixels.
        size: `(h, w)` target grid (the feature map's spatial size).
        ignore_index: unlabelled value; only validated here (it is carried through as-is).
    Returns:
        `(B, h, w)` int64 labels.
    """
    if labels.dim() != 3:
        raise ValueError(f"downsample_labels: labels must be (B, H, W), got shape {tuple(labels.shape)}")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"downsample_labels: size must be positive (h, w), got {size}")
    if not isinstance(ignore_index, int):
        raise TypeError(f"downsample_labels: ignore_index must be an int, got {ignore_index!r}")
    big_h, big_w = labels.shape[-2:]
    if (big_h, big_w) == (h, w):
        return labels
    # Integer arithmetic for the centre index, so no float rounding can shift a row.
    rows = ((2 * torch.arange(h, device=labels.device) + 1) * big_h) // (2 * h)
    cols = ((2 * torch.arange(w, device=labels.device) + 1) * big_w) // (2 * w)
    return labels.index_select(1, rows).index_select(2, cols)


# Cosine weights below this are float round-off of "parallel to the stored vector".
_MIN_WEIGHT = 1e-5


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _flatten_inputs(features: torch.Tensor, labels: torch.Tensor, num_classes: int, channels: int,
                    ignore_index: int, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and flatten to pixel rows.

    Returns:
        feats `(N, Z)` float32 and idx `(N,)` int64 in `[0, K]`, where ignored pixels map to the
        extra bucket `K` (so per-class sums need no boolean indexing of the pixel rows).
    """
    if features.dim() != 4 or features.shape[1] != channels:
        raise ValueError(f"{owner}.update: features must be (B, {channels}, h, w), "
                         f"got shape {tuple(features.shape)}")
    expected = (features.shape[0], *features.shape[2:])
    if labels.dim() != 3 or tuple(labels.shape) != expected:
        raise ValueError(f"{owner}.update: labels must be (B, h, w) = {expected} (downsample them with "
                         f"downsample_labels first), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        raise TypeError(f"{owner}.update: labels must be an integer tensor, got {labels.dtype}")
    lab = labels.reshape(-1).long()
    valid = lab != ignore_index
    bad = valid & ((lab < 0) | (lab >= num_classes))
    if bool(bad.any()):
        found = torch.unique(lab[bad]).tolist()[:8]
        raise ValueError(f"{owner}.update: labels must be in [0, {num_classes}) or ignore_index "
                         f"{ignore_index}, found {found}")
    idx = torch.where(valid, lab, torch.full_like(lab, num_classes))
    feats = features.detach().permute(0, 2, 3, 1).reshape(-1, channels).float()
    return feats, idx


def _class_sums(values: torch.Tensor, idx: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class sums of pixel rows. values `(N, D)`, idx `(N,)` in `[0, K]` -> `(K, D)`."""
    out = values.new_zeros(num_classes + 1, values.shape[1])
    out.index_add_(0, idx, values)
    return out[:num_classes]


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class DistributionMemory(nn.Module):
    """MCIBI++ class-distribution memory (seed-spec 3.2 eqs 6-9 and 11).

    Each class k is summarised by two scalars: the channel mean and the channel population std
    (1/Z) of its class-mean feature vector. The generator G reads the memory as
    `C_dl[k] = mean_k + std_k * z_k` with a per-class noise vector `z_k` drawn once at construction
    from a dedicated, seeded generator (the global RNG is never touched), so the read is
    deterministic and cached history maps stay consistent with the current frame.

    Buffers:
        stats: `(K, 2)` float32, column 0 = mean, column 1 = std; initialised to (0, 1).
        seen: `(K,)` bool, whether the class has been observed at least once.
        noise: `(K, Z)` float32 standard-normal noise `z_k`.

    Args:
        num_classes: K.
        channels: Z, the representation dimension.
        momentum: EMA momentum m (MCIBI++ uses a fixed 0.1); 0 freezes the memory.
        noise_seed: seed of the private generator that draws `noise`.
        ignore_index: label value excluded from the statistics.
    """

    def __init__(self, num_classes: int, channels: int, momentum: float = 0.1, noise_seed: int = 0,
                 ignore_index: int = 255):
        super().__init__()
        if num_classes <= 0 or channels <= 0:
            raise ValueError(f"DistributionMemory: num_classes and channels must be positive, "
                             f"got {num_classes}, {channels}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"DistributionMemory: momentum must be in [0, 1], got {momentum}")
        self.num_classes = num_classes
        self.channels = channels
        self.momentum = float(momentum)
        self.ignore_index = ignore_index
        stats = torch.zeros(num_classes, 2)
        stats[:, 1] = 1.0
        self.register_buffer("stats", stats)
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        gen = torch.Generator().manual_seed(int(noise_seed))
        self.register_buffer("noise", torch.randn(num_classes, channels, generator=gen))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, channels={self.channels}, "
                f"momentum={self.momentum}, ignore_index={self.ignore_index}")

    def sample(self) -> torch.Tensor:
        """Read the memory through the generator G.

        Returns:
            C_dl `(K, Z)` in the buffers' dtype and device; a fresh tensor (not a view of a
            buffer), so later in-place updates never invalidate an autograd graph that used it.
        """
        return self.stats[:, :1] + self.stats[:, 1:] * self.noise

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, progress: float | None = None) -> None:
        """EMA update from one batch (no-op in eval mode or with momentum 0).

        Args:
            features: `(B, Z, h, w)` pixel representations R (any float dtype; reduced in float32).
            labels: `(B, h, w)` integer labels on the same grid (see `downsample_labels`).
            progress: unused (MCIBI++ keeps a fixed momentum); accepted so that both memories
                share one `update` signature.
        """
        if not self.training or self.momentum == 0.0:
            return
        feats, idx = _flatten_inputs(features, labels, self.num_classes, self.channels,
                                     self.ignore_index, "DistributionMemory")
        ones = feats.new_ones(feats.shape[0], 1)
        # One packed all-reduce: [per-class feature sums (Z) | per-class pixel count (1)].
        packed = _all_reduce_sum(_class_sums(torch.cat([feats, ones], dim=1), idx, self.num_classes))
        sums, counts = packed[:, :-1], packed[:, -1]
        present = counts > 0
        class_mean = sums / counts.clamp_min(1.0).unsqueeze(1)  # (K, Z); absent rows are 0, unused
        mu = class_mean.mean(dim=1)
        sd = (class_mean - mu.unsqueeze(1)).pow(2).mean(dim=1).sqrt()  # population std, 1/Z
        stat = torch.stack([mu, sd], dim=1).to(self.stats.dtype)
        m = self.momentum
        blended = torch.where(self.seen.unsqueeze(1), (1.0 - m) * self.stats + m * stat, stat)
        self.stats.copy_(torch.where(present.unsqueeze(1), blended, self.stats))
        self.seen.logical_or_(present)


class VectorMemory(nn.Module):
    """MCIBI (v1) class-vector memory with the cosine-weighted EMA update (seed-spec 1.2 eqs 6-10).

    For every class c in the batch, pixel i of class c gets weight `1 - cos(R_i, M_c)`, normalised
    over all that class's pixels (across all DDP ranks): pixels unlike the stored vector dominate.
    The target `M'_c = sum_i w_i R_i` is blended with `m = base_momentum * (1 - progress)^power`.
    The first observation sets `M_c` to the class-mean feature. If every weight of a class is zero
    (all its pixels parallel to `M_c`; weights below 1e-5 are treated as fp32 round-off, i.e. 0)
    the target falls back to the class mean.

    Buffers:
        memory: `(K, Z)` float32, zero-initialised.
        seen: `(K,)` bool.

    Args:
        num_classes: K.
        channels: Z.
        base_momentum: m_0 of the poly schedule (MCIBI: 0.9).
        power: p of the poly schedule (MCIBI: 0.9).
        ignore_index: label value excluded from the update.
    """

    def __init__(self, num_classes: int, channels: int, base_momentum: float = 0.9, power: float = 0.9,
                 ignore_index: int = 255):
        super().__init__()
        if num_classes <= 0 or channels <= 0:
            raise ValueError(f"VectorMemory: num_classes and channels must be positive, "
                             f"got {num_classes}, {channels}")
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"VectorMemory: base_momentum must be in [0, 1], got {base_momentum}")
        if power < 0:
            raise ValueError(f"VectorMemory: power must be >= 0, got {power}")
        self.num_classes = num_classes
        self.channels = channels
        self.base_momentum = float(base_momentum)
        self.power = float(power)
        self.ignore_index = ignore_index
        self.register_buffer("memory", torch.zeros(num_classes, channels))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, channels={self.channels}, "
                f"base_momentum={self.base_momentum}, power={self.power}, ignore_index={self.ignore_index}")

    def momentum_at(self, progress: float) -> float:
        """Poly-annealed momentum `base_momentum * (1 - progress)^power`, progress = t / T in [0, 1]."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"VectorMemory: progress must be t / T in [0, 1], got {progress}")
        return self.base_momentum * (1.0 - progress) ** self.power

    def sample(self) -> torch.Tensor:
        """Memory rows `(K, Z)` as a copy (in-place updates must not touch tensors saved by autograd)."""
        return self.memory.clone()

    def rcl_inputs(self) -> torch.Tensor:
        """Memory rows as `(K, Z, 1, 1)` "images" for the representation-consistency loss."""
        return self.memory.clone()[:, :, None, None]

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, progress: float) -> None:
        """Cosine-weighted EMA update (no-op in eval mode or when the momentum is 0).

        Args:
            features: `(B, Z, h, w)` pixel representations R.
            labels: `(B, h, w)` integer labels on the same grid.
            progress: training progress t / T in [0, 1] for the poly momentum.
        """
        m = self.momentum_at(progress)
        if not self.training or m == 0.0:
            return
        feats, idx = _flatten_inputs(features, labels, self.num_classes, self.channels,
                                     self.ignore_index, "VectorMemory")
        # Row K is the zero vector for ignored pixels; cosine with it is 0 and those rows are dropped.
        mem = torch.cat([self.memory.float(), self.memory.new_zeros(1, self.channels).float()])
        cos = F.cosine_similarity(feats, mem[idx], dim=1, eps=1e-8)
        weight = 1.0 - cos
        # fp32 cosine of parallel vectors is 1 only up to ~1e-7; such round-off must not pick the
        # target, so weights below _MIN_WEIGHT count as exactly 0.
        weight = torch.where(weight > _MIN_WEIGHT, weight, torch.zeros_like(weight)).unsqueeze(1)
        ones = feats.new_ones(feats.shape[0], 1)
        # Un-normalised sums only, so the per-class normalisation spans every rank's pixels.
        packed = torch.cat([weight * feats, feats, weight, ones], dim=1)
        packed = _all_reduce_sum(_class_sums(packed, idx, self.num_classes))
        z = self.channels
        wsum_vec, sum_vec = packed[:, :z], packed[:, z:2 * z]
        wsum, counts = packed[:, 2 * z], packed[:, 2 * z + 1]
        present = counts > 0
        class_mean = sum_vec / counts.clamp_min(1.0).unsqueeze(1)
        use_weights = self.seen & (wsum > 0)
        target = torch.where(use_weights.unsqueeze(1),
                             wsum_vec / torch.where(wsum > 0, wsum, torch.ones_like(wsum)).unsqueeze(1),
                             class_mean).to(self.memory.dtype)
        blended = torch.where(self.seen.unsqueeze(1), (1.0 - m) * self.memory + m * target, target)
        self.memory.copy_(torch.where(present.unsqueeze(1), blended, self.memory))
        self.seen.logical_or_(present)
