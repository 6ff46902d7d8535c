"""The per-frame segmentor: backbone -> R -> (C_wi) -> W -> C_dl -> C_bi -> F_T -> H_cls (MCIBI++).

The class exposes its stages as methods so that the video model (`models/video.py`) can run the
backbone once per frame, cache a frame's stage-1 C_bi and feed cached maps of previous frames
into `decode`. With `history=0` the fusion sees `[R, C_bi]` only: exactly image MCIBI++.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vidseg.models.heads import ConvBNReLU, Decoder, resize


@dataclass
class FrameEncoding:
    """What one backbone pass over a frame produces. Shapes for a batch of B frames.

    Attributes:
        feats: backbone levels C2..C5, each `(B, C_l, h_l, w_l)`.
        r: pixel representations R `(B, Z, h, w)` on the C5 grid.
        w_logits: class-weight logits H_pr(R) `(B, K, h, w)`.
        cbi: stage-1 dataset-level context C_bi `(B, Z, h, w)` (None without memory).
    """

    feats: list
    r: torch.Tensor
    w_logits: torch.Tensor | None
    cbi: torch.Tensor | None


class ImageSegmentor(nn.Module):
    """MCIBI / MCIBI++ segmentor for one frame, with extra fusion inputs for history maps.

    Args:
        backbone: a `vidseg.models.backbones.Backbone` (attributes `channels`, `strides`).
        num_classes: K.
        channels: Z, width of R and of every context map.
        context: within-image context module on C5 -> Z channels (PPM/ASPP/GALD), or None.
        fpn: UperNet FPN decoder (`FPNDecoder`) over C2..C4, or None for a 1/8 head.
        memory: `DistributionMemory` (MCIBI++), `VectorMemory` (MCIBI) or None (plain baseline).
        aggregation: `DatasetContext` (eq. 12-13), required when `memory` is given.
        fusion: `Fusion` over `[R, C_bi, *history]` (num_inputs = 2 + history, or 1 + history
            without memory).
        attention_head: HMSA attention head reading R_aug, or None.
        projection_head: pixel-contrast projection head reading R, or None.
        iis_stages: IIS stages used at inference (training always runs one stage).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int,
                 context: nn.Module | None, fpn: nn.Module | None, memory: nn.Module | None,
                 aggregation: nn.Module | None, fusion: nn.Module,
                 attention_head: nn.Module | None = None, projection_head: nn.Module | None = None,
                 iis_stages: int = 2):
        super().__init__()
        if memory is not None and aggregation is None:
            raise ValueError("a memory needs an aggregation module (DatasetContext)")
        self.backbone = backbone
        self.num_classes = num_classes
        self.channels = channels
        self.bottleneck = ConvBNReLU(backbone.channels[-1], channels, 3)
        self.context = context
        self.memory = memory
        self.aggregation = aggregation
        self.pr_head = Decoder(channels, channels, num_classes) if memory is not None else None
        self.fusion = fusion
        # with a within-image context, F_T concatenates the fused map with C_wi
        self.context_fuse = None
        if context is not None and fpn is None:
            self.context_fuse = ConvBNReLU(2 * channels, channels, 3)
        self.fpn = fpn
        self.cls_head = Decoder(channels, channels, num_classes)
        self.aux_head = Decoder(backbone.channels[-2], channels // 2, num_classes, kernel_size=3)
        self.attention_head = attention_head
        self.projection_head = projection_head
        self.iis_stages = iis_stages

    # ------------------------------------------------------------------ stages

    def dataset_context(self, r: torch.Tensor, probs: torch.Tensor, c_dl: torch.Tensor) -> torch.Tensor:
        """C_bi from R `(B, Z, h, w)`, class probabilities `(B, K, h, w)` and C_dl `(K, Z)`."""
        return self.aggregation(r, probs, c_dl)

    def encode(self, x: torch.Tensor, c_dl: torch.Tensor | None) -> FrameEncoding:
        """One backbone pass and the stage-1 dataset-level context. `x`: `(B, 3, H, W)`."""
        feats = self.backbone(x)
        r = self.bottleneck(feats[-1])
        if self.memory is None:
            return FrameEncoding(feats, r, None, None)
        w_logits = self.pr_head(r)
        cbi = self.dataset_context(r, w_logits.softmax(1), c_dl)
        return FrameEncoding(feats, r, w_logits, cbi)

    def within_image_context(self, enc: FrameEncoding) -> torch.Tensor | None:
        """C_wi `(B, Z, h, w)` from C5, or None for FCN."""
        return None if self.context is None else self.context(enc.feats[-1])

    def decode(self, enc: FrameEncoding, c_wi: torch.Tensor | None, cbi: torch.Tensor | None,
               history: list) -> tuple[torch.Tensor, torch.Tensor]:
        """F_T and H_cls.

        Args:
            enc: the frame's encoding.
            c_wi: within-image context or None.
            cbi: this frame's C_bi for this IIS stage (None without memory).
            history: h maps `(B, Z, h, w)`, most recent first (C_bi^{N-1}, ..., C_bi^{N-h}).
        Returns:
            logits `(B, K, h', w')` (1/8 grid, or 1/4 with UperNet) and R_aug `(B, Z, h', w')`.
        """
        inputs = [enc.r] + ([cbi] if cbi is not None else []) + list(history)
        fused = self.fusion(inputs)
        if self.fpn is not None:
            top = fused if c_wi is None else torch.cat([fused, c_wi], 1)
            r_aug = self.fpn(top, enc.feats[:3])
        elif self.context_fuse is not None:
            r_aug = self.context_fuse(torch.cat([fused, c_wi], 1))
        else:
            r_aug = fused
        return self.cls_head(r_aug), r_aug

    def sample_memory(self) -> torch.Tensor | None:
        """C_dl `(K, Z)` from the memory (fixed per-class noise, so deterministic)."""
        return None if self.memory is None else self.memory.sample()

    def predict_frame(self, enc: FrameEncoding, c_wi: torch.Tensor | None, c_dl: torch.Tensor | None,
                      history: list, stages: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `stages` IIS stages on an encoded frame; returns (logits, R_aug) of the last stage.

        Stage s >= 2 re-aggregates with W_s = (softmax(O_{s-1}) + softmax(W)) / 2 (paper eq. 17,
        probabilities at the R grid) and re-runs eq. 13, F_T and H_cls with the cached R, C_wi
        and C_dl; history maps are the stage-1 maps of previous frames.
        """
        logits, r_aug = self.decode(enc, c_wi, enc.cbi, history)
        if self.memory is None:
            return logits, r_aug
        w_probs = enc.w_logits.softmax(1)
        for _ in range(stages - 1):
            o_probs = logits.softmax(1)
            o_probs = resize(o_probs, w_probs.shape[-2:])
            cbi = self.dataset_context(enc.r, (o_probs + w_probs) / 2, c_dl)
            logits, r_aug = self.decode(enc, c_wi, cbi, history)
        return logits, r_aug

    def attention(self, r_aug: torch.Tensor) -> torch.Tensor | None:
        """HMSA attention `(B, 1, h', w')` in [0, 1], or None when HMSA is off."""
        return None if self.attention_head is None else self.attention_head(r_aug)

    @torch.no_grad()
    def memory_stats(self) -> dict:
        """Scalars for the training log: how the class memory evolves."""
        if self.memory is None:
            return {}
        if hasattr(self.memory, "stats"):
            seen = self.memory.seen
            stats = self.memory.stats[seen] if seen.any() else self.memory.stats
            return {"memory_mean": float(stats[:, 0].mean()), "memory_std": float(stats[:, 1].mean()),
                    "memory_classes_seen": int(seen.sum())}
        return {"memory_norm": float(self.memory.sample().norm(dim=1).mean())}
