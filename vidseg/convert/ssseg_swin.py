"""The MCIBI++ authors' Swin backbone weights (sssegmentation `SwinTransformer`) -> our Swin.

Their names (without the segmentor's `backbone_net.` prefix) and ours (`vidseg.models.swin`,
timm's names; the Swin module sits at `body.` inside our `Backbone`):

| theirs | ours |
|---|---|
| `patch_embed.projection.*` | `body.patch_embed.proj.*` |
| `patch_embed.norm.*` | `body.patch_embed.norm.*` |
| `stages.i.blocks.j.norm1/norm2.*` | `body.layers.i.blocks.j.norm1/norm2.*` |
| `stages.i.blocks.j.attn.w_msa.qkv/proj.*` | `body.layers.i.blocks.j.attn.qkv/proj.*` (same layout: rows q, k, v, head-major) |
| `stages.i.blocks.j.attn.w_msa.relative_position_bias_table` | `body.layers.i.blocks.j.attn.relative_position_bias_table` (same `((2w-1)^2, heads)` table) |
| `stages.i.blocks.j.attn.w_msa.relative_position_index` | not stored (ours is a computed buffer); checked equal, then dropped |
| `stages.i.blocks.j.ffn.layers.0.0.*` / `ffn.layers.1.*` | `body.layers.i.blocks.j.mlp.fc1.*` / `mlp.fc2.*` |
| `stages.i.downsample.norm.*`, `.reduction.weight` | `body.layers.{i+1}.downsample.*`, 2x2 order changed (below) |
| `norm0`..`norm3` (per-output LayerNorms) | `body.norm0`..`body.norm3` |

Patch merging: their `nn.Unfold(2, stride 2)` puts the 4C merged channels channel-major,
`c * 4 + (2 * dy + dx)`; ours (original Swin, timm) puts them offset-major, `j * C + c` with
`j = 2 * dx + dy` (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]). The merge norm and
reduction weights are permuted accordingly (their own loader applies the inverse permutation to
the original Swin release).
"""

from __future__ import annotations

import re

import torch

from vidseg.models.swin import relative_position_index

# our offset j (2 * dx + dy) -> their unfold offset (2 * dy + dx)
_UNFOLD_OF = [0, 2, 1, 3]

_BLOCK = r"stages\.(\d+)\.blocks\.(\d+)\."
_RULES: list[tuple[str, str]] = [
    (r"patch_embed\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"patch_embed\.norm\.(weight|bias)", r"patch_embed.norm.\1"),
    (_BLOCK + r"(norm1|norm2)\.(weight|bias)", r"layers.\1.blocks.\2.\3.\4"),
    (_BLOCK + r"attn\.w_msa\.(qkv|proj)\.(weight|bias)", r"layers.\1.blocks.\2.attn.\3.\4"),
    (
        _BLOCK + r"attn\.w_msa\.relative_position_bias_table",
        r"layers.\1.blocks.\2.attn.relative_position_bias_table",
    ),
    (_BLOCK + r"ffn\.layers\.0\.0\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc1.\3"),
    (_BLOCK + r"ffn\.layers\.1\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc2.\3"),
    (r"norm([0-3])\.(weight|bias)", r"norm\1.\2"),
]
_INDEX = re.compile(_BLOCK + r"attn\.w_msa\.relative_position_index")
_MERGE = re.compile(r"stages\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)")


def merge_weight_to_ours(w: torch.Tensor, key: str = "reduction.weight") -> torch.Tensor:
    """Their `(out, 4C)` merge reduction (unfold order) -> ours (original Swin order)."""
    if w.dim() != 2 or w.shape[1] % 4:
        raise ValueError(f"'{key}': shape {tuple(w.shape)}, expected (out, 4 * C)")
    out, c4 = w.shape
    return w.reshape(out, c4 // 4, 4)[:, :, _UNFOLD_OF].transpose(1, 2).reshape(out, c4)


def merge_norm_to_ours(v: torch.Tensor, key: str = "norm.weight") -> torch.Tensor:
    """Their `(4C,)` merge LayerNorm weight or bias (unfold order) -> ours."""
    if v.dim() != 1 or v.shape[0] % 4:
        raise ValueError(f"'{key}': shape {tuple(v.shape)}, expected (4 * C,)")
    return v.reshape(-1, 4)[:, _UNFOLD_OF].t().reshape(-1)


def _check_index(key: str, v: torch.Tensor) -> None:
    n = v.shape[0] if v.dim() == 2 else -1
    w = round(n**0.5) if n > 0 else 0
    if v.dim() != 2 or v.shape[1] != n or w * w != n:
        raise ValueError(f"'{key}': shape {tuple(v.shape)}, expected (w*w, w*w) for a window w")
    if not torch.equal(v.long().cpu(), relative_position_index(w)):
        raise ValueError(
            f"'{key}': not the standard relative position index of a {w}x{w} window; "
            "this checkpoint's bias table would be read in another order"
        )


def map_swin_keys(
    authors_backbone_state: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor] | None = None,
    prefix: str = "body.",
) -> dict[str, torch.Tensor]:
    """Rename (and where needed reorder) the authors' Swin backbone tensors to our backbone's keys.

    Args:
        authors_backbone_state: their backbone state dict, keys without `backbone_net.`.
        expected: optionally our backbone's `state_dict()` (keys with `prefix`); then every mapped
            tensor must exist there with the same shape and every expected key must be produced.
        prefix: prepended to our keys ("body." for `vidseg.models.backbones.Backbone`, "" for a bare
            `vidseg.models.swin.SwinTransformer`).
    Returns:
        dict of our key -> tensor (the relative position index buffers are checked and dropped).
    Raises:
        ValueError: naming the first key of theirs that has no counterpart, a tensor whose shape
            is not what we expect, or (with `expected`) the first of our keys left without a tensor.
    """
    out: dict[str, torch.Tensor] = {}
    for key, v in authors_backbone_state.items():
        if _INDEX.fullmatch(key):
            _check_index(key, v)
            continue
        m = _MERGE.fullmatch(key)
        if m:
            new = f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
            v = (
                merge_weight_to_ours(v, key)
                if m.group(2) == "reduction.weight"
                else merge_norm_to_ours(v, key)
            )
        else:
            new = None
            for pattern, repl in _RULES:
                if re.fullmatch(pattern, key):
                    new = re.sub(pattern, repl, key)
                    break
            if new is None:
                raise ValueError(
                    f"Swin key '{key}' {tuple(v.shape)} has no counterpart in our Swin backbone "
                    f"(expected the sssegmentation SwinTransformer names without 'backbone_net.', "
                    f"e.g. 'stages.0.blocks.0.attn.w_msa.qkv.weight')"
                )
        new = prefix + new
        if expected is not None:
            if new not in expected:
                raise ValueError(
                    f"Swin key '{key}' maps to '{new}', which our backbone does not have "
                    f"(more stages or blocks than ours?)"
                )
            if tuple(expected[new].shape) != tuple(v.shape):
                raise ValueError(
                    f"Swin key '{key}' has shape {tuple(v.shape)}, our '{new}' expects "
                    f"{tuple(expected[new].shape)} (another Swin size, window or head count?)"
                )
        out[new] = v
    if expected is not None:
        for k, v in expected.items():
            if k not in out:
                raise ValueError(
                    f"our Swin key '{k}' {tuple(v.shape)} gets no tensor from the authors' state "
                    f"dict ({len(authors_backbone_state)} tensors)"
                )
    return out
