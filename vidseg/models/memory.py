"""Dataset-level class memories: MCIBI++ distribution memory and MCIBI v1 vector memory.

Both memories live entirely in registered buffers (so they travel with `state_dict` and every
checkpoint, and never receive gradients). Their `update` runs under `torch.no_grad()` with the
pixel representations R of the current training step (on the feature grid, `(B, Z, h, w)`) and
the labels at ANY resolution `(B, H, W)` (normally the full-resolution crop labels); the memory
applies its statistics rule itself:
- `"grid"` (vidseg's rule, the default; the only rule of `VectorMemory`): the labels are
  nearest-downsampled to the feature grid (`downsample_labels`), features are never upsampled.
  An object smaller than a grid cell may never update the memory.
- `"label"` (MCIBI++ eq. 7 and the authors' code, `DistributionMemory` only): R is upsampled
  bilinearly (`align_corners=False`) to the label size and every labelled pixel counts. The
  per-class sums of the upsampled features are computed exactly without materialising the
  upsampled `(B, Z, H, W)` map: bilinear upsampling is linear, so
  `sum_{p in class k} up(R)[:, p] = sum_cells R[:, cell] * W_k[cell]`, where the cell weights
  `W_k` are the adjoint of the upsampling applied to class k's mask (4 bilinear taps per label
  pixel, scattered onto the grid).

Shared semantics of `update` (both classes):
- Eval mode freezes the memory: `update` is a no-op when `self.training` is False.
- A momentum of exactly 0 freezes the memory entirely, including the first-observation
  initialisation (nothing is written, `seen` is not touched). This makes `momentum=0` a clean
  "frozen memory" switch for ablations and fine-tuning.
- By default the first observation of a class sets its entry directly (no EMA from the
  arbitrary initial value); later observations are blended with `new = (1 - m) * old + m * stat`.
  `DistributionMemory(first_update="ema")` blends from the initial entry as the authors do.
- Classes absent from the batch (after excluding `ignore_index`) keep their entries bit-exactly.
- Under DDP (torch.distributed initialised with world size > 1) the per-class partial sums and
  counts are all-reduced (summed) BEFORE any per-class statistic is formed, so a class seen on
  only some ranks is computed from exactly the pixels that exist, and every rank ends with the
  same memory (the authors instead average the per-rank memories after each rank's own EMA).
  Every rank must therefore call `update` in lock-step (the collective is blocking).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

UPDATE_RULES = ("grid", "label")
STD_KINDS = ("population", "unbiased")
FIRST_UPDATES = ("set", "ema")
NOISE_KINDS = ("shared", "per_class")

log = logging.getLogger(__name__)


def downsample_labels(
    labels: torch.Tensor, size: tuple[int, int], ignore_index: int = 255
) -> torch.Tensor:
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
        raise ValueError(
            f"downsample_labels: labels must be (B, H, W), got shape {tuple(labels.shape)}"
        )
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


def _check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _bucket_labels(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    channels: int,
    ignore_index: int,
    owner: str,
) -> torch.Tensor:
    """Check shapes and values; return `(B, H, W)` int64 labels in `[0, K]`, ignored pixels -> K.

    The extra bucket `K` lets per-class sums run without boolean indexing of the pixels.
    """
    if features.dim() != 4 or features.shape[1] != channels:
        raise ValueError(
            f"{owner}.update: features must be (B, {channels}, h, w), "
            f"got shape {tuple(features.shape)}"
        )
    if labels.dim() != 3 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{owner}.update: labels must be (B, H, W) with B = {features.shape[0]} "
            f"(any H, W), got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point:
        raise TypeError(f"{owner}.update: labels must be an integer tensor, got {labels.dtype}")
    lab = labels.long()
    valid = lab != ignore_index
    bad = valid & ((lab < 0) | (lab >= num_classes))
    if bool(bad.any()):
        found = torch.unique(lab[bad]).tolist()[:8]
        raise ValueError(
            f"{owner}.update: labels must be in [0, {num_classes}) or ignore_index "
            f"{ignore_index}, found {found}"
        )
    return torch.where(valid, lab, torch.full_like(lab, num_classes))


def _grid_rows(features: torch.Tensor, buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rule "grid": labels nearest-downsampled to the feature grid (the extra bucket K survives).

    Returns:
        feats `(N, Z)` float32 pixel rows and idx `(N,)` in `[0, K]`, N = B * h * w.
    """
    grid = downsample_labels(buckets, features.shape[-2:])
    z = features.shape[1]
    feats = features.detach().permute(0, 2, 3, 1).reshape(-1, z).float()
    return feats, grid.reshape(-1)


def _class_sums(values: torch.Tensor, idx: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class sums of pixel rows. values `(N, D)`, idx `(N,)` in `[0, K]` -> `(K, D)`."""
    out = values.new_zeros(num_classes + 1, values.shape[1])
    out.index_add_(0, idx, values)
    return out[:num_classes]


def _grid_class_sums(
    features: torch.Tensor, buckets: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Rule "grid": per-class [sum of features | cell count] `(K, Z + 1)` float32, labels
    nearest-downsampled to the feature grid. Scatters along the channel-major layout (no
    `(B, h, w, Z)` transpose, which costs 5x more than the sums on the CPU at Z = 512)."""
    grid = downsample_labels(buckets, features.shape[-2:])
    b, z = features.shape[:2]
    feats = features.detach().reshape(b, z, -1).float()
    sums = feats.new_zeros(b, z, num_classes + 1)
    sums.scatter_add_(2, grid.reshape(b, 1, -1).expand(b, z, -1), feats)
    counts = torch.bincount(grid.reshape(-1), minlength=num_classes + 1)[:num_classes].float()
    return torch.cat([sums.sum(0)[:, :num_classes].t(), counts.unsqueeze(1)], dim=1)


def _bilinear_taps(out_size: int, in_size: int, device) -> tuple[torch.Tensor, ...]:
    """Source cells and weights of `F.interpolate(mode="bilinear", align_corners=False)` along
    one axis, for an output of `out_size` read from an input of `in_size` (PyTorch's rule:
    `src = (dst + 0.5) * in / out - 0.5` clamped at 0, taps `floor(src)` and the next cell, the
    last cell repeated at the border).

    Returns:
        `(i0, i1, w0, w1)`, each `(out_size,)`: cell indices (int64) and weights (float64).
    """
    dst = torch.arange(out_size, dtype=torch.float64, device=device)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    w1 = (src - i0).clamp(0.0, 1.0)
    return i0, i1, 1.0 - w1, w1


def _upsampled_class_sums(
    features: torch.Tensor, buckets: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Rule "label": per-class [sum of features | pixel count] at the label resolution.

    Equal (up to float summation order) to upsampling `features` bilinearly to the label size
    and summing the pixel vectors of each class, but the upsampled map is never built: the
    adjoint of the upsampling turns each present class's mask into weights on the feature grid,
    `W (B, P, h * w)`, and the sums are `W @ R`. Extra memory: `W` plus a few `(B, H, W)` index
    and weight maps (about 30 MB at B = 2, 512x512 labels, 64x64 features), against
    `B * Z * H * W` floats (1 GiB at Z = 512) for the materialised upsampling.

    Args:
        features: `(B, Z, h, w)`.
        buckets: `(B, H, W)` int64 in `[0, K]` (K = ignored).
    Returns:
        `(K, Z + 1)` float32: per-class sums of the upsampled features, then the pixel count.
    """
    b, z, h, w = features.shape
    big_h, big_w = buckets.shape[-2:]
    dev = features.device
    counts = torch.bincount(buckets.reshape(-1), minlength=num_classes + 1)[:num_classes]
    present = counts.nonzero().squeeze(1)
    p = present.numel()
    out = torch.zeros(num_classes, z + 1, dtype=torch.float32, device=dev)
    out[:, -1] = counts.float()
    if p == 0:
        return out
    # compact class ids 0..P-1 for the classes present, P for absent-or-ignored
    lut = torch.full((num_classes + 1,), p, dtype=torch.long, device=dev)
    lut[present] = torch.arange(p, device=dev)
    block = (torch.arange(b, device=dev).view(b, 1, 1) * (p + 1) + lut[buckets]) * (h * w)
    weights = torch.zeros(b * (p + 1) * h * w, dtype=torch.float32, device=dev)
    r0, r1, wr0, wr1 = _bilinear_taps(big_h, h, dev)
    c0, c1, wc0, wc1 = _bilinear_taps(big_w, w, dev)
    for rows, wr in ((r0, wr0), (r1, wr1)):
        for cols, wc in ((c0, wc0), (c1, wc1)):
            cell = rows.view(-1, 1) * w + cols.view(1, -1)  # (H, W): the grid cell this tap reads
            tap = (wr.view(-1, 1) * wc.view(1, -1)).float().expand(b, big_h, big_w)
            weights.scatter_add_(0, (block + cell).reshape(-1), tap.reshape(-1))
    weights = weights.view(b, p + 1, h * w)[:, :p]
    feats = features.detach().reshape(b, z, h * w).float()
    out[present, :-1] = torch.bmm(weights, feats.transpose(1, 2)).sum(0)
    return out


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _fp32_update(update):
    """Run a memory `update(features, labels, progress)` in float32 with autocast off.

    Under AMP the features arrive in float16/bfloat16 and autocast would run the reductions
    (bmm, index_add) in half precision; the EMA statistics are float32 and must stay exact.
    """

    @functools.wraps(update)
    def wrapper(self, features: torch.Tensor, labels: torch.Tensor, progress=None) -> None:
        with torch.autocast(features.device.type, enabled=False):
            return update(self, features.float(), labels, progress)

    return wrapper


class DistributionMemory(nn.Module):
    """MCIBI++ class-distribution memory (seed-spec 3.2 eqs 6-9 and 11).

    Each class k is summarised by two scalars: the channel mean and the channel std of its
    class-mean feature vector. The generator G reads the memory as
    `C_dl[k] = mean_k + std_k * z_k` with a fixed noise vector `z_k` per class, drawn once at
    construction from private generators (the global RNG is never touched), so the read is
    deterministic and cached history maps stay consistent with the current frame.

    Buffers:
        stats: `(K, 2)` float32, column 0 = mean, column 1 = std; initialised to (0, 1).
        seen: `(K,)` bool, whether the class has been observed at least once.
        noise: `(K, Z)` float32 standard-normal noise `z_k`.

    Args:
        num_classes: K.
        channels: Z, the representation dimension.
        momentum: EMA momentum m (MCIBI++ uses a fixed 0.1); 0 freezes the memory.
        noise_seed: seed of the private generator that draws `noise` (noise="shared" only).
        ignore_index: label value excluded from the statistics.
        update_rule: "grid" (labels nearest-downsampled to the feature grid) or "label" (features
            upsampled bilinearly to the label size, as MCIBI++ eq. 7 and the authors' code); see
            the module docstring.
        std: "population" (1/Z) or "unbiased" (1/(Z-1), `torch.std`'s default, the authors' code)
            channel std of the class-mean vector.
        first_update: "set" (the first observation of a class sets its entry) or "ema" (the
            authors': every observation, the first included, is blended into the entry, starting
            from the initial (0, 1)).
        noise: "shared" (`torch.randn(K, Z)` from one generator seeded with `noise_seed`) or
            "per_class" (the authors' generator: class k's noise is
            `torch.randn(1, Z, generator=torch.Generator().manual_seed(k))`, which gives bit for
            bit the numbers of their `torch.manual_seed(k); torch.normal(mean_k, std_k)` read;
            `noise_seed` must then be 0).
    """

    def __init__(
        self,
        num_classes: int,
        channels: int,
        momentum: float = 0.1,
        noise_seed: int = 0,
        ignore_index: int = 255,
        update_rule: str = "grid",
        std: str = "population",
        first_update: str = "set",
        noise: str = "shared",
    ):
        super().__init__()
        owner = "DistributionMemory"
        if num_classes <= 0 or channels <= 0:
            raise ValueError(
                f"{owner}: num_classes and channels must be positive, got {num_classes}, {channels}"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{owner}: momentum must be in [0, 1], got {momentum}")
        self.update_rule = _check_choice(owner, "update_rule", update_rule, UPDATE_RULES)
        self.std = _check_choice(owner, "std", std, STD_KINDS)
        self.first_update = _check_choice(owner, "first_update", first_update, FIRST_UPDATES)
        self.noise_kind = _check_choice(owner, "noise", noise, NOISE_KINDS)
        if std == "unbiased" and channels < 2:
            raise ValueError(f"{owner}: std='unbiased' needs channels >= 2, got {channels}")
        if noise == "per_class" and noise_seed != 0:
            raise ValueError(
                f"{owner}: noise='per_class' seeds class k's generator with k "
                f"(the authors' generator); noise_seed must be 0, got {noise_seed}"
            )
        self.num_classes = num_classes
        self.channels = channels
        self.momentum = float(momentum)
        self.ignore_index = ignore_index
        stats = torch.zeros(num_classes, 2)
        stats[:, 1] = 1.0
        self.register_buffer("stats", stats)
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        if noise == "per_class":
            # one (1, Z) draw per class: a (K, Z) draw from one generator gives other numbers
            z = torch.cat(
                [
                    torch.randn(1, channels, generator=torch.Generator().manual_seed(k))
                    for k in range(num_classes)
                ]
            )
        else:
            z = torch.randn(
                num_classes, channels, generator=torch.Generator().manual_seed(int(noise_seed))
            )
        self.register_buffer("noise", z)
        self._warned_same_size = False

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, channels={self.channels}, "
            f"momentum={self.momentum}, ignore_index={self.ignore_index}, "
            f"update_rule={self.update_rule}, std={self.std}, first_update={self.first_update}, "
            f"noise={self.noise_kind}"
        )

    def sample(self) -> torch.Tensor:
        """Read the memory through the generator G.

        Returns:
            C_dl `(K, Z)` in the buffers' dtype and device; a fresh tensor (not a view of a
            buffer), so later in-place updates never invalidate an autograd graph that used it.
        """
        return self.stats[:, :1] + self.stats[:, 1:] * self.noise

    def class_sums(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """This rank's per-class `[feature sums (Z) | pixel count]` `(K, Z + 1)` under the
        memory's update rule (no all-reduce). Exposed for tests and measurements."""
        buckets = _bucket_labels(
            features,
            labels,
            self.num_classes,
            self.channels,
            self.ignore_index,
            "DistributionMemory",
        )
        if self.update_rule == "label":
            if tuple(buckets.shape[-2:]) != tuple(features.shape[-2:]):
                return _upsampled_class_sums(features, buckets, self.num_classes)
            if not self._warned_same_size:
                self._warned_same_size = True
                log.warning(
                    "DistributionMemory(update_rule='label') got labels of the feature size "
                    f"{tuple(features.shape[-2:])}: the rule then equals 'grid'; pass the "
                    "full-resolution labels to update()"
                )
        # (rule "label" with labels already on the grid: upsampling to the same size is the identity)
        return _grid_class_sums(features, buckets, self.num_classes)

    @torch.no_grad()
    @_fp32_update
    def update(
        self, features: torch.Tensor, labels: torch.Tensor, progress: float | None = None
    ) -> None:
        """EMA update from one batch (no-op in eval mode or with momentum 0).

        Args:
            features: `(B, Z, h, w)` pixel representations R (any float dtype; reduced in float32).
            labels: `(B, H, W)` integer labels at any resolution (normally the full-resolution
                training labels); `update_rule` decides how the two are brought together.
            progress: unused (MCIBI++ keeps a fixed momentum); accepted so that both memories
                share one `update` signature.
        """
        if not self.training or self.momentum == 0.0:
            return
        # One packed all-reduce: [per-class feature sums (Z) | per-class pixel count (1)].
        packed = _all_reduce_sum(self.class_sums(features, labels))
        sums, counts = packed[:, :-1], packed[:, -1]
        present = counts > 0
        class_mean = sums / counts.clamp_min(1.0).unsqueeze(1)  # (K, Z); absent rows are 0, unused
        mu = class_mean.mean(dim=1)
        ddof = 1 if self.std == "unbiased" else 0
        sd = ((class_mean - mu.unsqueeze(1)).pow(2).sum(dim=1) / (self.channels - ddof)).sqrt()
        stat = torch.stack([mu, sd], dim=1).to(self.stats.dtype)
        m = self.momentum
        blended = (1.0 - m) * self.stats + m * stat
        if self.first_update == "set":
            blended = torch.where(self.seen.unsqueeze(1), blended, stat)
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

    def __init__(
        self,
        num_classes: int,
        channels: int,
        base_momentum: float = 0.9,
        power: float = 0.9,
        ignore_index: int = 255,
    ):
        super().__init__()
        if num_classes <= 0 or channels <= 0:
            raise ValueError(
                f"VectorMemory: num_classes and channels must be positive, "
                f"got {num_classes}, {channels}"
            )
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
        return (
            f"num_classes={self.num_classes}, channels={self.channels}, "
            f"base_momentum={self.base_momentum}, power={self.power}, ignore_index={self.ignore_index}"
        )

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
    @_fp32_update
    def update(self, features: torch.Tensor, labels: torch.Tensor, progress: float) -> None:
        """Cosine-weighted EMA update (no-op in eval mode or when the momentum is 0).

        Args:
            features: `(B, Z, h, w)` pixel representations R.
            labels: `(B, H, W)` integer labels at any resolution; nearest-downsampled to the
                feature grid (rule "grid", `downsample_labels`).
            progress: training progress t / T in [0, 1] for the poly momentum.
        """
        m = self.momentum_at(progress)
        if not self.training or m == 0.0:
            return
        buckets = _bucket_labels(
            features, labels, self.num_classes, self.channels, self.ignore_index, "VectorMemory"
        )
        feats, idx = _grid_rows(features, buckets)
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
        wsum_vec, sum_vec = packed[:, :z], packed[:, z : 2 * z]
        wsum, counts = packed[:, 2 * z], packed[:, 2 * z + 1]
        present = counts > 0
        class_mean = sum_vec / counts.clamp_min(1.0).unsqueeze(1)
        use_weights = self.seen & (wsum > 0)
        target = torch.where(
            use_weights.unsqueeze(1),
            wsum_vec / torch.where(wsum > 0, wsum, torch.ones_like(wsum)).unsqueeze(1),
            class_mean,
        ).to(self.memory.dtype)
        blended = torch.where(self.seen.unsqueeze(1), (1.0 - m) * self.memory + m * target, target)
        self.memory.copy_(torch.where(present.unsqueeze(1), blended, self.memory))
        self.seen.logical_or_(present)
