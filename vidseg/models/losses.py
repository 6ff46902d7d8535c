"""Segmentation losses: cross-entropy with ignore, OHEM, MCIBI's representation consistency."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _to_label_size(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Pixel-wise CE. `logits (B, K, h, w)` are upsampled (bilinear) to `labels (B, H, W)`.

    Returns 0 (still connected to the graph) when every pixel is ignored, never NaN.
    """
    logits = _to_label_size(logits, labels)
    valid = labels != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


class OhemCrossEntropy(nn.Module):
    """Online hard example mining CE (GALD setting).

    Keeps the pixels whose probability of the true class is below `threshold`; if fewer than
    `min_kept` pixels qualify, the threshold is raised to the `min_kept`-th smallest true-class
    probability, so at least `min_kept` of the hardest valid pixels always count.

    Args:
        threshold: probability under which a pixel is hard (0.7).
        min_kept: minimum number of pixels kept per batch (100,000 at Cityscapes scale).
        ignore_index: label to ignore.
    """

    def __init__(self, threshold: float = 0.7, min_kept: int = 100000, ignore_index: int = 255):
        super().__init__()
        self.threshold = threshold
        self.min_kept = min_kept
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = _to_label_size(logits, labels)
        pixel_loss = F.cross_entropy(
            logits, labels, ignore_index=self.ignore_index, reduction="none"
        ).flatten()
        valid = (labels != self.ignore_index).flatten()
        if not valid.any():
            return logits.sum() * 0.0
        with torch.no_grad():
            safe = labels.flatten().clone()
            safe[~valid] = 0
            prob = logits.detach().softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
            true_prob = prob.gather(1, safe[:, None])[:, 0]
            true_prob[~valid] = 2.0  # never selected
            threshold = self.threshold
            n_valid = int(valid.sum())
            k = min(self.min_kept, n_valid)
            if k > 0:
                kth = torch.kthvalue(true_prob, k).values.item()
                threshold = max(threshold, kth)
            keep = valid & (true_prob <= threshold)
        return pixel_loss[keep].mean()


def rcl_loss(classifier: nn.Module, memory_rows: torch.Tensor) -> torch.Tensor:
    """MCIBI representation-consistency loss: the classifier must recognise each memory row.

    Args:
        classifier: H_cls (1x1 convs only), applied to the rows as K one-pixel images.
        memory_rows: `(K, Z, 1, 1)`; row k is labelled k.
    Returns:
        mean CE over the K rows. BatchNorm runs in eval mode (running statistics untouched by
        the memory rows); the classifier's training mode is restored afterwards.
    """
    modes = {
        m: m.training
        for m in classifier.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }
    for m in modes:
        m.eval()
    try:
        logits = classifier(memory_rows).flatten(1)
    finally:
        for m, mode in modes.items():
            m.train(mode)
    targets = torch.arange(memory_rows.shape[0], device=memory_rows.device)
    return F.cross_entropy(logits, targets)
