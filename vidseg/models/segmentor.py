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
        w_logits: the logits whose softmax weights the memory read `(B, K, h, w)` (H_pr(R), or
            the C_wi decoder's with `gather="cwi"`); None without memory.
        cbi: stage-1 dataset-level context C_bi `(B, Z, h, w)` (None without memory).
        pr_logits: H_pr(R) `(B, K, h, w)` (the L_W term), None without memory.
        c_wi: within-image context `(B, Z, h, w)` when it was needed before the memory read.
        cwi_logits: the C_wi decoder's logits `(B, K, h, w)` (sssegmentation layout), or None.
    """

    feats: list
    r: torch.Tensor
    w_logits: torch.Tensor | None
    cbi: torch.Tensor | None
    pr_logits: torch.Tensor | None = None
    c_wi: torch.Tensor | None = None
    cwi_logits: torch.Tensor | None = None


class ImageSegmentor(nn.Module):
    """MCIBI / MCIBI++ segmentor for one frame, with extra fusion inputs for history maps.

    Two layouts share every stage (`style`):
    - "vidseg": W = H_pr(R); F_T = fusion([R, C_bi, *history]); with PPM/ASPP/GALD a 3x3 conv
      fuses [F_T, C_wi]; with UperNet the narrow `FPNDecoder` reads [F_T, PPM(C5)]; H_cls.
    - "sssegmentation" (the MCIBI++ authors' layers and order): W = the C_wi decoder's logits
      (`gather="cwi"`) or H_pr(R) (`gather="pr"`); F_T = fusion([R, C_bi, *history]) (their memory
      bottleneck); optionally F_T <- attention(query C_wi, keys F_T); [F_T, C_wi] goes to H_cls
      directly or through the authors' `UperPyramid`. With `context_attention` (the authors'
      MCIBI v1 layout) C_wi is instead attended from R and fused with F_T by a 3x3 conv.

    Args:
        backbone: a `vidseg.models.backbones.Backbone` (attributes `channels`, `strides`).
        num_classes: K.
        channels: Z, width of R and of every context map.
        context: within-image context module on C5 -> Z channels (PPM/ASPP/GALD), or None.
        fpn: `FPNDecoder` (vidseg) or `UperPyramid` (sssegmentation) over C2..C4, or None.
        memory: `DistributionMemory` (MCIBI++), `VectorMemory` (MCIBI) or None (plain baseline).
        aggregation: `DatasetContext` (eq. 12-13), required when `memory` is given.
        fusion: `Fusion` over `[R, C_bi, *history]` (num_inputs = 2 + history, or 1 + history
            without memory).
        attention_head: HMSA attention head reading R_aug, or None.
        projection_head: pixel-contrast projection head reading R, or None.
        iis_stages: IIS stages used at inference (training always runs one stage).
        style: "vidseg" or "sssegmentation" (see above).
        gather: sssegmentation: "cwi" or "pr", the logits that weight the memory read.
        cwi_head: sssegmentation: decoder C_wi -> K logits (None without a context).
        cwi_attention: sssegmentation: a `DatasetContext` whose `attend(C_wi, F_T)` replaces F_T.
        context_attention: sssegmentation, MCIBI v1: a `DatasetContext` whose
            `attend(R, C_wi)` is fused with F_T by a 3x3 conv-BN-ReLU before H_cls.
        cls_head: H_cls; default a 1x1 `Decoder(channels, channels, K)`.
        pr_head: H_pr (memory models only); default a 1x1 `Decoder(channels, channels, K)`.
        aux_channels: hidden width of the auxiliary head on C4 (default channels / 2).
        bottleneck_kernel: kernel of the conv-BN-ReLU C5 -> R (3, the papers'; 1 costs 1/9 as
            much, for light models whose C5 is wide, e.g. MobileNetV3's 576 channels).
        iis_mix: IIS stage >= 2 weights: "probs" (paper eq. 17, (softmax O + softmax W) / 2) or
            "logits" (the authors' code: softmax((2 W + 1.5 O) / 2.5)).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        channels: int,
        context: nn.Module | None,
        fpn: nn.Module | None,
        memory: nn.Module | None,
        aggregation: nn.Module | None,
        fusion: nn.Module,
        attention_head: nn.Module | None = None,
        projection_head: nn.Module | None = None,
        iis_stages: int = 2,
        style: str = "vidseg",
        gather: str = "pr",
        cwi_head: nn.Module | None = None,
        cwi_attention: nn.Module | None = None,
        cls_head: nn.Module | None = None,
        aux_channels: int | None = None,
        iis_mix: str = "probs",
        context_attention: nn.Module | None = None,
        pr_head: nn.Module | None = None,
        bottleneck_kernel: int = 3,
    ):
        super().__init__()
        if memory is not None and aggregation is None:
            raise ValueError("a memory needs an aggregation module (DatasetContext)")
        if style not in ("vidseg", "sssegmentation") or gather not in ("pr", "cwi"):
            raise ValueError(
                f"ImageSegmentor: style={style!r} (vidseg | sssegmentation), "
                f"gather={gather!r} (pr | cwi)"
            )
        if iis_mix not in ("probs", "logits"):
            raise ValueError(f"ImageSegmentor: iis_mix={iis_mix!r}, expected probs or logits")
        if gather == "cwi" and cwi_head is None:
            raise ValueError("ImageSegmentor: gather='cwi' needs a cwi_head (and a context)")
        self.backbone = backbone
        self.num_classes = num_classes
        self.channels = channels
        self.style = style
        self.gather = gather
        self.iis_mix = iis_mix
        self.bottleneck = ConvBNReLU(backbone.channels[-1], channels, bottleneck_kernel)
        self.context = context
        self.memory = memory
        self.aggregation = aggregation
        if pr_head is None and memory is not None:
            pr_head = Decoder(channels, channels, num_classes)
        self.pr_head = pr_head if memory is not None else None
        self.cwi_head = cwi_head
        self.cwi_attention = cwi_attention
        self.fusion = fusion
        # vidseg layout with a within-image context, or the authors' MCIBI v1: a 3x3 conv fuses
        # [F_T, C_wi] (v1: [attention(R, C_wi), F_T])
        self.context_attention = context_attention
        self.context_fuse = None
        if (
            style == "vidseg" and context is not None and fpn is None
        ) or context_attention is not None:
            self.context_fuse = ConvBNReLU(2 * channels, channels, 3)
        self.fpn = fpn
        self.cls_head = (
            cls_head if cls_head is not None else Decoder(channels, channels, num_classes)
        )
        self.aux_head = Decoder(
            backbone.channels[-2], aux_channels or channels // 2, num_classes, kernel_size=3
        )
        self.attention_head = attention_head
        self.projection_head = projection_head
        self.iis_stages = iis_stages

    # ------------------------------------------------------------------ stages

    def dataset_context(
        self, r: torch.Tensor, probs: torch.Tensor, c_dl: torch.Tensor
    ) -> torch.Tensor:
        """C_bi from R `(B, Z, h, w)`, class probabilities `(B, K, h, w)` and C_dl `(K, Z)`."""
        return self.aggregation(r, probs, c_dl)

    def encode(self, x: torch.Tensor, c_dl: torch.Tensor | None) -> FrameEncoding:
        """One backbone pass and the stage-1 dataset-level context. `x`: `(B, 3, H, W)`."""
        feats = self.backbone(x)
        r = self.bottleneck(feats[-1])
        if self.memory is None:
            return FrameEncoding(feats, r, None, None)
        c_wi = cwi_logits = None
        if self.cwi_head is not None:  # the C_wi decoder runs before the memory read
            c_wi = self.context(feats[-1])
            cwi_logits = self.cwi_head(c_wi)
        pr_logits = self.pr_head(r)
        w_logits = cwi_logits if self.gather == "cwi" else pr_logits
        cbi = self.dataset_context(r, w_logits.softmax(1), c_dl)
        return FrameEncoding(feats, r, w_logits, cbi, pr_logits, c_wi, cwi_logits)

    def within_image_context(self, enc: FrameEncoding) -> torch.Tensor | None:
        """C_wi `(B, Z, h, w)` from C5, or None for FCN."""
        if enc.c_wi is not None:
            return enc.c_wi
        return None if self.context is None else self.context(enc.feats[-1])

    def decode(
        self, enc: FrameEncoding, c_wi: torch.Tensor | None, cbi: torch.Tensor | None, history: list
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """F_T and H_cls.

        Args:
            enc: the frame's encoding.
            c_wi: within-image context or None.
            cbi: this frame's C_bi for this IIS stage (None without memory).
            history: h maps `(B, Z, h, w)`, most recent first (C_bi^{N-1}, ..., C_bi^{N-h}).
        Returns:
            logits `(B, K, h', w')` (1/8 grid, or 1/4 with UperNet) and R_aug `(B, C, h', w')`,
            the classifier's input (None at inference with the authors' UperNet and no HMSA,
            where it is never built: `UperPyramid.forward(reduce=...)`).
        """
        inputs = [enc.r] + ([cbi] if cbi is not None else []) + list(history)
        fused = self.fusion(inputs)
        if self.context_attention is not None:
            r_aug = self.context_fuse(
                torch.cat([self.context_attention.attend(enc.r, c_wi), fused], 1)
            )
        elif self.style == "sssegmentation":
            if self.cwi_attention is not None:
                fused = self.cwi_attention.attend(c_wi, fused)
            r_aug = fused if c_wi is None else torch.cat([fused, c_wi], 1)
            if self.fpn is not None and self._reduce_in_fpn():
                # inference: H_cls's first block runs level by level inside the pyramid, so the
                # 2560-channel R_aug is never built (nothing else reads it without HMSA)
                block = self.cls_head.block
                return self.cls_head.after_block(self.fpn(r_aug, enc.feats[:3], block)), None
            if self.fpn is not None:
                r_aug = self.fpn(r_aug, enc.feats[:3])
        elif self.fpn is not None:
            top = fused if c_wi is None else torch.cat([fused, c_wi], 1)
            r_aug = self.fpn(top, enc.feats[:3])
        elif self.context_fuse is not None:
            r_aug = self.context_fuse(torch.cat([fused, c_wi], 1))
        else:
            r_aug = fused
        return self.cls_head(r_aug), r_aug

    def _reduce_in_fpn(self) -> bool:
        """Whether `decode` may fold H_cls's first block into the UperNet pyramid (no R_aug)."""
        from vidseg.models.context.pyramid import UperPyramid

        return (
            isinstance(self.fpn, UperPyramid)
            and self.attention_head is None
            and not torch.is_grad_enabled()
        )

    def sample_memory(self) -> torch.Tensor | None:
        """C_dl `(K, Z)` from the memory (fixed per-class noise, so deterministic)."""
        return None if self.memory is None else self.memory.sample()

    def _iis_weights(self, w_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Aggregation weights of IIS stage s >= 2 from W and the previous stage's O."""
        if self.iis_mix == "logits":
            return ((2.0 * w_logits + 1.5 * resize(logits, w_logits.shape[-2:])) / 2.5).softmax(1)
        return (resize(logits.softmax(1), w_logits.shape[-2:]) + w_logits.softmax(1)) / 2

    def predict_frame(
        self,
        enc: FrameEncoding,
        c_wi: torch.Tensor | None,
        c_dl: torch.Tensor | None,
        history: list,
        stages: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `stages` IIS stages on an encoded frame; returns (logits, R_aug) of the last stage.

        Stage s >= 2 re-aggregates with weights from W and O_{s-1} (`iis_mix`, at the R grid) and
        re-runs eq. 13, F_T and H_cls with the cached R, C_wi and C_dl; history maps are the
        stage-1 maps of previous frames.
        """
        logits, r_aug = self.decode(enc, c_wi, enc.cbi, history)
        if self.memory is None:
            return logits, r_aug
        for _ in range(stages - 1):
            cbi = self.dataset_context(enc.r, self._iis_weights(enc.w_logits, logits), c_dl)
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
            return {
                "memory_mean": float(stats[:, 0].mean()),
                "memory_std": float(stats[:, 1].mean()),
                "memory_classes_seen": int(seen.sum()),
            }
        return {"memory_norm": float(self.memory.sample().norm(dim=1).mean())}
