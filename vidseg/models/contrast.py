"""Cross-image pixel contrast (Wang et al., 2021): projection head, class queues, contrastive loss.

A training-only loss: embeddings of pixels of the same class, across images, are pulled together and
those of different classes pushed apart. The projection head is dropped at inference (zero cost for
streaming). Warm-up is the caller's job (`SegmentationLosses`): the term is weighted by lambda = 0.1
and multiplied by 0 until the warm-up iterations have passed.

Deliberate differences from the authors' code (seed-spec 4.3): no class is skipped (their code
drops class 0 when enqueueing and when reading negatives), the pixel-queue pointer advances by the
number of entries written (theirs by 1), and anchors without any positive are left out of the mean
instead of producing NaN.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidseg.models.heads import ConvBNReLU
from vidseg.models.memory import downsample_labels


class ProjectionHead(nn.Module):
    """1x1 conv-BN-ReLU (C_in -> C_in), 1x1 conv (C_in -> proj_dim), L2 normalisation per pixel.

    Shapes: `(B, in_channels, h, w) -> (B, proj_dim, h, w)`, unit norm along dim 1.
    """

    def __init__(self, in_channels: int, proj_dim: int = 256):
        super().__init__()
        self.block = ConvBNReLU(in_channels, in_channels, 1)
        self.proj = nn.Conv2d(in_channels, proj_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.block(x)), dim=1)


def _check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int, where: str) -> None:
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = sorted(set(labels[bad].unique().tolist()))[:10]
        raise ValueError(
            f"{where}: label values {values} are outside 0..{num_classes - 1} "
            f"(and not the ignore index {ignore_index})"
        )


class _CountedGenerator(nn.Module):
    """A private CPU generator whose position lives in a buffer, so it is checkpointed with the
    model (exact resume) and follows DDP buffer broadcasts; the global RNG is never touched."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def next(self) -> torch.Generator:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.draws))
        self.draws += 1
        return gen


class ClassQueues(nn.Module):
    """Per-class ring buffers of segment and pixel embeddings (the contrastive memory bank).

    Buffers (saved with the model): `segment_queue`, `pixel_queue` `(K, size, dim)`, and for each
    `segment_ptr`, `pixel_ptr` (next write position) and `segment_fill`, `pixel_fill` (valid entries)
    `(K,)`. Writing n entries to class c puts them at `(ptr + i) % size` and advances the pointer by n.

    Args:
        num_classes: K.
        size: entries per class in each queue (2000 suggested for K = 124: 508 MB in float32).
        dim: embedding dimension.
        pixels_per_image: pixel embeddings enqueued per (image, class) (10 in the reference code).
        ignore_index: label value that is never enqueued.
        seed: seed of the private generator that picks the enqueued pixels.
        dtype: storage type of the queues (float16 halves the bank; the loss computes in float32).
    """

    def __init__(
        self,
        num_classes: int,
        size: int = 2000,
        dim: int = 256,
        pixels_per_image: int = 10,
        ignore_index: int = 255,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if size < 1 or num_classes < 1 or pixels_per_image < 1:
            raise ValueError(
                f"ClassQueues: num_classes={num_classes}, size={size}, "
                f"pixels_per_image={pixels_per_image}; all must be >= 1"
            )
        self.num_classes, self.size, self.dim = num_classes, size, dim
        self.pixels_per_image = pixels_per_image
        self.ignore_index = ignore_index
        for name in ("segment", "pixel"):
            self.register_buffer(f"{name}_queue", torch.zeros(num_classes, size, dim, dtype=dtype))
            self.register_buffer(f"{name}_ptr", torch.zeros(num_classes, dtype=torch.long))
            self.register_buffer(f"{name}_fill", torch.zeros(num_classes, dtype=torch.long))
        self.rng = _CountedGenerator(seed)

    def _push(self, name: str, cls: int, rows: torch.Tensor) -> None:
        queue, ptr, fill = (getattr(self, f"{name}_{s}") for s in ("queue", "ptr", "fill"))
        n = rows.shape[0]
        start = int(ptr[cls])
        if n > self.size:
            # Only the last `size` rows survive a sequential write; writing them alone avoids
            # duplicate indices (undefined order in index_copy_).
            start, rows = start + n - self.size, rows[-self.size :]
        pos = (start + torch.arange(rows.shape[0], device=queue.device)) % self.size
        queue[cls].index_copy_(0, pos, rows.to(queue.dtype))
        ptr[cls] = (int(ptr[cls]) + n) % self.size
        fill[cls] = min(int(fill[cls]) + n, self.size)

    @staticmethod
    def _gather(emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All-gather the batch across DDP ranks so every replica enqueues the same entries."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return emb, labels
        embs = [torch.empty_like(emb) for _ in range(dist.get_world_size())]
        labs = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
        dist.all_gather(embs, emb.contiguous())
        dist.all_gather(labs, labels.contiguous())
        return torch.cat(embs), torch.cat(labs)

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: per image and present class, its mean embedding and a few pixels.

        Args:
            embeddings: `(B, dim, h, w)` (detached; gradients are never kept).
            labels: `(B, h, w)` train ids at the embedding resolution (ignore_index skipped). Under
                DDP every rank must call this with equally shaped tensors (they are all-gathered).
        """
        if embeddings.dim() != 4 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"ClassQueues.enqueue: embeddings {tuple(embeddings.shape)}, "
                f"expected (B, {self.dim}, h, w)"
            )
        if labels.shape != (embeddings.shape[0], *embeddings.shape[2:]):
            raise ValueError(
                f"ClassQueues.enqueue: labels {tuple(labels.shape)} do not match "
                f"embeddings {tuple(embeddings.shape)}; expected (B, h, w)"
            )
        _check_labels(labels, self.num_classes, self.ignore_index, "ClassQueues.enqueue")
        emb, labels = self._gather(embeddings.detach(), labels)
        gen = self.rng.next()
        for b in range(emb.shape[0]):
            feats = emb[b].flatten(1).t()  # (h*w, dim)
            lab = labels[b].flatten()
            for cls in lab.unique().tolist():
                if cls == self.ignore_index:
                    continue
                cls_feats = feats[lab == cls]
                self._push("segment", cls, F.normalize(cls_feats.mean(0, keepdim=True), dim=1))
                n = min(cls_feats.shape[0], self.pixels_per_image)
                pick = torch.randperm(cls_feats.shape[0], generator=gen)[:n].to(cls_feats.device)
                self._push("pixel", cls, F.normalize(cls_feats[pick], dim=1))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every filled entry of both queues: `(N, dim)` embeddings and their `(N,)` class ids."""
        idx = torch.arange(self.size, device=self.segment_queue.device)
        classes = torch.arange(self.num_classes, device=idx.device)[:, None].expand(-1, self.size)
        embs, labs = [], []
        for name in ("segment", "pixel"):
            valid = idx[None] < getattr(self, f"{name}_fill")[:, None]
            embs.append(getattr(self, f"{name}_queue")[valid])
            labs.append(classes[valid])
        return torch.cat(embs), torch.cat(labs)


class PixelContrastLoss(nn.Module):
    """Supervised pixel-to-pixel / pixel-to-region contrastive loss with segmentation-aware anchors.

    Anchor sampling (seed-spec 4.3): per image, the classes with more than `max_views` pixels are
    candidates; each (image, class) gives `n_view = min(max_samples // #pairs, max_views)` anchors
    (at least 1), half hard (label c, prediction != c) and half easy (label c, prediction c), the
    odd one going to the hard half; a short half is filled from the other.

    For an anchor a with positives P_a and negatives N_a in the contrast set, with s_x = a.x / tau,
        loss_a = -(tau / tau_base) mean_{p in P_a} [ s_p - log(exp(s_p) + sum_{n in N_a} exp(s_n)) ]
    (the other positives are not in the denominator); the loss is the mean over anchors with at
    least one positive. The contrast set is the sampled anchors themselves (self excluded) when
    `queues` is None, else every filled entry of both queues of every class. The similarity matrix
    is processed in chunks of `chunk_size` contrast entries under activation checkpointing, so a
    large bank (K = 124 x 2 x 2000 entries) never materialises an anchors x bank graph.

    Args:
        num_classes: K.
        temperature: tau (0.1).
        base_temperature: tau_base (0.07); the loss is scaled by tau / tau_base.
        max_samples: anchors per batch (1024).
        max_views: anchors per (image, class) (100).
        ignore_index: label never used as an anchor.
        queues: a `ClassQueues` bank, or None for in-batch contrast. The caller enqueues after the loss.
        seed: seed of the private generator that samples anchors.
        chunk_size: contrast entries per chunk.
    """

    def __init__(
        self,
        num_classes: int,
        temperature: float = 0.1,
        base_temperature: float = 0.07,
        max_samples: int = 1024,
        max_views: int = 100,
        ignore_index: int = 255,
        queues: ClassQueues | None = None,
        seed: int = 1,
        chunk_size: int = 8192,
    ):
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError(
                f"PixelContrastLoss: temperature={temperature}, base_temperature="
                f"{base_temperature}; both must be > 0"
            )
        if max_samples < 1 or max_views < 1:
            raise ValueError(
                f"PixelContrastLoss: max_samples={max_samples}, max_views={max_views}; "
                "both must be >= 1"
            )
        if queues is not None and queues.num_classes != num_classes:
            raise ValueError(
                f"PixelContrastLoss: queues hold {queues.num_classes} classes, expected {num_classes}"
            )
        self.num_classes = num_classes
        self.temperature, self.base_temperature = temperature, base_temperature
        self.max_samples, self.max_views = max_samples, max_views
        self.ignore_index = ignore_index
        self.queues = queues
        self.chunk_size = chunk_size
        self.rng = _CountedGenerator(seed)

    @torch.no_grad()
    def sample_anchors(
        self, labels: torch.Tensor, predictions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick anchor pixels. `labels`, `predictions`: `(B, h, w)`.

        Returns:
            `(A,)` flat indices into `B * h * w` and their `(A,)` class ids (both empty if none).
        """
        pairs = []
        for b in range(labels.shape[0]):
            classes, counts = labels[b].unique(return_counts=True)
            pairs += [
                (b, int(c))
                for c, n in zip(classes.tolist(), counts.tolist())
                if c != self.ignore_index and n > self.max_views
            ]
        flat_lab, flat_pred = labels.flatten(1), predictions.flatten(1)
        hw = flat_lab.shape[1]
        if not pairs:
            empty = torch.zeros(0, dtype=torch.long, device=labels.device)
            return empty, empty
        n_view = max(1, min(self.max_samples // len(pairs), self.max_views))
        gen = self.rng.next()
        picks, classes = [], []
        for b, c in pairs:
            is_c = flat_lab[b] == c
            hard = torch.nonzero(is_c & (flat_pred[b] != c))[:, 0]
            easy = torch.nonzero(is_c & (flat_pred[b] == c))[:, 0]
            n_hard = min(hard.numel(), n_view - n_view // 2)
            n_easy = min(easy.numel(), n_view - n_hard)
            n_hard = min(hard.numel(), n_view - n_easy)  # fill from the hard side if easy was short
            for pool, n in ((hard, n_hard), (easy, n_easy)):
                order = torch.randperm(pool.numel(), generator=gen)[:n].to(pool.device)
                picks.append(b * hw + pool[order])
                classes.append(torch.full((n,), c, dtype=torch.long, device=labels.device))
        return torch.cat(picks), torch.cat(classes)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor
    ) -> torch.Tensor:
        """Args:
            embeddings: `(B, D, h, w)` L2-normalised projections (with gradients).
            labels: `(B, h, w)` train ids (nearest-resized here if at another size).
            predictions: `(B, h, w)` argmax of the segmentation logits (resized likewise).
        Returns:
            scalar loss; 0 (connected to the graph) when no anchor has a positive.
        """
        if embeddings.dim() != 4:
            raise ValueError(
                f"PixelContrastLoss: embeddings {tuple(embeddings.shape)}, expected (B, D, h, w)"
            )
        size = embeddings.shape[-2:]
        labels, predictions = downsample_labels(labels, size), downsample_labels(predictions, size)
        _check_labels(labels, self.num_classes, self.ignore_index, "PixelContrastLoss")
        idx, anchor_labels = self.sample_anchors(labels, predictions)
        zero = embeddings.sum() * 0.0
        if idx.numel() == 0:
            return zero
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            anchors = embeddings.float().permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])[idx]
            if self.queues is None:
                contrast, contrast_labels, self_offset = anchors, anchor_labels, 0
            else:
                contrast, contrast_labels = self.queues.contents()
                contrast, self_offset = contrast.float().detach(), None
            if contrast.shape[0] == 0:
                return zero
            per_anchor, valid = self._per_anchor(
                anchors, anchor_labels, contrast, contrast_labels, self_offset
            )
        if not bool(valid.any()):
            return zero
        return per_anchor[valid].mean() + zero

    def _per_anchor(self, anchors, anchor_labels, contrast, contrast_labels, self_offset):
        """`(A,)` losses and `(A,)` mask of anchors with a positive. `self_offset` is the index of
        anchor 0 in the contrast set (or None): each anchor is removed from its own positives."""
        tau = self.temperature
        spans = [
            (start, min(start + self.chunk_size, contrast.shape[0]))
            for start in range(0, contrast.shape[0], self.chunk_size)
        ]
        with torch.no_grad():  # the row max only shifts s and cancels, so it needs no gradient
            row_max = torch.stack([(anchors @ contrast[a:b].t()).max(1).values for a, b in spans])
            row_max = row_max.max(0).values / tau
        use_ckpt = anchors.requires_grad and len(spans) > 1
        run = (
            (lambda f, *a: checkpoint(f, *a, use_reentrant=False))
            if use_ckpt
            else (lambda f, *a: f(*a))
        )
        neg = sum(
            run(self._neg_sum, anchors, contrast[a:b], anchor_labels, contrast_labels[a:b], row_max)
            for a, b in spans
        )
        # an anchor without negatives has neg = 0; the clamp keeps log(exp(s) + neg) finite where
        # exp(s) underflows, otherwise NaN gradients would leak through the positive mask
        neg = neg.clamp_min(torch.finfo(neg.dtype).tiny)
        pos_sum = sum(
            run(
                self._pos_sum,
                anchors,
                contrast[a:b],
                anchor_labels,
                contrast_labels[a:b],
                row_max,
                neg,
                self._self_mask(anchors.shape[0], self_offset, a, b),
            )
            for a, b in spans
        )
        with torch.no_grad():
            pos_cnt = sum(
                (
                    self._positive(
                        anchor_labels,
                        contrast_labels[a:b],
                        self._self_mask(anchors.shape[0], self_offset, a, b),
                    )
                ).sum(1)
                for a, b in spans
            )
        valid = pos_cnt > 0
        return -(tau / self.base_temperature) * pos_sum / pos_cnt.clamp_min(1), valid

    @staticmethod
    def _self_mask(
        num_anchors: int, self_offset: int | None, a: int, b: int
    ) -> torch.Tensor | None:
        """`(num_anchors,)` column of each anchor inside the chunk [a, b), -1 when outside."""
        if self_offset is None:
            return None
        cols = torch.arange(num_anchors) + self_offset - a
        return torch.where((cols >= 0) & (cols < b - a), cols, torch.full_like(cols, -1))

    @staticmethod
    def _positive(anchor_labels, chunk_labels, self_cols):
        positive = anchor_labels[:, None] == chunk_labels[None]
        if self_cols is not None:
            rows = torch.nonzero(self_cols >= 0)[:, 0]
            positive[rows.to(positive.device), self_cols[rows].to(positive.device)] = False
        return positive

    def _neg_sum(self, anchors, chunk, anchor_labels, chunk_labels, row_max):
        s = anchors @ chunk.t() / self.temperature - row_max[:, None]
        return torch.where(anchor_labels[:, None] != chunk_labels[None], torch.exp(s), 0.0).sum(1)

    def _pos_sum(self, anchors, chunk, anchor_labels, chunk_labels, row_max, neg, self_cols):
        s = anchors @ chunk.t() / self.temperature - row_max[:, None]
        term = s - torch.log(torch.exp(s) + neg[:, None])
        return torch.where(self._positive(anchor_labels, chunk_labels, self_cols), term, 0.0).sum(1)
