"""Image backbones returning C2..C5 as NCHW: timm `features_only` models, and our own Swin.

Families used by the configs (all build offline with `pretrained=False`):
ResNet-18/50/101 (dilated to output stride 8 or 16 through timm's `output_stride`), ConvNeXt
(dilatable too), Swin T..L (`vidseg.models.swin`: the MCIBI++ authors' Swin, any input size,
per-stage output LayerNorms; timm's names and ImageNet weights; `swin` = custom sizes through
`model_kwargs`), PVTv2 b0..b5 (the stand-in for SegFormer's MiT, which timm lacks), MobileNetV3 and
EfficientNet-Lite0 (dilatable). Transformers (Swin, PVTv2) cannot be dilated: for them the
requested output stride is ignored with a warning and `strides` reports the real 4, 8, 16, 32.
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings

import torch
from torch import nn

from vidseg.errors import VidsegError
from vidseg.models.swin import (
    SwinTransformer,
    is_swin_name,
    load_swin_file,
    load_timm_pretrained,
    swin_kwargs,
)

logger = logging.getLogger(__name__)

OUTPUT_STRIDES = (8, 16, 32)


class PretrainedWeightsError(VidsegError, RuntimeError):
    """`pretrained=true` could not get timm's ImageNet weights (offline, no cached copy)."""


def _check_name(name: str) -> None:
    """Raise ValueError naming `name` and the closest timm names when timm does not know it."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = (
        f"; did you mean {', '.join(repr(c) for c in close)}?"
        if close
        else " (see timm.list_models() for the available names)"
    )
    raise ValueError(f"unknown backbone '{name}': timm has no model of that name{hint}")


def _create(
    name: str, pretrained: bool, output_stride: int, img_size, out_indices, model_kwargs
) -> nn.Module:
    """timm.create_model with the errors turned into messages a user can act on."""
    import timm

    kwargs: dict = dict(model_kwargs or {})
    kwargs.update(features_only=True, pretrained=pretrained)
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    if img_size is not None:
        kwargs["img_size"] = img_size
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as e:
        msg = str(e)
        if "output_stride" in msg:
            warnings.warn(
                f"backbone '{name}' cannot be dilated (timm takes no output_stride for it); "
                f"using its native output stride 32 instead of {output_stride}",
                stacklevel=3,
            )
            kwargs.pop("output_stride")
            return _create_plain(name, kwargs)
        if "img_size" in msg:
            raise ValueError(
                f"backbone '{name}' takes any input size; img_size={img_size} is only for "
                f"fixed-size backbones such as Swin (leave it unset)"
            ) from e
        raise
    except Exception as e:
        if pretrained:
            raise _download_error(name, e) from e
        raise


def _create_plain(name: str, kwargs: dict) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except Exception as e:
        if kwargs.get("pretrained"):
            raise _download_error(name, e) from e
        raise


def _download_error(name: str, e: Exception) -> PretrainedWeightsError:
    # hub errors run to paragraphs: their first line, shortened, is enough to see the cause
    cause = str(e).strip().splitlines()[0][:160] if str(e).strip() else "no detail"
    return PretrainedWeightsError(
        f"backbone '{name}': cannot get timm's pretrained weights ({type(e).__name__}: {cause}); "
        "pretrained=true downloads them (internet, or a filled Hugging Face cache with "
        "HF_HUB_OFFLINE unset): set model.backbone.pretrained=false, or to a local "
        ".pth/.safetensors file"
    )


def _fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (H, W) a patch embedding insists on (Swin), or None when any size works."""
    for m in model.modules():
        if getattr(m, "strict_img_size", False) and getattr(m, "img_size", None) is not None:
            size = m.img_size
            return (
                (int(size[0]), int(size[1]))
                if isinstance(size, (tuple, list))
                else (int(size), int(size))
            )
    return None


def _build_swin(
    name: str, output_stride: int, img_size, out_indices, model_kwargs
) -> SwinTransformer:
    if output_stride != 32:
        warnings.warn(
            f"backbone '{name}' cannot be dilated (a Swin transformer); using its native output "
            f"stride 32 instead of {output_stride}",
            stacklevel=3,
        )
    if img_size is not None:
        warnings.warn(
            f"backbone '{name}': img_size={img_size} is ignored; this Swin takes any input size "
            f"(padded as in the authors' implementation), remove img_size from the config",
            stacklevel=3,
        )
    if out_indices is not None and list(out_indices) != [0, 1, 2, 3]:
        raise ValueError(
            f"backbone '{name}': out_indices={list(out_indices)}; a Swin gives its 4 stages [0, 1, 2, 3]"
        )
    return SwinTransformer(**swin_kwargs(name, model_kwargs))


class Backbone(nn.Module):
    """timm `features_only` model (or our Swin) returning four levels C2..C5, NCHW.

    Args:
        name: timm model name (e.g. "resnet50", "pvt_v2_b2", "efficientnet_lite0"), a timm Swin name
            ("swin_large_patch4_window12_384", optionally with a pretrained tag such as ".ms_in22k")
            or "swin" (sizes from `model_kwargs`, Swin-L by default). Swin names build
            `vidseg.models.swin.SwinTransformer`. Unknown names raise ValueError with the closest names.
        pretrained: False (random init); True (timm's own download, needs internet); or a path to a
            local `.pth`/`.pt`/`.safetensors` file, loaded with key remapping
            (`vidseg.models.weights.load_weights`; fewer than 90% tensors matched is an error). Swin:
            True = timm's ImageNet weights (ImageNet-22k for an untagged Swin-L/B window-12 name, as
            the authors); a file may be in timm's, the original Swin or the authors' sssegmentation
            layout and must fill every tensor but the output norms (`vidseg.models.swin.load_swin_file`).
        output_stride: 8, 16 or 32; CNNs are dilated via timm, transformers stay at 32 (warning).
        img_size: (H, W) or int for fixed-size timm backbones; the input must then have this size.
            Ignored (warning) for Swin, which takes any size.
        out_indices: timm feature indices to return (4 of them); default: the last four levels,
            i.e. nominal strides 4, 8, 16, 32.
        model_kwargs: extra keyword arguments for `timm.create_model`; for Swin, arguments of
            `SwinTransformer` (`embed_dim`, `depths`, `num_heads`, `window_size`, `drop_path_rate`
            (default 0.3, as the authors), `grad_checkpointing`, ...).
    Attributes:
        name: the timm name.
        channels: channels of C2..C5 (4 ints).
        strides: actual strides of C2..C5 after dilation (e.g. [4, 8, 8, 8] for ResNet OS8).
        input_size: the fixed (H, W) input size, or None.
        load_report: `LoadReport` when weights came from a local file, else None.
    Raises:
        PretrainedWeightsError: `pretrained=True` and the weights cannot be downloaded.
    Shapes:
        `(B, 3, H, W) -> [C2 (B, c2, H/s2, W/s2), ..., C5 (B, c5, H/s5, W/s5)]` (sizes rounded up).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool | str | os.PathLike = False,
        output_stride: int = 8,
        img_size: int | tuple[int, int] | list | None = None,
        out_indices: list[int] | None = None,
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        if not is_swin_name(name):
            _check_name(name)
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"backbone '{name}': output_stride={output_stride}, expected one of {OUTPUT_STRIDES}"
            )
        if isinstance(img_size, (list, tuple)):
            img_size = tuple(int(s) for s in img_size)
        if out_indices is not None and len(out_indices) != 4:
            raise ValueError(
                f"backbone '{name}': out_indices={list(out_indices)}, expected 4 indices (C2..C5)"
            )
        if isinstance(pretrained, str) and pretrained.lower() in ("true", "false"):
            pretrained = pretrained.lower() == "true"
        local_file = None if isinstance(pretrained, bool) else os.fspath(pretrained)
        if local_file is not None and not os.path.isfile(local_file):
            raise FileNotFoundError(
                f"backbone '{name}': pretrained weight file not found: {local_file}"
            )

        self.name = name
        self.load_report = None
        if is_swin_name(name):
            self.body = _build_swin(name, output_stride, img_size, out_indices, model_kwargs)
            self.levels = [0, 1, 2, 3]
            self.channels, self.strides = list(self.body.channels), list(self.body.strides)
            self.nhwc, self.input_size = False, None
            if local_file is not None:
                self.load_report = load_swin_file(self.body, local_file)
            elif pretrained is True:
                try:
                    load_timm_pretrained(self.body, name)
                except ValueError:
                    raise
                except Exception as e:
                    raise _download_error(name, e) from e
            return
        self.body = _create(
            name, pretrained is True, output_stride, img_size, out_indices, model_kwargs
        )
        info = self.body.feature_info
        reductions, chans = list(info.reduction()), list(info.channels())
        if len(chans) < 4:
            raise ValueError(
                f"backbone '{name}' gives {len(chans)} feature levels (strides {reductions}); "
                f"expected 4 levels C2..C5 (strides 4, 8, 16, 32)"
            )
        # timm returns every level asked for; the first of five (stride 2, the stem) is not used
        self.levels = list(range(len(chans) - 4, len(chans)))
        self.channels = [int(chans[i]) for i in self.levels]
        self.strides = [int(reductions[i]) for i in self.levels]
        self.nhwc = str(getattr(self.body, "output_fmt", "NCHW")).upper().endswith("NHWC")
        self.input_size = _fixed_input_size(self.body)
        if local_file is not None:
            from vidseg.models.weights import load_weights

            self.load_report = load_weights(self.body, local_file, what=f"backbone '{name}'")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError for inputs the network cannot take (too small, wrong fixed size)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"backbone '{self.name}': input of shape {tuple(x.shape)}, expected (B, 3, H, W)"
            )
        h, w = x.shape[-2:]
        if self.input_size is not None and (h, w) != self.input_size:
            raise ValueError(
                f"backbone '{self.name}' was built for a fixed input of {self.input_size[0]}x"
                f"{self.input_size[1]} (img_size) but got {h}x{w}: resize/pad the input or "
                f"build it with img_size=({h}, {w})"
            )
        stride = max(self.strides)
        if h < stride or w < stride:
            raise ValueError(
                f"backbone '{self.name}': input {h}x{w} is smaller than the network stride "
                f"{stride}; expected at least {stride}x{stride}"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        feats = self.body(x)
        out = [feats[i] for i in self.levels]
        if self.nhwc:
            out = [f.permute(0, 3, 1, 2).contiguous() for f in out]
        return out
