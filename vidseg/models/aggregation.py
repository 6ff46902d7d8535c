"""Dataset-level context aggregation A_bi (seed-spec 3.2 eqs 12-13, 3.5) and the fusion F_T.

`DatasetContext` turns the class memory read `C_dl (K, Z)` into a per-pixel dataset-level context:
each pixel first gets the probability-weighted mix of class rows (eq 12, `C~_bi`), then an
attention block recalibrates it with the pixel representations as queries (eq 13, `C_bi`).
`Fusion` combines R, C_bi and the cached C_bi maps of earlier frames (Video-MCIBI++ eq 19); the
history maps' share of its conv can be computed once per frame and reused by every IIS stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.heads import ConvBNReLU

FUSION_KINDS = ("concat", "add", "weighted")


class DatasetContext(nn.Module):
    """Eq 12-13: aggregate the memory per pixel, then attend from R to the aggregated map.

    Query F_R1 and key F_R2 are two stacked 1x1 conv-BN-ReLU into `key_channels`; value F_C is
    one 1x1 conv-BN-ReLU into `key_channels`; output F_O is a 1x1 conv-BN-ReLU back to `channels`.
    The attention is single-head over all `h * w` positions with scale `1 / sqrt(key_channels)`
    (= 1/sqrt(Z/2) for Z = 512), computed by `scaled_dot_product_attention` so the fused /
    memory-efficient kernels avoid materialising the N x N matrix where available.

    Args:
        channels: Z, channels of R and of the memory rows.
        key_channels: width of the query/key/value space (256 in the reference).
        downsample: apply a 3x3 stride-2 conv-BN-ReLU to both inputs before attention and upsample
            the result bilinearly afterwards (seed-spec 3.5 `downsample_before_sa`; 4x fewer tokens).
    """

    def __init__(self, channels: int = 512, key_channels: int = 256, downsample: bool = False):
        super().__init__()
        if channels <= 0 or key_channels <= 0:
            raise ValueError(
                f"DatasetContext: channels and key_channels must be positive, "
                f"got {channels}, {key_channels}"
            )
        self.channels = channels
        self.key_channels = key_channels
        self.downsample = downsample
        if downsample:
            self.down_query = ConvBNReLU(channels, channels, 3, stride=2)
            self.down_context = ConvBNReLU(channels, channels, 3, stride=2)
        self.query = nn.Sequential(
            ConvBNReLU(channels, key_channels), ConvBNReLU(key_channels, key_channels)
        )
        self.key = nn.Sequential(
            ConvBNReLU(channels, key_channels), ConvBNReLU(key_channels, key_channels)
        )
        self.value = ConvBNReLU(channels, key_channels)
        self.out = ConvBNReLU(key_channels, channels)

    @staticmethod
    def aggregate(probs: torch.Tensor, c_dl: torch.Tensor) -> torch.Tensor:
        """Eq 12: `C~_bi = permute(W) @ C_dl` at every pixel.

        Args:
            probs: `(B, K, h, w)` class probabilities W (softmax over K).
            c_dl: `(K, Z)` memory read.
        Returns:
            `(B, Z, h, w)` aggregated dataset-level representation.
        """
        if probs.dim() != 4 or c_dl.dim() != 2 or probs.shape[1] != c_dl.shape[0]:
            raise ValueError(
                f"DatasetContext.aggregate: expected probs (B, K, h, w) and C_dl (K, Z) "
                f"with the same K, got {tuple(probs.shape)} and {tuple(c_dl.shape)}"
            )
        return torch.einsum("bkhw,kz->bzhw", probs, c_dl.to(probs.dtype))

    def attend(self, feats: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Eq 13: single-head attention, queries from `feats`, keys/values from `context`.

        Args:
            feats: `(B, Z, h, w)` pixel representations R.
            context: `(B, Z, h, w)` aggregated map C~_bi.
        Returns:
            `(B, Z, h, w)` recalibrated context C_bi.
        """
        size = feats.shape[-2:]
        if self.downsample:
            feats, context = self.down_query(feats), self.down_context(context)
        b, _, h, w = feats.shape
        q = self.query(feats).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, Ck)
        k = self.key(context).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(context).flatten(2).transpose(1, 2).unsqueeze(1)
        attended = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(self.key_channels))
        attended = attended.squeeze(1).transpose(1, 2).reshape(b, self.key_channels, h, w)
        out = self.out(attended)
        if self.downsample:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, feats: torch.Tensor, probs: torch.Tensor, c_dl: torch.Tensor) -> torch.Tensor:
        """Dataset-level context of one frame.

        Args:
            feats: `(B, Z, h, w)` pixel representations R.
            probs: `(B, K, h, w)` aggregation weights W (probabilities).
            c_dl: `(K, Z)` memory read C_dl (no gradient flows into the memory buffers).
        Returns:
            C_bi `(B, Z, h, w)`.
        """
        if feats.dim() != 4 or feats.shape[1] != self.channels:
            raise ValueError(
                f"DatasetContext: R must be (B, {self.channels}, h, w), got {tuple(feats.shape)}"
            )
        if (
            probs.dim() != 4
            or probs.shape[0] != feats.shape[0]
            or probs.shape[2:] != feats.shape[2:]
        ):
            raise ValueError(
                f"DatasetContext: probs must be (B, K, h, w) matching R {tuple(feats.shape)}, "
                f"got {tuple(probs.shape)}"
            )
        if c_dl.dim() != 2 or c_dl.shape[1] != self.channels:
            raise ValueError(
                f"DatasetContext: C_dl must be (K, {self.channels}), got {tuple(c_dl.shape)}"
            )
        return self.attend(feats, self.aggregate(probs, c_dl))


class Fusion(nn.Module):
    """F_T: fuse `num_inputs` Z-channel maps into one (every kind ends in a 3x3 conv-BN-ReLU).

    - "concat": 3x3 conv-BN-ReLU on the channel concatenation (num_inputs * Z -> Z); the paper's
      image fusion and the suggested video fusion (seed-spec 3.10 item 7).
    - "add": element-wise sum, then 3x3 conv-BN-ReLU (Z -> Z).
    - "weighted": a 1x1 conv on the concatenation predicts one weight map per input, softmax over
      the inputs gives per-pixel convex weights, the weighted sum goes through 3x3 conv-BN-ReLU.

    The video model calls it with inputs `[R, C_bi, C_bi^{N-1}, ..., C_bi^{N-h}]`.

    Args:
        kind: one of "concat", "add", "weighted".
        channels: Z.
        num_inputs: number of maps passed to `forward`.
    """

    def __init__(self, kind: str, channels: int, num_inputs: int):
        super().__init__()
        if kind not in FUSION_KINDS:
            raise ValueError(f"Fusion: kind must be one of {FUSION_KINDS}, got {kind!r}")
        if channels <= 0 or num_inputs < 1:
            raise ValueError(
                f"Fusion: channels must be > 0 and num_inputs >= 1, got {channels}, {num_inputs}"
            )
        self.kind = kind
        self.channels = channels
        self.num_inputs = num_inputs
        if kind == "weighted":
            self.weight_logits = nn.Conv2d(num_inputs * channels, num_inputs, 1)
        in_ch = num_inputs * channels if kind == "concat" else channels
        self.fuse = ConvBNReLU(in_ch, channels, 3)
        self._reuse: dict | None = None  # set only inside `reuse_history`

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, channels={self.channels}, num_inputs={self.num_inputs}"

    @contextmanager
    def reuse_history(self, count: int) -> Iterator[None]:
        """Within the block, the last `count` maps' share of the fusion is computed once and reused.

        IIS stages re-run the fusion with a new C_bi but the same history maps; with the "concat"
        and "add" kinds that share is linear (the history maps' slice of the 3x3 conv, or their
        sum), so each stage only convolves its own `num_inputs - count` maps and adds the cached
        term before BN-ReLU. Equal to the plain forward up to float summation order. A call whose
        last `count` maps are not the very tensors of the cached call recomputes the term. No-op
        for "weighted" (its softmax mixes all inputs) or `count == 0`.

        Args:
            count: number of trailing inputs that are history maps (h).
        """
        if count <= 0 or self.kind == "weighted" or count >= self.num_inputs:
            yield
            return
        self._reuse = {"count": count, "maps": None, "term": None}
        try:
            yield
        finally:
            self._reuse = None

    def history_term(self, history: list[torch.Tensor]) -> torch.Tensor:
        """Pre-BN share of the trailing history maps `(B, Z, h, w)` in the output `(B, Z, h, w)`.

        "concat": the maps convolved with their input-channel slice of the 3x3 conv weight (no
        bias); "add": their sum (the conv runs after the sum).
        """
        if self.kind == "add":
            return torch.stack(history, dim=0).sum(dim=0)
        conv = self.fuse[0]
        weight = conv.weight[:, (self.num_inputs - len(history)) * self.channels :]
        return self._conv(torch.cat(history, dim=1), weight)

    def _conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        # the module's own path with these weights (Winograd on a CPU)
        return self.fuse[0]._conv_forward(x, weight, bias)

    def _cached_history_term(self, history: list[torch.Tensor]) -> torch.Tensor:
        memo = self._reuse
        cached = memo["maps"]
        if cached is None or any(a is not b for a, b in zip(cached, history, strict=True)):
            memo["maps"], memo["term"] = list(history), self.history_term(history)
        return memo["term"]

    def _forward_split(self, maps: list[torch.Tensor], count: int) -> torch.Tensor:
        current, history = maps[:-count], maps[-count:]
        term = self._cached_history_term(history)
        if self.kind == "add":
            summed = torch.stack(current, dim=0).sum(dim=0) + term
            return self.fuse(summed)
        conv = self.fuse[0]  # its bias (BN folded for inference) is added once, here
        pre = self._conv(
            torch.cat(current, dim=1), conv.weight[:, : len(current) * self.channels], conv.bias
        )
        return self.fuse[2](self.fuse[1](pre + term))  # BN (or Identity once folded), ReLU

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Args: maps: `num_inputs` tensors `(B, Z, h, w)`. Returns: `(B, Z, h, w)`."""
        if len(maps) != self.num_inputs:
            raise ValueError(f"Fusion: expected {self.num_inputs} maps, got {len(maps)}")
        ref = maps[0].shape
        for i, t in enumerate(maps):
            if t.dim() != 4 or t.shape[1] != self.channels or t.shape != ref:
                raise ValueError(
                    f"Fusion: map {i} must be (B, {self.channels}, h, w) "
                    f"like map 0 {tuple(ref)}, "
                    f"got {tuple(t.shape)}"
                )
        if self._reuse is not None:
            return self._forward_split(maps, self._reuse["count"])
        if self.kind == "concat":
            return self.fuse(torch.cat(maps, dim=1))
        if self.kind == "add":
            return self.fuse(torch.stack(maps, dim=0).sum(dim=0))
        weights = torch.softmax(self.weight_logits(torch.cat(maps, dim=1)), dim=1)  # (B, n, h, w)
        mixed = (torch.stack(maps, dim=1) * weights.unsqueeze(2)).sum(dim=1)
        return self.fuse(mixed)
