"""Read the MCIBI / MCIBI++ authors' checkpoints (sssegmentation) into vidseg models.

An sssegmentation checkpoint is `torch.save({'model': state_dict, 'optimizer': ..., ...})` or a
bare state dict. `map_state` renames every tensor to the vidseg module that computes the same
thing in a model built with `model.head.style: sssegmentation` (and permutes the ASPP projection's
input channels, whose concatenation order differs); nothing is guessed: a key without a rule, a
rule without a target or a shape that differs is an error naming that key. Loading never runs
code (`torch.load(weights_only=True)`).

The authors' memory is a `(K, 2)` parameter of (mean, std) per class; its generator noise is not
stored (they re-draw it from seed k at every forward), so the vidseg memory keeps its own
per-class-seeded noise buffer and marks every class as seen.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from vidseg.engine.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)

# Prefixes that only the authors' models have (a vidseg state dict starts with `image_model.`).
AUTHORS_PREFIXES = ("backbone_net.", "memory_module.", "decoder_cls.", "decoder_stage2.")

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_CONV_BN = r"(0\.weight|1\.(?:weight|bias|running_mean|running_var|num_batches_tracked))"

# (authors' pattern, vidseg replacement); the first full match wins. `{p}` = the image model.
_RULES: list[tuple[str, str]] = [
    # ResNet with the 3x3-conv deep stem: their stem.0-6 / stem.7 are timm's conv1.0-6 / bn1
    (r"backbone_net\.stem\.([0-6])\.(.+)", r"{p}backbone.body.conv1.\1.\2"),
    (r"backbone_net\.stem\.7\." + _BN, r"{p}backbone.body.bn1.\1"),
    (r"backbone_net\.(layer[1-4]\..+)", r"{p}backbone.body.\1"),
    (r"bottleneck\." + _CONV_BN, r"{p}bottleneck.\1"),
    # within-image context: ASPP
    (
        r"context_within_image_module\.parallel_branches\.(\d+)\." + _CONV_BN,
        r"{p}context.branches.\1.\2",
    ),
    (r"context_within_image_module\.global_branch\.1\.weight", r"{p}context.image_pool.1.0.weight"),
    (r"context_within_image_module\.global_branch\.2\." + _BN, r"{p}context.image_pool.1.1.\1"),
    # ... or PPM (their bottleneck name is shared by ASPP's projection, told apart below)
    (
        r"context_within_image_module\.branches\.(\d+)\.1\.weight",
        r"{p}context.branches.\1.1.0.weight",
    ),
    (r"context_within_image_module\.branches\.(\d+)\.2\." + _BN, r"{p}context.branches.\1.1.1.\2"),
    (r"context_within_image_module\.bottleneck\." + _CONV_BN, r"{p}context.{ctx_out}.\1"),
    # dataset-level context: memory, eq. 13 attention, fusion (their memory bottleneck)
    (r"memory_module\.memory", r"{p}memory.{memory}"),
    (
        r"memory_module\.self_attention\.(query|key)_project\.([01])\." + _CONV_BN,
        r"{p}aggregation.\1.\2.\3",
    ),
    (r"memory_module\.self_attention\.(value|out)_project\." + _CONV_BN, r"{p}aggregation.\1.\2"),
    (r"memory_module\.bottleneck\." + _CONV_BN, r"{p}fusion.fuse.\1"),
    # MCIBI (v1): R attends to C_wi, then a 3x3 conv fuses [that, F_T]
    (
        r"memory_module\.self_attention_ms\.(query|key)_project\.([01])\." + _CONV_BN,
        r"{p}context_attention.\1.\2.\3",
    ),
    (
        r"memory_module\.self_attention_ms\.(value|out)_project\." + _CONV_BN,
        r"{p}context_attention.\1.\2",
    ),
    (r"memory_module\.bottleneck_ms\." + _CONV_BN, r"{p}context_fuse.\1"),
    (r"decoder_stage1\.([0-4])\.(.+)", r"{p}pr_head.{stage_\1}.\2"),
    (r"decoder_stage2\.([0-4])\.(.+)", r"{p}cls_head.{stage_\1}.\2"),
    # attention from C_wi to the fused map
    (r"self_attention\.(query|key)_project\.([01])\." + _CONV_BN, r"{p}cwi_attention.\1.\2.\3"),
    (r"self_attention\.(value|out)_project\." + _CONV_BN, r"{p}cwi_attention.\1.\2"),
    # the authors' UperNet pyramid
    (r"lateral_convs\.(\d+)\." + _CONV_BN, r"{p}fpn.laterals.\1.\2"),
    (r"fpn_convs\.(\d+)\." + _CONV_BN, r"{p}fpn.convs.\1.\2"),
    # decoders: conv1 / bn1 / conv2 -> block.0 / block.1 / classifier
    (r"decoder_(pr|cwi|cls)\.conv1\.weight", r"{p}\1_head.block.0.weight"),
    (r"decoder_(pr|cwi|cls)\.bn1\." + _BN, r"{p}\1_head.block.1.\2"),
    (r"decoder_(pr|cwi|cls)\.conv2\.(weight|bias)", r"{p}\1_head.classifier.\2"),
    (r"auxiliary_decoder\.0\.weight", r"{p}aux_head.block.0.weight"),
    (r"auxiliary_decoder\.1\." + _BN, r"{p}aux_head.block.1.\1"),
    (r"auxiliary_decoder\.4\.(weight|bias)", r"{p}aux_head.classifier.\1"),
]
_COMPILED = [(re.compile(pat), rep) for pat, rep in _RULES]


def is_authors_state(state: dict) -> bool:
    """True when a state dict has the authors' (sssegmentation) key names."""
    return any(isinstance(k, str) and k.startswith(AUTHORS_PREFIXES) for k in state)


def read_authors_checkpoint(path: str | Path) -> dict:
    """The state dict of an sssegmentation checkpoint (`{'model': ...}` or bare), safely loaded.

    Raises:
        CheckpointError: one line: a missing, empty, truncated or foreign file, a pickle that
            would run code (`load_checkpoint`'s checks), or one that holds no authors' state dict.
    """
    path = Path(path)
    obj = load_checkpoint(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if (
        not isinstance(state, dict)
        or not state
        or not all(torch.is_tensor(v) for v in state.values())
    ):
        raise CheckpointError(
            f"{path}: not an sssegmentation checkpoint (expected a state dict or "
            "a dict with 'model': state dict)"
        )
    if not is_authors_state(state):
        raise CheckpointError(
            f"{path}: its keys are not sssegmentation's (first key "
            f"{next(iter(state))!r}; expected e.g. 'backbone_net.*', 'memory_module.*')"
        )
    return state


# MCIBI (v1) decoders are one Sequential: conv 0, BN 1, ReLU 2, Dropout 3, conv 4
_STAGE = {"0": "block.0", "1": "block.1", "4": "classifier"}


def _target(key: str, prefix: str, ctx_out: str, memory: str) -> str | None:
    for pat, rep in _COMPILED:
        m = pat.fullmatch(key)
        if m:
            name = m.expand(
                rep.replace("{p}", prefix).replace("{ctx_out}", ctx_out).replace("{memory}", memory)
            )
            for index, part in _STAGE.items():
                name = name.replace("{stage_" + index + "}", part)
            return None if "{stage_" in name else name
    return None


def _aspp_projection(weight: torch.Tensor, branches: int) -> torch.Tensor:
    """Their ASPP concatenates [branches..., image pool]; ours [image pool, branches...]."""
    width = weight.shape[1] // (branches + 1)
    return torch.cat([weight[:, branches * width :], weight[:, : branches * width]], dim=1)


def _split_swin_backbone(authors: dict, image, prefix: str, source: str) -> tuple[dict, dict]:
    """With a Swin backbone, map its `backbone_net.*` tensors (`map_swin_keys`); returns the
    remaining authors' tensors and the mapped backbone tensors (vidseg names)."""
    from vidseg.models.swin import SwinTransformer

    body = getattr(getattr(image, "backbone", None), "body", None)
    if not isinstance(body, SwinTransformer):
        return authors, {}
    from vidseg.convert.ssseg_swin import map_swin_keys

    head = {k: v for k, v in authors.items() if not k.startswith("backbone_net.")}
    swin = {
        k[len("backbone_net.") :]: v for k, v in authors.items() if k.startswith("backbone_net.")
    }
    try:
        mapped = map_swin_keys(swin, expected=image.backbone.state_dict())
    except ValueError as exc:
        raise CheckpointError(f"{source}: Swin backbone: {exc}") from None
    return head, {f"{prefix}backbone.{k}": v for k, v in mapped.items()}


def map_state(authors: dict, model: torch.nn.Module, source: str = "checkpoint") -> dict:
    """Turn an authors' state dict into a complete state dict for `model` (a `VideoSegmentor`).

    A history fusion (video model, h > 0) receives the image model's fusion weights for
    [R, C_bi] and zeros for the history inputs (`expand_history_fusion`), so it computes the
    image model's output until it is fine-tuned.

    Raises:
        CheckpointError: the first authors' key without a vidseg counterpart, with a different
            shape, or the first vidseg key that the checkpoint does not provide.
    """
    from vidseg.models.context.aspp import ASPP

    own = model.state_dict()
    image = getattr(model, "image_model", model)
    prefix = "image_model." if hasattr(model, "image_model") else ""
    authors, out = _split_swin_backbone(authors, image, prefix, source)
    context = getattr(image, "context", None)
    ctx_out = "project" if isinstance(context, ASPP) else "bottleneck"
    memory = "stats" if hasattr(getattr(image, "memory", None), "stats") else "memory"
    for key, value in authors.items():
        name = _target(key, prefix, ctx_out, memory)
        if name is None or name not in own:
            hint = (
                "no vidseg layer corresponds to it" if name is None else f"the model has no {name}"
            )
            raise CheckpointError(
                f"{source}: authors' key {key!r} does not fit this model ({hint}); "
                "is the config the one the checkpoint was trained with?"
            )
        if name.endswith("context.project.0.weight") and isinstance(context, ASPP):
            value = _aspp_projection(value, len(context.branches))
        if name.endswith(("memory.stats", "memory.memory")):
            value = value.reshape(own[name].shape) if value.numel() == own[name].numel() else value
        if name.endswith("fusion.fuse.0.weight") and value.shape != own[name].shape:
            value = expand_history_fusion(value, own[name].shape, f"{source}: {key}")
        if tuple(value.shape) != tuple(own[name].shape):
            raise CheckpointError(
                f"{source}: authors' key {key!r} has shape {tuple(value.shape)}, "
                f"vidseg {name} has {tuple(own[name].shape)}; the config does not "
                "match the checkpoint (classes, widths or backbone)"
            )
        out[name] = value.to(own[name].dtype)
    # what the authors do not store: the memory's noise (drawn from seed k) and `seen` (their
    # distribution memory starts every class at (0, 1); a vector row is filled when first seen)
    for name, value in own.items():
        if name in out or not name.endswith(("memory.noise", "memory.seen")):
            continue
        if name.endswith("noise"):
            out[name] = value
        elif memory == "memory" and prefix + "memory.memory" in out:
            out[name] = out[prefix + "memory.memory"].abs().sum(1) > 0
        else:
            out[name] = torch.ones_like(value)
    missing = [k for k in own if k not in out]
    if missing:
        raise CheckpointError(
            f"{source}: the checkpoint has no tensor for vidseg {missing[0]!r} "
            f"({len(missing)} missing); the config builds layers the authors' "
            "model does not have"
        )
    return out


def expand_history_fusion(weight: torch.Tensor, shape, source: str = "fusion") -> torch.Tensor:
    """Widen an image model's fusion conv `(Z, n Z, k, k)` to a video model's `(Z, (n + h) Z, k, k)`.

    The history inputs get zero weights, so the widened conv computes exactly what the image
    model's did until training changes them.
    """
    shape = tuple(shape)
    if (
        weight.dim() != 4
        or len(shape) != 4
        or weight.shape[0] != shape[0]
        or tuple(weight.shape[2:]) != shape[2:]
        or weight.shape[1] > shape[1]
    ):
        raise CheckpointError(
            f"{source}: fusion weight {tuple(weight.shape)} cannot be widened to {shape}"
        )
    out = weight.new_zeros(shape)
    out[:, : weight.shape[1]] = weight
    return out


def convert(src: str | Path, dst: str | Path, cfg) -> dict:
    """Convert an sssegmentation checkpoint for the model `cfg` builds; write a vidseg checkpoint.

    Returns the written checkpoint dict (`model`, `config`, `converted_from`).
    """
    from vidseg.config import config_to_dict
    from vidseg.engine.checkpoint import atomic_torch_save
    from vidseg.models.build import build_model

    authors = read_authors_checkpoint(src)
    cfg.model.backbone.pretrained = False
    model = build_model(cfg)
    state = map_state(authors, model, str(src))
    model.load_state_dict(state, strict=True)
    ckpt = {"model": state, "config": config_to_dict(cfg), "converted_from": str(Path(src).name)}
    atomic_torch_save(ckpt, dst)
    log.info("converted %s (%d tensors) -> %s", src, len(authors), dst)
    return ckpt
