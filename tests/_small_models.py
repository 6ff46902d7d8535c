"""Config overrides that shrink a model for fast tests (a quarter-width ResNet)."""

from __future__ import annotations

# ResNet stage widths 8..64 instead of 64..512 (any ResNet config; timm's `widths`/`stem_width`)
REDUCED_RESNET = ["model.backbone.widths=[8,16,32,64]", "model.backbone.stem_width=8"]
# ... and Z = 16 with an 8-wide attention
QUARTER_MODEL = [*REDUCED_RESNET, "model.channels=16", "model.key_channels=8"]
# the tiny config made smaller still: the quarter model on 32 px inputs
TINY_32PX = [*QUARTER_MODEL, "data.short_side=32", "data.crop_size=[32,32]"]
