"""Swin Transformer backbone for any input size, computing what the MCIBI++ authors' Swin computes.

The authors' implementation (sssegmentation `SwinTransformer`, mmsegmentation-style) never resizes
and never needs a fixed input size; every size mismatch is handled by zero padding at the bottom and
the right:

- patch embedding: the image (already normalised) is zero-padded to a multiple of the patch size
  (4), then a 4x4 stride-4 convolution and a LayerNorm;
- each block: after `norm1`, the token map is zero-padded to a multiple of the window size; the
  shifted blocks then roll the *padded* map by `-window // 2` and build the shifted-window mask on
  the padded size (three bands per axis: `[0, Hp - ws)`, `[Hp - ws, Hp - ss)`, `[Hp - ss, Hp)`,
  -100 between tokens of different bands). Padded tokens are not masked otherwise: they take part
  in the attention as zero vectors (after qkv they carry the qkv bias). The output is rolled back
  and cropped before the residual; the window is never shrunk for small maps (a 11x11 map is padded
  to 12x12 and still shifted by 6);
- patch merging: an odd map is zero-padded by one row/column (bottom/right) before the 2x2 merge.

Output stride s therefore gives `ceil(H / s) x ceil(W / s)` maps. Each of the four stage outputs
(taken before the next patch merging) goes through its own LayerNorm (`norm0`..`norm3`) and is
returned NCHW, as in the authors' code.

Parameter names follow timm's `SwinTransformer` (`patch_embed.proj`, `layers.{i}.downsample`
at the start of stage i >= 1, `layers.{i}.blocks.{j}.attn.qkv`, `mlp.fc1`, ...), so timm's
ImageNet weights load as they are; the 2x2 merge concatenates in the original Swin order
(x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), which is also timm's. The authors' own
checkpoints use other names and another merge order: see `vidseg.convert.ssseg_swin`.
"""

from __future__ import annotations

import math
import os
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# the architectures timm names: (embed_dim, depths, num_heads, window_size); the authors' MCIBI++
# VSPW model is swin_large_patch4_window12_384
_ARCHS = {
    "swin_tiny_patch4_window7_224": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_small_patch4_window7_224": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_base_patch4_window7_224": (128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
    "swin_base_patch4_window12_384": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_large_patch4_window7_224": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7),
    "swin_large_patch4_window12_384": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}
SWIN_ARCHS: dict[str, dict] = {
    name: dict(zip(("embed_dim", "depths", "num_heads", "window_size"), arch))
    for name, arch in _ARCHS.items()
}
DEFAULT_SWIN = "swin_large_patch4_window12_384"
# `swin` = a Swin whose sizes come from the keyword arguments (defaults: Swin-L, window 12)
SWIN_FAMILY = "swin"
# timm pretrained tag used for an untagged name: the authors start Swin-L from ImageNet-22k
# (`swin_large_patch4_window12_384_22k`), not from timm's default 22k->1k fine-tuned weights
DEFAULT_TAGS = {
    "swin_large_patch4_window12_384": "ms_in22k",
    "swin_base_patch4_window12_384": "ms_in22k",
}
SWIN_KWARGS = (
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "patch_size",
    "mlp_ratio",
    "qkv_bias",
    "drop_path_rate",
    "in_chans",
    "grad_checkpointing",
)


def is_swin_name(name: str) -> bool:
    """True for `swin` and for the timm Swin names above (with or without a `.tag`)."""
    return name == SWIN_FAMILY or name.split(".", 1)[0] in SWIN_ARCHS


def swin_kwargs(name: str, model_kwargs: dict | None) -> dict:
    """Constructor arguments of `SwinTransformer` for `name`, overridden by `model_kwargs`."""
    base = name.split(".", 1)[0]
    kwargs = dict(SWIN_ARCHS[DEFAULT_SWIN if base == SWIN_FAMILY else base])
    extra = dict(model_kwargs or {})
    unknown = sorted(set(extra) - set(SWIN_KWARGS))
    if unknown:
        raise ValueError(
            f"backbone '{name}': unknown Swin argument(s) {unknown}; expected some of {list(SWIN_KWARGS)}"
        )
    kwargs.update(extra)
    return kwargs


def relative_position_index(window: int) -> torch.Tensor:
    """`(N, N)` index into the `(2w-1)^2` bias table, N = w*w: (dy + w - 1) * (2w - 1) + (dx + w - 1)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def shift_mask(
    hp: int, wp: int, window: int, shift: int, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Shifted-window mask `(nW, N, N)` for a padded `hp x wp` map: 0 within a band, -100 across bands."""

    def bands(n: int) -> torch.Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - window).long() + (i >= n - shift).long()

    region = bands(hp)[:, None] * 3 + bands(wp)[None, :]
    region = (
        region.view(hp // window, window, wp // window, window)
        .permute(0, 2, 1, 3)
        .reshape(-1, window * window)
    )
    different = region[:, None, :] != region[:, :, None]
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill_(different, -100.0)


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B * nW, window * window, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _from_windows(x: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin stage width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(window), persistent=False
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            n, n, -1
        )
        return bias.permute(2, 0, 1)  # (heads, N, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`x`: (B * nW, N, C); `mask`: (nW, N, N) or None."""
        bw, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias().to(q.dtype)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
        else:
            # windows of one image share the mask: fold them into the head axis instead of repeating it
            nw = mask.shape[0]
            fold = (bw // nw, nw * heads, n, -1)
            bias = (bias.unsqueeze(0) + mask.to(q.dtype).unsqueeze(1)).reshape(1, nw * heads, n, n)
            out = F.scaled_dot_product_attention(
                q.reshape(fold), k.reshape(fold), v.reshape(fold), attn_mask=bias
            )
            out = out.reshape(bw, heads, n, -1)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP, with the authors' pad-then-shift order."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ):
        super().__init__()
        from timm.layers import DropPath

        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """`x`: (B, H, W, C); `mask`: the stage's shift mask for the padded size (used if shifted)."""
        b, h, w, _ = x.shape
        ws, ss = self.window, self.shift
        y = F.pad(self.norm1(x), (0, 0, 0, (-w) % ws, 0, (-h) % ws))
        hp, wp = y.shape[1:3]
        if ss:
            y = torch.roll(y, shifts=(-ss, -ss), dims=(1, 2))
        y = self.attn(_to_windows(y, ws), mask if ss else None)
        y = _from_windows(y, ws, b, hp, wp)
        if ss:
            y = torch.roll(y, shifts=(ss, ss), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (original Swin / timm order), LayerNorm, linear 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, ceil(H / p), ceil(W / p), C)."""
        p = self.patch
        x = F.pad(x, (0, (-x.shape[3]) % p, 0, (-x.shape[2]) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        downsample: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_paths: list[float],
    ):
        super().__init__()
        self.window = window
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window,
                0 if j % 2 == 0 else window // 2,
                mlp_ratio,
                qkv_bias,
                drop_paths[j],
            )
            for j in range(depth)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        ws = self.window
        mask = None
        if len(self.blocks) > 1:  # one mask per stage, for the padded size every block of it sees
            hp, wp = math.ceil(x.shape[1] / ws) * ws, math.ceil(x.shape[2] / ws) * ws
            mask = shift_mask(hp, wp, ws, ws // 2, device=x.device, dtype=x.dtype)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(blk, x, mask, use_reentrant=False)
            else:
                x = blk(x, mask)
        return x


class SwinTransformer(nn.Module):
    """Swin backbone returning the four stage outputs, each LayerNorm-ed, NCHW (see module doc).

    Args:
        embed_dim: width of stage 1 (stage i has `embed_dim * 2**i` channels).
        depths: blocks per stage (4 ints).
        num_heads: attention heads per stage (4 ints).
        window_size: attention window (7 or 12 for the published models).
        patch_size: patch embedding size and stride (4).
        mlp_ratio: MLP hidden width / stage width.
        qkv_bias: bias in the qkv projection.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks (training only;
            the authors use 0.3).
        in_chans: input channels.
        grad_checkpointing: recompute blocks in the backward pass (less memory in training).
    Random initialisation is the authors' (PyTorch's defaults, relative position bias tables at 0);
    the model is meant to start from ImageNet weights (`load_timm_pretrained`).
    Shapes:
        `(B, in_chans, H, W) -> [(B, C * 2**i, ceil(H / (4 * 2**i)), ceil(W / (4 * 2**i))) for i in 0..3]`.
    """

    def __init__(
        self,
        embed_dim: int = 192,
        depths=(2, 2, 18, 2),
        num_heads=(6, 12, 24, 48),
        window_size: int = 12,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.3,
        in_chans: int = 3,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        depths, num_heads = [int(d) for d in depths], [int(h) for h in num_heads]
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages: depths={depths}, num_heads={num_heads}")
        self.channels = [int(embed_dim * 2**i) for i in range(4)]
        self.strides = [patch_size * 2**i for i in range(4)]
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        rates = torch.linspace(
            0, drop_path_rate, sum(depths), device="cpu"
        ).tolist()  # as the authors
        self.layers = nn.ModuleList()
        for i in range(4):
            first = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    self.channels[i],
                    depths[i],
                    num_heads[i],
                    int(window_size),
                    i > 0,
                    mlp_ratio,
                    qkv_bias,
                    rates[first : first + depths[i]],
                )
            )
        for i, c in enumerate(self.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(c))
        self.set_grad_checkpointing(grad_checkpointing)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = bool(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            outs.append(getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2).contiguous())
        return outs


# ---------------------------------------------------------------------------------------------
# loading weights


def _strip(key: str) -> str:
    """Drop wrapper prefixes, including the authors' segmentor prefix `backbone_net.`."""
    from vidseg.models.weights import WRAPPER_PREFIXES, strip_prefix

    return strip_prefix(key, ("backbone_net.", *WRAPPER_PREFIXES))


def to_timm_layout(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Any Swin weight dict we know -> our (= timm's) key names. Returns (dict, format name).

    Formats: the authors' sssegmentation backbone (`stages.*.attn.w_msa.*`, also inside a full
    segmentor checkpoint under `backbone_net.`), the original Microsoft release (`layers.0.downsample`,
    merge at the end of a stage) and timm's layout (merge at the start of the next stage).
    """
    if any(k.startswith("backbone_net.") for k in sd):
        sd = {k: v for k, v in sd.items() if k.startswith("backbone_net.")}
    sd = {_strip(k): v for k, v in sd.items()}
    if any(".attn.w_msa." in k for k in sd):
        from vidseg.convert.ssseg_swin import map_swin_keys

        return map_swin_keys(sd, prefix=""), "sssegmentation"
    if "layers.0.downsample.reduction.weight" in sd:
        moved = {
            re.sub(
                r"^layers\.(\d+)\.downsample\.",
                lambda m: f"layers.{int(m.group(1)) + 1}.downsample.",
                k,
            ): v
            for k, v in sd.items()
        }
        return moved, "original Swin"
    return sd, "timm"


def load_swin_weights(
    model: SwinTransformer, sd: dict[str, torch.Tensor], source: str
) -> tuple[list[str], str]:
    """Load a Swin weight dict (any layout `to_timm_layout` knows) into `model`.

    Every tensor of the model must be found with its shape, except the per-stage output norms
    `norm0`..`norm3` (ImageNet checkpoints have none; they then keep their initial values, as in
    the authors' code). Classifier, final norm and buffers of the file are ignored.
    Returns (the model keys left at their initial values, the file's layout name).

    Raises:
        ValueError: a model tensor is missing or has another shape (named in the message).
    """
    mapped, fmt = to_timm_layout(sd)
    own = model.state_dict()
    left = []
    for k, v in own.items():
        if k not in mapped:
            if re.match(r"norm[0-3]\.", k):
                left.append(k)
                continue
            raise ValueError(
                f"{source} ({fmt} layout): no tensor for Swin key '{k}' {tuple(v.shape)}; "
                f"the file's first keys: {list(sd)[:3]}"
            )
        if tuple(mapped[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{source} ({fmt} layout): '{k}' has shape {tuple(mapped[k].shape)}, the model "
                f"expects {tuple(v.shape)} (another Swin size or window?)"
            )
    model.load_state_dict({k: mapped[k] for k in own if k in mapped}, strict=False)
    return left, fmt


def load_timm_pretrained(model: SwinTransformer, name: str) -> list[str]:
    """Load timm's ImageNet weights for the Swin `name` (downloads; an untagged Swin-L/B window-12
    name gets ImageNet-22k, `DEFAULT_TAGS`)."""
    import timm

    base, _, tag = name.partition(".")
    if base not in SWIN_ARCHS:
        raise ValueError(
            f"backbone '{name}': pretrained=true needs a timm Swin name ({', '.join(SWIN_ARCHS)}); "
            f"the '{SWIN_FAMILY}' family with custom sizes has no published weights"
        )
    tag = tag or DEFAULT_TAGS.get(base, "")
    src = timm.create_model(f"{base}.{tag}" if tag else base, pretrained=True, num_classes=0)
    return load_swin_weights(model, src.state_dict(), f"timm weights '{base}.{tag}'")[0]


def load_swin_file(model: SwinTransformer, path: str | os.PathLike):
    """Load a local Swin weight file (timm, original Swin or the authors' layout); returns a LoadReport."""
    from vidseg.models.weights import LoadReport, read_state_dict

    sd = read_state_dict(path)
    left, fmt = load_swin_weights(model, sd, os.fspath(path))
    total = len(model.state_dict())
    return LoadReport(
        os.fspath(path), f"swin ({fmt} layout)", total - len(left), total, len(sd), left
    )
