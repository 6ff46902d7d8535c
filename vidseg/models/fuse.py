"""Inference-only rewrites of a built model: BatchNorm folding and the channels-last layout.

`optimize_for_inference(model)` is applied to models built for inference only (`Segmenter`,
`load_inference_model(..., optimize=True)`); training never sees it. Both rewrites keep the
function the model computes; only float rounding changes (measured on the authors' UperNet R50
MCIBI++: ~1e-6 relative, the same argmax).

- BatchNorm folding: an eval-mode `BatchNorm2d` that directly follows a `Conv2d` is an affine map
  per output channel, so it is merged into the convolution's weight and bias (computed in float64)
  and replaced by `nn.Identity`. This saves one full pass over every conv output and the memory
  of a second copy of it. Only places where the conv output provably feeds the BatchNorm alone are
  folded: consecutive children of containers that run their children in order (`nn.Sequential`
  and timm's `features_only` wrappers, unless the conv output is one of the returned features)
  and timm's ResNet blocks (`convN` -> `bnN`). Subclasses of `BatchNorm2d` (e.g. timm's
  `BatchNormAct2d`, which also applies an activation) are left alone.
- Channels-last: conv weights stored NHWC make oneDNN run its native NHWC kernels without
  reordering every activation to and from its blocked layout.
- Winograd (CPU): wide 3x3 stride-1 convolutions run by F(2x2, 3x3), 2.25x fewer products
  (`vidseg/models/winograd.py`); the module keeps its class's parameters and keys.
"""

from __future__ import annotations

import torch
from torch import nn

from vidseg.models.winograd import use_winograd

# weight elements per block of output channels folded at once (float64 temporaries of 8 MB)
FOLD_BLOCK_ELEMENTS = 1 << 20
# containers whose forward calls their children one after the other on one tensor
_SEQUENTIAL_NAMES = ("FeatureDictNet", "FeatureListNet")


def _is_foldable_bn(module: nn.Module) -> bool:
    return (
        type(module) in (nn.BatchNorm2d, nn.SyncBatchNorm)
        and module.track_running_stats
        and module.running_mean is not None
        and module.running_var is not None
    )


def _plain_sequential(module: nn.Module) -> bool:
    """An `nn.Sequential` (or a subclass such as `ConvBNReLU`) with Sequential's own forward."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _runs_in_order(module: nn.Module) -> bool:
    """A container whose forward feeds each child's output to the next child."""
    return _plain_sequential(module) or type(module).__name__ in _SEQUENTIAL_NAMES


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    """`module` itself if it is a Conv2d, else the last child of a Sequential ending in one."""
    if isinstance(module, nn.Conv2d):
        return module
    if _plain_sequential(module) and len(module) > 0:
        return _last_conv(module[-1])
    return None


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> None:
    """Merge an eval-mode BatchNorm into the preceding conv, in place (float64 arithmetic).

    `bn(conv(x)) == conv'(x)` with `W' = W * s`, `b' = (b - mean) * s + beta`,
    `s = gamma / sqrt(var + eps)` per output channel.
    """
    if conv.out_channels != bn.num_features:
        raise ValueError(
            f"fold_conv_bn: conv has {conv.out_channels} output channels, "
            f"BatchNorm {bn.num_features} features"
        )
    old = conv.weight
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double() + bn.bias.double()
    scale = scale.reshape(-1, *([1] * (old.dim() - 1)))
    # a block of output channels at a time: the float64 temporaries stay small (a whole 2560->512
    # 3x3 weight in float64 twice over is ~190 MB, the largest part of a model's loading peak)
    weight = torch.empty_like(old)
    block = max(1, FOLD_BLOCK_ELEMENTS // max(1, old[0].numel()))
    for i in range(0, old.shape[0], block):
        weight[i : i + block] = old[i : i + block].double() * scale[i : i + block]
    bias = shift if conv.bias is None else conv.bias.double() * scale.flatten() + shift
    conv.weight = nn.Parameter(weight, requires_grad=old.requires_grad)
    conv.bias = nn.Parameter(bias.to(old.dtype), requires_grad=old.requires_grad)


def _resnet_block_types() -> tuple[type, ...]:
    try:
        from timm.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # pragma: no cover - timm is a dependency
        return ()
    return (BasicBlock, Bottleneck)


def _fold_children(parent: nn.Module) -> int:
    """Fold the (conv, BN) pairs among `parent`'s direct children; returns how many."""
    folded = 0
    if _runs_in_order(parent):
        returned = set(getattr(parent, "return_layers", {}) or {})
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            bn, conv = parent._modules[second], _last_conv(parent._modules[first])
            if conv is not None and first not in returned and _is_foldable_bn(bn):
                fold_conv_bn(conv, bn)
                parent._modules[second] = nn.Identity()
                folded += 1
    elif isinstance(parent, _resnet_block_types()):
        for i in (1, 2, 3):
            first, bn = getattr(parent, f"conv{i}", None), getattr(parent, f"bn{i}", None)
            conv = None if first is None else _last_conv(first)
            if conv is not None and bn is not None and _is_foldable_bn(bn):
                fold_conv_bn(conv, bn)
                setattr(parent, f"bn{i}", nn.Identity())
                folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a conv into it (in place).

    Returns:
        the number of BatchNorms folded.
    Raises:
        RuntimeError: the model is in training mode (folding would freeze its statistics).
    """
    if model.training:
        raise RuntimeError("fold_batchnorm: the model is in training mode; call .eval() first")
    return sum(_fold_children(m) for m in list(model.modules()))


def optimize_for_inference(
    model: nn.Module,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    winograd: bool | None = None,
) -> nn.Module:
    """Rewrite an eval-mode model for faster inference, in place (see the module docstring).

    Args:
        model: the model, in eval mode and on its device.
        fold_bn: fold BatchNorms into the preceding convolutions.
        channels_last: store 4-D weights channels-last; None = on a CPU model only.
        winograd: run the wide 3x3 convolutions by Winograd F(2x2, 3x3) on the CPU
            (`vidseg/models/winograd.py`); None = on a CPU model only.
    Returns:
        `model`, with `model.inference_optimized = True`.
    """
    if model.training:
        raise RuntimeError(
            "optimize_for_inference: the model is in training mode; call .eval() first"
        )
    if fold_bn:
        fold_batchnorm(model)
    param = next(iter(model.parameters()), None)
    on_cpu = param is not None and param.device.type == "cpu"
    if channels_last is None:
        channels_last = on_cpu
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if winograd if winograd is not None else on_cpu:
        use_winograd(model)
    model.inference_optimized = True
    return model


def compile_modules(model: nn.Module, **compile_kwargs) -> nn.Module:
    """`torch.compile` each direct submodule of the image model that has parameters, in place.

    The backbone, heads and fusion become compiled graphs; the streaming step around them (the
    history buffer, the memory read) stays eager Python, so it compiles without graph breaks.
    On a GPU at batch 1 the step is bound by kernel launches, and fewer, fused launches pay most
    (docs/BENCHMARKS.md, GPU). The first frame of each input size pays the compilation.

    Args:
        model: a `VideoSegmentor` (its `image_model` is compiled) or an image model.
        compile_kwargs: passed to `torch.compile` (e.g. `mode`, `backend`).
    Returns:
        `model`.
    """
    target = getattr(model, "image_model", model)
    for name, child in list(target.named_children()):
        if name != "memory" and any(True for _ in child.parameters()):
            setattr(target, name, torch.compile(child, **compile_kwargs))
    return model
