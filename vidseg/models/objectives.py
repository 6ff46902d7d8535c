"""The training objective of the segmentor: which loss terms, with which weights.

L = L_O (or the HMSA fused loss) + alpha L_W + 0.4 L_aux [+ beta L_RCL for MCIBI]
    [+ lambda L_contrast after the warm-up].
"""

from __future__ import annotations

import torch
from torch import nn

from vidseg.models.losses import OhemCrossEntropy, cross_entropy, rcl_loss
from vidseg.models.memory import downsample_labels


class SegmentationLosses(nn.Module):
    """Turns the training outputs of `VideoSegmentor` into a dict of weighted loss terms.

    Args:
        pr_weight: alpha, weight of L_W on the class-weight logits (0.4).
        aux_weight: weight of the auxiliary head on backbone stage 3 (0.4).
        cwi_weight: weight of the C_wi decoder's CE (sssegmentation layout: 1.0).
        ohem: use OHEM cross-entropy for the main output (GALD setting).
        rcl_weight: weight of MCIBI's representation-consistency loss (vector memory only).
        contrast: a `PixelContrastLoss` (or None) applied to the projected R of the current frame.
        contrast_weight: lambda (0.1).
        contrast_warmup: fraction of training before the contrast term is switched on.
        hmsa_per_scale_weight: weight of the per-scale CE terms of HMSA training (0.05).
        ignore_index: label value to ignore.
    """

    def __init__(
        self,
        pr_weight: float = 0.4,
        aux_weight: float = 0.4,
        ohem: bool = False,
        cwi_weight: float = 0.0,
        rcl_weight: float = 0.0,
        contrast: nn.Module | None = None,
        contrast_weight: float = 0.1,
        contrast_warmup: float = 0.0,
        hmsa_per_scale_weight: float = 0.05,
        ignore_index: int = 255,
    ):
        super().__init__()
        self.pr_weight = pr_weight
        self.aux_weight = aux_weight
        self.cwi_weight = cwi_weight
        self.main = OhemCrossEntropy(ignore_index=ignore_index) if ohem else None
        self.rcl_weight = rcl_weight
        self.contrast = contrast
        self.contrast_weight = contrast_weight
        self.contrast_warmup = contrast_warmup
        self.hmsa_per_scale_weight = hmsa_per_scale_weight
        self.ignore_index = ignore_index

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels, ignore_index=self.ignore_index)

    def forward(
        self, outputs: dict, labels: torch.Tensor, model: nn.Module, progress: float
    ) -> dict:
        """Args:
        outputs: `logits`, `pr_logits`, `cwi_logits` (or None), `aux_logits`, `r`, `r_labels` (labels on the R grid)
            and optionally `hmsa`
            (((low_logits, low_attn), (logits, attn))).
        labels: `(B, H, W)` train ids.
        model: the `ImageSegmentor` (for the memory, the classifier and the projection head).
        progress: t / T.
        """
        terms = {}
        if "hmsa" in outputs:
            low, high = outputs["hmsa"]
            from vidseg.models.multiscale import hmsa_training_loss

            hmsa_terms = hmsa_training_loss(
                low, high, labels, per_scale_weight=self.hmsa_per_scale_weight
            )
            terms.update(
                {f"loss_{k}" if not k.startswith("loss") else k: v for k, v in hmsa_terms.items()}
            )
        elif self.main is not None:
            terms["loss_cls"] = self.main(outputs["logits"], labels)
        else:
            terms["loss_cls"] = self._ce(outputs["logits"], labels)
        if outputs.get("pr_logits") is not None and self.pr_weight > 0:
            terms["loss_pr"] = self.pr_weight * self._ce(outputs["pr_logits"], labels)
        if outputs.get("cwi_logits") is not None and self.cwi_weight > 0:
            terms["loss_cwi"] = self.cwi_weight * self._ce(outputs["cwi_logits"], labels)
        if self.aux_weight > 0:
            terms["loss_aux"] = self.aux_weight * self._ce(outputs["aux_logits"], labels)
        if self.rcl_weight > 0 and hasattr(model.memory, "rcl_inputs"):
            terms["loss_rcl"] = self.rcl_weight * rcl_loss(
                model.cls_head, model.memory.rcl_inputs()
            )
        if self.contrast is not None and model.projection_head is not None:
            emb = model.projection_head(outputs["r"])
            active = progress >= self.contrast_warmup
            small = outputs["r_labels"]
            pred = downsample_labels(outputs["logits"].detach().argmax(1), emb.shape[-2:])
            loss = self.contrast(emb, small, pred)
            terms["loss_contrast"] = (self.contrast_weight if active else 0.0) * loss
            queues = getattr(self.contrast, "queues", None)
            if queues is not None:
                queues.enqueue(emb.detach(), small)
        return terms
